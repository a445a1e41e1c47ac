"""An image folder as a source of `ddpm_hub.data`: its image files, its classes, its captions and its fingerprint.

The imagefolder convention of diffusers and datasets: images anywhere under the folder (sorted by relative path,
hidden files and folders ignored), classes from the first-level subfolders, captions from `metadata.jsonl` files.
`ddpm_hub.data.sources` turns these into a plan.
"""

import hashlib
import json
import os

from ..errors import UsageError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
METADATA_FILE = "metadata.jsonl"  # an image folder's captions: one {"file_name": ..., "text": ...} per line


def metadata_files(root: str) -> list[str]:
    """The `metadata.jsonl` files of a folder and its subfolders, relative to it."""
    return sorted(
        os.path.relpath(os.path.join(folder, METADATA_FILE), root).replace(os.sep, "/")
        for folder, _, files in os.walk(root)
        if METADATA_FILE in files
    )


def folder_captions(root: str, image_paths: list[str], caption_column: str) -> list:
    """
    Each image's captions from the folder's `metadata.jsonl` files (diffusers' imagefolder convention: one JSON
    object per line with `file_name`, relative to that file's folder, and the caption under `caption_column`, a
    string or a list of strings); None for an image no line names (it is skipped when decoded). A folder without any
    metadata.jsonl, a line that is not JSON or lacks the column, or two lines naming one image, is an error that names
    the file and line.
    """
    files = metadata_files(root)
    if not files:
        raise UsageError(
            f"train_data_dir {root!r} has no {METADATA_FILE}: a text-to-image model needs a caption per image, as "
            f'lines such as {{"file_name": "0001.png", "{caption_column}": "a red square"}} in {METADATA_FILE}.'
        )
    captions: dict[str, object] = {}
    named_at: dict[str, str] = {}  # image -> "file line N" of the line that gave its captions
    for relative in files:
        folder = os.path.dirname(relative)
        path = os.path.join(root, relative)
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    name = entry["file_name"]
                except (ValueError, KeyError, TypeError):
                    raise UsageError(
                        f"{path} line {number}: expected a JSON object with file_name, got {line.strip()[:80]!r}."
                    ) from None
                if caption_column not in entry:
                    raise UsageError(
                        f"{path} line {number} has no {caption_column!r}; its keys: "
                        f"{sorted(entry)}. Give --caption_column one of them."
                    )
                image = os.path.normpath(os.path.join(folder, name)).replace(os.sep, "/")
                check_named_once(image, named_at, f"{path} line {number}", caption_column)
                captions[image] = entry[caption_column]
    return [captions.get(path) for path in image_paths]


def check_named_once(image: str, named_at: dict[str, str], where: str, caption_column: str) -> None:
    """An image has one caption line: a second one is an error naming both lines (one would silently win)."""
    if image in named_at:
        raise UsageError(
            f"{named_at[image]} and {where} both name the image {image!r}: give each image one line (several "
            f'captions go in one line as a list, e.g. "{caption_column}": ["a red square", "a square, red"]).'
        )
    named_at[image] = where


def folder_fingerprint(root: str, paths: list[str]) -> str:
    """sha256 of every listed file's relative path, size and modification time: any change makes a new one."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = os.stat(os.path.join(root, path))
        digest.update(json.dumps([path, stat.st_size, stat.st_mtime_ns]).encode())
    return digest.hexdigest()


def folder_classes(image_paths: list[str]) -> list[str] | None:
    """The imagefolder convention: classes are the first-level subfolders (sorted) when every image is in one."""
    if not image_paths or any("/" not in path for path in image_paths):
        return None
    return sorted({path.split("/")[0] for path in image_paths})


def list_folder(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Relative paths (``/``-separated, sorted) of files with an image extension, and the other files as skipped."""
    image_paths, other_paths = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]  # .git, .ipynb_checkpoints
        for name in filenames:
            if name.startswith(".") or name == METADATA_FILE:  # .DS_Store and friends; the captions
                continue
            relative_path = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            extension = os.path.splitext(name)[1].lower()
            (image_paths if extension in IMAGE_EXTENSIONS else other_paths).append(relative_path)
    skipped = [
        (path, f"not an image file extension (accepted: {', '.join(IMAGE_EXTENSIONS)})")
        for path in sorted(other_paths)
    ]
    return sorted(image_paths), skipped
