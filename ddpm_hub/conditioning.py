"""The conditioning carrier, the data and training side: what a model is conditioned on, from the dataset to the UNet.

The sampling side of every kind lives in the shipped `conditioning_ddpm_hub.py` (what a pipeline call prepares, the
null branch of guidance, the one UNet call); each class here extends its shipped kind with what only the installed
package does:

- what an example carries from the data (`values`: a column of the decoded dataset, or a field of a streamed row),
  checked against the model before it is built (`check_data`);
- how it is dropped for classifier-free guidance in training (`drop`), from a seeded draw per micro-batch
  (`ddpm_hub.training.randomness`), so that a resumed run drops exactly what an uninterrupted one does;
- what the network is called with for a training batch (`training_batch` -> `ConditionBatch`);
- the pipeline settings it is saved with (`settings`), how sample grids are laid out (`grid`) and what the model
  card says of it (`card_facts`).

A class-conditional model carries class ids; the rules "a model takes the ids of the classes it was trained on" and
"the null label is the last id" are `ClassCondition.num_classes` and `ClassCondition.null_id`, nowhere else.

How a parameter travels: a class id is a column of the decoded dataset (or a field of a streamed row), sliced into
each micro-batch by `ddpm_hub.training.batches`, dropped and turned into a `ConditionBatch` here, and passed
untouched by the objective (`ddpm_hub.losses`) to the UNet through `ConditionBatch.__call__`. Sampling builds the
same `ConditionBatch` from the pipeline call's `class_labels` (`conditioning_ddpm_hub.ClassCondition.prepare`).
"""

from dataclasses import dataclass

import torch

from . import conditioning_ddpm_hub as shipped
from .conditioning_ddpm_hub import ConditionBatch, Guided, guided_output
from .errors import UsageError

__all__ = ["ClassCondition", "ConditionBatch", "Conditioning", "ImageConditions", "Guided", "guided_output"]


@dataclass(frozen=True)
class ImageConditions:
    """
    The condition of each of `num_images` images, as pipeline call arguments (`inputs["class_labels"][i]` is image
    i's), and how a grid of them is laid out (`columns`; None: as square as possible).
    """

    num_images: int
    inputs: dict[str, list]
    columns: int | None = None

    def of(self, indices: list[int]) -> dict[str, list]:
        """The condition arguments of images `indices`."""
        return {name: [values[i] for i in indices] for name, values in self.inputs.items()}


class ClassCondition(shipped.ClassCondition):
    """A class label (see the shipped kind), with its data, dropout, grid and card."""

    data_column = "labels"  # the decoded dataset's column (`DecodedImages.labels`) this kind reads

    dropout_prob: float | None = None  # training: the share of labels replaced by the null label

    def trained(self, label_names: list[str] | None, options, num_labels: int | None = None) -> "ClassCondition":
        """
        The kind a run trains (`options`: the run's `ConditioningOptions`): the dataset's classes (their names, or
        `num_labels` unnamed integer labels: the largest id + 1; neither for a stream without names, which may hold
        every id below the null label), and the null label when labels are dropped (`class_dropout_prob`).
        """
        id2label = dict(enumerate(label_names)) if label_names else None
        num_classes = len(label_names) if label_names else num_labels
        dropout = options.class_dropout_prob
        null = self.null_id(self.num_class_embeds) if dropout else None
        kind = type(self)(self.num_class_embeds, id2label, null, num_classes)
        kind.dropout_prob = dropout
        return kind

    # ----------------------------------------------------------------------------------------------------------------
    # Data

    def column(self, decoded, source: str, pipeline: str) -> torch.Tensor:
        """The class id of every decoded image, checked (`check_labels`)."""
        self.check_labels(decoded.labels, source, pipeline)
        return decoded.labels

    def check_stream(self, stream, source: str, pipeline: str) -> None:
        """
        A streamed dataset: a label column, with no more class names than the model has room for. Its rows are
        checked as they come (`ImageStream.check_label`): a label outside the classes (the names', else the model's
        room below the null label) is skipped and counted like a bad image, never reaching the class embedding.
        """
        names = stream.label_names
        if stream.label_column is None:
            self.check_labels(None, source, pipeline)
        elif names is not None:
            self.check_labels(torch.arange(len(names)), source, pipeline)
        room = self.null_id(self.num_class_embeds)
        stream.num_labels = min(stream.num_labels, room) if stream.num_labels is not None else room

    def check_labels(self, labels: torch.Tensor | None, source: str, pipeline: str) -> None:
        """A class-conditional UNet needs a label per image, every one below its null label."""
        num_class_embeds = self.num_class_embeds
        room = self.null_id(num_class_embeds)
        if labels is None:
            raise UsageError(
                f"{pipeline} is class-conditional (num_class_embeds={num_class_embeds}: {room} classes and the null "
                f"label), but {source} has no labels. Give a dataset with labels (builtin:digits, a folder of class "
                "subfolders, a Hub dataset with a ClassLabel column or --class_column), or train an unconditional "
                "configuration."
            )
        largest = int(labels.max())
        if largest >= room:
            raise UsageError(
                f"{source} has labels up to {largest} ({largest + 1} classes), but {pipeline} has "
                f"num_class_embeds={num_class_embeds}: room for {room} classes and the null label. Set "
                f"num_class_embeds to {largest + 2} in its unet/config.json."
            )

    # ----------------------------------------------------------------------------------------------------------------
    # Training

    def drop(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """
        Classifier-free guidance training (Ho & Salimans 2022): each label becomes the null label with probability
        `dropout_prob`, drawn from `generator` (one draw per micro-batch: a resumed run drops the same labels).
        """
        if not self.dropout_prob or self.null_class_label is None:
            return labels
        dropped = torch.rand(labels.shape, generator=generator) < self.dropout_prob
        return torch.where(dropped, torch.full_like(labels, self.null_class_label), labels)

    def training_batch(self, labels: torch.Tensor, device) -> ConditionBatch:
        return ConditionBatch({"class_labels": labels.to(device, non_blocking=True)})

    # ----------------------------------------------------------------------------------------------------------------
    # What is saved and shown

    def settings(self) -> dict:
        """The pipeline settings saved in model_index.json (diffusers' DiTPipeline keeps id2label there too)."""
        return {
            "id2label": self.id2label or None,
            "null_class_label": self.null_class_label,
            "num_classes": self.num_classes,
        }

    def grid(self, num_images: int) -> ImageConditions:
        """One row per class, `num_images` shared out (at least one per class)."""
        per_class = max(1, -(-num_images // self.num_classes))
        labels = [label for label in range(self.num_classes) for _ in range(per_class)]
        return ImageConditions(len(labels), {"class_labels": labels}, columns=per_class)

    def inputs_of(self, labels: torch.Tensor | None) -> dict:
        """The call argument that conditions on these labels, one per image (None: the null label)."""
        return {"class_labels": labels}

    def cycle(self, indices: list[int]) -> dict:
        """The labels of images `indices` when none are given: class i mod classes (every class in turn)."""
        return {"class_labels": [i % self.num_classes for i in indices]}

    def card_facts(self) -> dict:
        names = [self.id2label[i] for i in sorted(self.id2label)]
        return {
            "num_classes": self.num_classes,
            "names": names,
            "example": names[min(3, len(names) - 1)] if names else None,
            "null_class_label": self.null_class_label,
        }


KINDS = (ClassCondition,)


class Conditioning(shipped.Conditioning):
    """A model's conditioning with the library kinds (data, dropout, grids, card); see the module docstring."""

    @classmethod
    def of(cls, unet_config, settings: dict | None = None, components: dict | None = None, kinds=KINDS):
        return super().of(unet_config, settings, components, kinds)

    @property
    def classes(self) -> ClassCondition | None:
        return self.get("class")

    @property
    def has_null(self) -> bool:
        """Whether classifier-free guidance applies: a guided kind with its null branch."""
        return any(kind.guided and kind.has_null for kind in self.kinds)

    def trained(self, label_names: list[str] | None, options, num_labels: int | None = None) -> "Conditioning":
        """
        The conditioning a run trains, from the dataset (class names, or the number of unnamed integer labels) and
        the run's `ConditioningOptions`.
        """
        return type(self)([kind.trained(label_names, options, num_labels) for kind in self.kinds])

    def columns(self, decoded, source: str, pipeline: str) -> dict[str, torch.Tensor]:
        """What each kind reads of every decoded image (`{"labels": ...}`), checked against the model."""
        return {kind.data_column: kind.column(decoded, source, pipeline) for kind in self.kinds}

    def check_stream(self, stream, source: str, pipeline: str) -> None:
        """A streamed dataset has what each kind reads."""
        for kind in self.kinds:
            kind.check_stream(stream, source, pipeline)

    def settings(self) -> dict:
        """Every kind's pipeline settings (model_index.json entries besides the components)."""
        return {key: value for kind in self.kinds for key, value in kind.settings().items()}

    def training_batch(self, values: dict, generator: torch.Generator, device) -> ConditionBatch:
        """
        A micro-batch's condition for the UNet: each kind's values (`values[kind.data_column]`), dropped for guidance
        with `generator` (one seeded draw per micro-batch), on `device`.
        """
        batch = ConditionBatch()
        for kind in self.kinds:
            dropped = kind.drop(values[kind.data_column], generator)
            batch = batch.merge(kind.training_batch(dropped, device))
        return batch

    def inputs_of(self, columns: dict) -> dict:
        """The call arguments that condition each image on its own values (`columns[kind.data_column]`)."""
        inputs = {}
        for kind in self.kinds:
            inputs.update(kind.inputs_of(columns.get(kind.data_column)))
        return inputs

    def dataset_inputs(self, decoded) -> dict:
        """The call arguments that condition each decoded image on its own condition (the likelihood of a dataset)."""
        return self.inputs_of({kind.data_column: getattr(decoded, kind.data_column) for kind in self.kinds})

    def batch(self, columns: dict, device) -> ConditionBatch:
        """What the UNet is called with for images of these values, none dropped (held-out metrics)."""
        batch = ConditionBatch()
        for kind in self.kinds:
            batch = batch.merge(kind.training_batch(columns[kind.data_column], device))
        return batch

    def default_inputs(self, indices: list[int]) -> dict:
        """The condition arguments of images `indices` when the caller gives none: each kind's cycle."""
        inputs = {}
        for kind in self.kinds:
            inputs.update(kind.cycle(indices))
        return inputs

    def cycle(self, num_images: int) -> ImageConditions:
        """The default condition of images 0 .. num_images - 1 (`default_inputs`), a column per class."""
        columns = self.classes.num_classes if self.classes is not None else None
        return ImageConditions(num_images, self.default_inputs(list(range(num_images))), columns)

    def grid(self, num_images: int) -> ImageConditions:
        """The sample grid of a run: the first guided kind lays it out (a row per class); else plain samples."""
        for kind in self.kinds:
            return kind.grid(num_images)
        return ImageConditions(num_images, {})
