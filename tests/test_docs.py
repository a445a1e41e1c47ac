"""The documentation runs as written: every Python block of the README and of the docs site, the flag map from
diffusers' `train_unconditional.py` against the training parser, and the command-line reference the site generates.

and the site itself, built with `mkdocs build --strict` (a broken link, anchor or docstring reference fails it).
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ddpm_hub.cli import build_parser
from ddpm_hub.pipelines import Source
from ddpm_hub.training.options import build_parser as build_training_parser

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Sizes only: the documents' step counts, batch sizes and RePaint's jumps, made small enough for a test.
SMALL_SIZES = {
    "num_inference_steps=250": "num_inference_steps=3",
    "num_inference_steps=20": "num_inference_steps=3",
    "num_inference_steps=50": "num_inference_steps=3",
    "batch_size=16": "batch_size=2",
    "batch_size=8": "batch_size=2",
    "jump_length=10": "jump_length=1",
    "jump_n_sample=10": "jump_n_sample=2",
}
# What the snippets produce, by the names they give it: (number of images, size) after the shrinking above.
EXPECTED_IMAGES = {
    "images": (2, (16, 16)),
    "sevens": (2, (16, 16)),
    "completed": (1, (16, 16)),
    "cleaned": (1, (16, 16)),
    "decoded": (2, (64, 64)),  # a latent model's images
}


def python_blocks(document: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.DOTALL)


def shrink(snippet: str) -> str:
    for size, smaller in SMALL_SIZES.items():
        snippet = snippet.replace(size, smaller)
    assert "=250" not in snippet and "=10," not in snippet, "a size the test does not shrink"
    return snippet


@pytest.fixture(scope="module")
def models_where_the_docs_say(tmp_path_factory) -> Path:
    """
    A folder with runs/ddpm-digits-16, runs/ddpm-digits-16-cond, runs/ddpm-latent-digits-64 (untrained, seeded; the
    latent one with its configuration's autoencoder) and docs/inputs.
    """
    where = tmp_path_factory.mktemp("docs")
    Source.of("ddpm-digits-16").build(seed=0).save_pretrained(where / "runs" / "ddpm-digits-16")
    conditional = Source.of("ddpm-digits-16-cond").build(seed=0)
    conditional.register_to_config(id2label={i: str(i) for i in range(10)}, null_class_label=10, num_classes=10)
    conditional.save_pretrained(where / "runs" / "ddpm-digits-16-cond")
    Source.of("ddpm-latent-digits-64").build(seed=0).save_pretrained(where / "runs" / "ddpm-latent-digits-64")
    shutil.copytree(ROOT / "docs" / "inputs", where / "docs" / "inputs")
    return where


def test_the_documents_have_python_blocks_and_the_readme_stays_short():
    with_code = [document.name for document in DOCUMENTS if python_blocks(document)]
    assert {"README.md", "getting-started.md", "control.md", "few-steps.md"} <= set(with_code)
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if python_blocks(d)], ids=lambda d: d.name)
def test_every_python_block_runs_as_written(document, models_where_the_docs_say, monkeypatch):
    monkeypatch.chdir(models_where_the_docs_say)
    for number, snippet in enumerate(python_blocks(document)):
        namespace = {"__name__": f"{document.stem}_snippet_{number}"}
        exec(compile(shrink(snippet), f"{document.name} block {number}", "exec"), namespace)  # each self-contained
        produced = {name: namespace[name] for name in EXPECTED_IMAGES if name in namespace}
        assert produced, f"{document.name} block {number} makes none of {sorted(EXPECTED_IMAGES)}"
        for name, images in produced.items():
            count, size = EXPECTED_IMAGES[name]
            assert len(images) == count and all(isinstance(image, Image.Image) for image in images), name
            assert {image.size for image in images} == {size}, name


def flag_map_rows() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "from-diffusers.md").read_text()
    rows = re.findall(r"^\| (`--.*?) \| (`--.*?) \|", text, flags=re.MULTILINE)
    return [(theirs, ours) for theirs, ours in rows]


def test_the_flag_map_names_only_flags_the_training_parser_has():
    options = {option for action in build_training_parser()._actions for option in action.option_strings}
    rows = flag_map_rows()
    assert len(rows) >= 35
    for theirs, ours in rows:
        for flag in re.findall(r"`(--[a-z0-9_-]+)`", ours):
            assert flag in options, f"docs/from-diffusers.md maps {theirs} to {flag}, which train.py does not take"


def test_the_flag_map_covers_every_flag_it_names_and_the_same_name_does_the_same():
    """Where both scripts spell a flag the same, the map says so (a row `--x` | `--x`)."""
    options = {option for action in build_training_parser()._actions for option in action.option_strings}
    for theirs, ours in flag_map_rows():
        theirs_flags, ours_flags = re.findall(r"`(--[a-z0-9_]+)`", theirs), re.findall(r"`(--[a-z0-9_]+)`", ours)
        for flag in theirs_flags:
            if flag in options:
                assert flag in ours_flags, f"{flag} exists in train.py under the same name; map it to itself"


def test_the_command_line_reference_covers_every_command():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = hook.on_page_markdown("# Command line\n\n<!-- cli-reference -->\n", None, None, None)
    assert "<!-- cli-reference -->" not in page
    commands = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices).choices
    for name in commands:
        assert f"usage: ddpm-hub {name}" in page, name
    assert "usage: train.py" in page and "--resume_from_checkpoint" in page


@pytest.mark.slow
def test_the_documentation_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert (
        "usage: ddpm-hub train" in page
        and "DDPMHubPipeline" in (tmp_path / "site" / "reference" / "index.html").read_text()
    )
