"""The conditioning carrier, the data and training side: what a model is conditioned on, from the dataset to the UNet.

The sampling side lives in the shipped `conditioning_ddpm_hub.py` (what a pipeline call prepares, the null branch of
guidance, the one UNet call). The data and training side of each kind is in `ddpm_hub.pipelines.condition_kinds`
(`TrainingClassCondition` extends the shipped `ClassCondition`, and so on: what an example carries from the data,
dropout for guidance, the training batch, the saved settings, grids and the card's words); `TrainingConditioning`
here is a model's kinds together, as training, the sample grids and the model card use them.

A class-conditional model carries class ids; the rules "a model takes the ids of the classes it was trained on" and
"the null label is the last id" are `ClassCondition.num_classes` and `ClassCondition.null_id`, nowhere else.

How a parameter travels: a class id is a column of the decoded dataset (or a field of a streamed row), sliced into
each micro-batch by `ddpm_hub.training.batches`, dropped and turned into a `ConditionBatch` here, and passed
untouched by the objective (`ddpm_hub.losses`) to the UNet through `ConditionBatch.__call__`. Sampling builds the
same `ConditionBatch` from the pipeline call's `class_labels` (`conditioning_ddpm_hub.ClassCondition.prepare`).
"""

import torch

from ..shipped import conditioning_ddpm_hub as shipped
from ..shipped.conditioning_ddpm_hub import ConditionBatch, Guided, guided_output
from .condition_kinds import (
    ImageConditions,
    TrainingClassCondition,
    TrainingLowResCondition,
    TrainingPositionCondition,
    TrainingPromptCondition,
)
from .image_embeds_kind import TrainingImageEmbedsCondition

__all__ = [
    "ConditionBatch",
    "Guided",
    "ImageConditions",
    "TrainingClassCondition",
    "TrainingConditioning",
    "TrainingImageEmbedsCondition",
    "TrainingLowResCondition",
    "TrainingPositionCondition",
    "TrainingPromptCondition",
    "guided_output",
]


KINDS = (
    TrainingLowResCondition,
    TrainingClassCondition,
    TrainingPromptCondition,
    TrainingImageEmbedsCondition,
    TrainingPositionCondition,
)


class TrainingConditioning(shipped.Conditioning):
    """A model's conditioning with the library kinds (data, dropout, grids, card); see the module docstring."""

    @classmethod
    def of(cls, unet_config, settings: dict | None = None, components: dict | None = None, kinds=KINDS):
        return super().of(unet_config, settings, components, kinds)

    @property
    def classes(self) -> TrainingClassCondition | None:
        return self.get("class")

    @property
    def has_null(self) -> bool:
        """Whether classifier-free guidance applies: a guided kind with its null branch."""
        return any(kind.guided and kind.has_null for kind in self.kinds)

    @property
    def prompts(self) -> TrainingPromptCondition | None:
        return self.get("prompt")

    def trained(self, data, options) -> "TrainingConditioning":
        """The conditioning a run trains, from its dataset (class names, captions) and `ConditioningOptions`."""
        return type(self)([kind.trained(data, options) for kind in self.kinds], self.embedded_guidance)

    def columns(self, decoded, source: str, pipeline: str) -> dict:
        """What each kind reads of every decoded image (`{"labels": ...}`), checked against the model."""
        columns = {kind.data_column: kind.column(decoded, source, pipeline) for kind in self.kinds}
        return {name: column for name, column in columns.items() if column is not None}

    @property
    def low_res(self) -> TrainingLowResCondition | None:
        return self.get("low_res")

    @property
    def image_embeds(self) -> TrainingImageEmbedsCondition | None:
        return self.get("image_embeds")

    def check_stream(self, stream, source: str, pipeline: str) -> None:
        """A streamed dataset has what each kind reads."""
        for kind in self.kinds:
            kind.check_stream(stream, source, pipeline)

    def settings(self) -> dict:
        """Every kind's pipeline settings (model_index.json entries besides the components)."""
        settings = {key: value for kind in self.kinds for key, value in kind.settings().items()}
        if self.embedded_guidance is not None:
            settings.update(self.embedded_guidance.settings())
        return settings

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

    def guidance_pair(self, values: dict, condition: ConditionBatch, device) -> tuple[ConditionBatch, ConditionBatch]:
        """
        A micro-batch's condition and its null branch of guidance (a distillation's guided teacher calls both
        together): the guided kinds' null values (`null_values`: the null label, the empty prompt), the others'
        values kept; a prompt's hidden states and the empty prompt's padded to one length (masked out).
        """
        null = ConditionBatch()
        for kind in self.kinds:
            column = values[kind.data_column]
            nulls = kind.null_values(len(column)) if kind.guided else kind.kept(column)
            null = null.merge(kind.training_batch(nulls, device))
        states = "encoder_hidden_states"
        if states in condition.kwargs:
            length = max(condition.kwargs[states].shape[1], null.kwargs[states].shape[1])
            condition, null = (padded_prompts(batch, length) for batch in (condition, null))
        return condition, null

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
            batch = batch.merge(kind.training_batch(kind.kept(columns[kind.data_column]), device))
        return batch

    def default_inputs(self, indices: list[int]) -> dict:
        """The condition arguments of images `indices` when the caller gives none: each kind's cycle."""
        inputs = {}
        for kind in self.kinds:
            inputs.update(kind.cycle(indices))
        return inputs

    def cycle(self, num_images: int) -> ImageConditions:
        """The default condition of images 0 .. num_images - 1 (`default_inputs`), a column per class or prompt."""
        columns = self.classes.num_classes if self.classes is not None else None
        if self.prompts is not None and self.prompts.prompts:
            columns = len(self.prompts.prompts)
        return ImageConditions(num_images, self.default_inputs(list(range(num_images))), columns)

    def grid(self, num_images: int) -> ImageConditions:
        """The sample grid of a run: the first guided kind lays it out (a row per class or prompt); else plain. A
        decoder's grid is variations of held-out images (the empty caption when it reads captions too)."""
        kinds = [self.get("image_embeds")] if self.get("image_embeds") is not None else self.kinds
        return kinds[0].grid(num_images) if kinds else ImageConditions(num_images, {})

    def strip(self) -> ImageConditions | None:
        """The rows of the guidance strip (one per class or prompt, a decoder's per held-out image's embedding), None
        without a kind guidance can use."""
        if self.get("image_embeds") is not None:
            return self.get("image_embeds").strip()
        for kind in self.kinds:
            if kind.guided and kind.has_null:
                return kind.strip()
        return None


def padded_prompts(batch: ConditionBatch, length: int) -> ConditionBatch:
    """`batch` with its encoder states and mask padded to `length` tokens (`pad_tokens`: zeros, masked out)."""
    hidden, mask = shipped.pad_tokens(
        batch.kwargs["encoder_hidden_states"], batch.kwargs["encoder_attention_mask"], length
    )
    kwargs = {**batch.kwargs, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    return ConditionBatch(kwargs, batch.concat, batch.base, batch.residual_scale, batch.coordinates)
