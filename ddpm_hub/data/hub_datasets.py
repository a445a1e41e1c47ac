"""A Hub dataset as a source of `ddpm_hub.data`: which columns hold the images, the labels and the captions.

Shared by the decoded sources (`ddpm_hub.data.sources`) and the streamed ones (`ddpm_hub.data.streaming`): a column
that is missing or of the wrong type is an error that names the dataset's columns.
"""

from ..errors import UsageError


def hub_version(config_name: str | None, revision: str | None) -> str:
    """`", configuration 'x', revision 'v1'"` for messages: what was asked beyond the name and split."""
    parts = [f"configuration {config_name!r}"] * bool(config_name) + [f"revision {revision!r}"] * bool(revision)
    return "".join(f", {part}" for part in parts)


def check_no_hub_version(source: str, config_name: str | None, revision: str | None) -> None:
    """A folder or a built-in dataset (`source`) has no configurations and no revisions to choose."""
    given = [
        f"--{name} {value}"
        for name, value in (("dataset_config_name", config_name), ("dataset_revision", revision))
        if value is not None
    ]
    if given:
        raise UsageError(
            f"{' and '.join(given)}: {source} is not a Hub dataset; a configuration and a revision belong to "
            "datasets.load_dataset sources (a Hub dataset name, or a folder of data files with a README's configs)."
        )  # fmt: skip


def resolve_caption_column(dataset, caption_column: str | None, dataset_name: str) -> str | None:
    """The text column of a dataset when captions are read (`caption_column`); an error naming the columns."""
    if caption_column is None:
        return None
    if caption_column not in dataset.column_names:
        raise UsageError(
            f"--caption_column {caption_column!r} is not a column of dataset {dataset_name!r}: a text-to-image model "
            f"needs captions. Its columns: {dataset.column_names}; give --caption_column one of them."
        )
    return caption_column


def raw_image_rows(dataset, column: str, label_column: str | None, dataset_name: str, caption_column=None):
    """The image column read raw (`{"bytes", "path"}`), to decode one row at a time: a bad row is skipped."""
    import datasets

    try:
        kept = [column] + ([label_column] if label_column else []) + ([caption_column] if caption_column else [])
        return dataset.select_columns(kept).cast_column(column, datasets.Image(decode=False))
    except Exception as exc:
        raise UsageError(
            f"Column {column!r} of dataset {dataset_name!r} has type {dataset.features[column]} and cannot be read "
            f"as images; give image_column=<an Image column>. Columns: {dataset.column_names}."
        ) from exc


def resolve_class_column(dataset, class_column: str | None, dataset_name: str) -> tuple[str | None, list | None]:
    """(the label column, its class names): `class_column`, else the first ClassLabel column, else no labels."""
    import datasets

    if class_column is None:
        found = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.ClassLabel)]
        if not found:
            return None, None
        class_column = found[0]
    if class_column not in dataset.column_names:
        raise UsageError(
            f"--class_column {class_column!r} is not a column of dataset {dataset_name!r}; columns: "
            f"{dataset.column_names}."
        )
    feature = dataset.features[class_column]
    if isinstance(feature, datasets.ClassLabel):
        return class_column, list(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        return class_column, None
    raise UsageError(
        f"--class_column {class_column!r} of dataset {dataset_name!r} has type {feature}; a label column is a "
        "ClassLabel or an integer column."
    )


def resolve_image_column(dataset, image_column: str | None, dataset_name: str) -> str:
    import datasets

    columns = dataset.column_names
    if image_column is not None:
        if image_column not in columns:
            raise UsageError(
                f"image_column {image_column!r} is not a column of dataset {dataset_name!r}; columns: {columns}."
            )
        return image_column
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in ("image", "img"):
        if name in columns:
            return name
    raise UsageError(
        f"Dataset {dataset_name!r} has no Image-typed column and no column named 'image' or 'img'; its columns are "
        f"{columns}. Give image_column=<column>."
    )
