"""Folders and Hub repos saved by an earlier release load with this package and with plain diffusers (by path and by
repo id, from the loopback Hub), and sample the same images.

`tests/fixtures/saved_059b148/` holds tiny pipelines of every kind (unconditional, class-conditional, text, super-
resolution, a distilled student) as 059b148 saved them, with the images 059b148 sampled from each (`make.py` there
says how they were made). What a published repo holds is what these folders hold: the shipped code files named by
`model_index.json` and the weights. The code files, the same for every kind, are stored once in `code/` and put back
into a copy of each folder (`saved_folder`).
"""

import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi

import ddpm_hub
from ddpm_hub import DDPMHubPipeline, DDPMHubSuperResolutionPipeline

SAVED = Path(__file__).resolve().parent / "fixtures" / "saved_059b148"
CALLS = json.loads((SAVED / "calls.json").read_text())
KINDS = sorted(CALLS)


def saved_folder(kind: str, where: Path) -> Path:
    """A copy of the folder 059b148 saved for `kind`, with its code files, under `where`."""
    folder = where / kind
    shutil.copytree(SAVED / kind, folder)
    for name in json.loads((SAVED / kind / "code_files.json").read_text()):
        shutil.copy2(SAVED / "code" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """Every kind's folder as 059b148 saved it, code files included, and `calls.json`."""
    where = tmp_path_factory.mktemp("saved_059b148")
    for kind in KINDS:
        saved_folder(kind, where)
    shutil.copy2(SAVED / "calls.json", where / "calls.json")
    return where


def arguments(kind: str) -> dict:
    """The call of `make.py` for `kind`: image i from `Generator().manual_seed(i)`, two images, numpy output."""
    called = dict(CALLS[kind])
    if "low_res_seed" in called:
        called["image"] = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(called.pop("low_res_seed")))
    return {**called, "generator": [torch.Generator().manual_seed(seed) for seed in (0, 1)], "output_type": "np"}


def test_the_fixtures_cover_every_kind_of_model(saved):
    assert set(KINDS) == {"unconditional", "class", "text", "superres", "distilled"}
    for kind in KINDS:
        index = json.loads((saved / kind / "model_index.json").read_text())
        module, name = index["_class_name"]  # the shipped pipeline file at the folder's root, as published repos hold
        assert (saved / kind / f"{module}.py").is_file() and name.startswith("DDPMHub")


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_saved_by_059b148_loads_and_samples_the_same_images(kind, saved):
    pipeline = DDPMHubPipeline.from_pretrained(saved / kind)
    pipeline.set_progress_bar_config(disable=True)
    assert isinstance(pipeline, DDPMHubSuperResolutionPipeline) == (kind == "superres")
    images = pipeline(**arguments(kind)).images
    np.testing.assert_array_equal(images, np.load(SAVED / kind / "expected.npy"))


def test_the_distilled_student_keeps_its_default_calls(saved):
    student = DDPMHubPipeline.from_pretrained(saved / "distilled")
    assert student.default_num_inference_steps == 1


PLAIN_DIFFUSERS = textwrap.dedent(
    """
    import json, sys
    sys.modules["ddpm_hub"] = None  # this package cannot be imported in this process
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    torch.set_num_threads(1)  # as the test process (conftest): the same kernels
    saved, out = sys.argv[1], sys.argv[2]
    calls = json.load(open(f"{saved}/calls.json"))
    places = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {kind: f"{saved}/{kind}" for kind in calls}
    for kind, called in calls.items():
        called = dict(called)
        if "low_res_seed" in called:
            seed = called.pop("low_res_seed")
            called["image"] = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
        pipeline = DiffusionPipeline.from_pretrained(places[kind], trust_remote_code=True)
        pipeline.set_progress_bar_config(disable=True)
        generator = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
        images = pipeline(generator=generator, output_type="np", **called).images
        np.save(f"{out}/{kind}.npy", images)
        print(kind, type(pipeline).__name__)
    """
)


@pytest.mark.slow
def test_plain_diffusers_loads_the_folders_saved_by_059b148_and_samples_the_same_images(saved, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_DIFFUSERS, str(saved), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for kind in KINDS:
        np.testing.assert_array_equal(np.load(tmp_path / f"{kind}.npy"), np.load(SAVED / kind / "expected.npy"))


# ----------------------------------------------------------------------------------------------------------------
# The same folders as Hub repos (the loopback Hub of conftest.py): what a repo published by 059b148 holds


@pytest.fixture(scope="module")
def saved_repos(saved, hub_server) -> dict[str, str]:
    """Each saved folder uploaded as it is to a repo of its own; the repo id by kind."""
    api, repos = HfApi(token="hf_alice_write"), {}
    for kind in KINDS:
        repo_id = f"alice/saved-059b148-{kind}-{uuid.uuid4().hex[:8]}"
        api.create_repo(repo_id)
        api.upload_folder(folder_path=saved / kind, repo_id=repo_id, ignore_patterns=["expected.npy", "*.json.lock"])
        repos[kind] = repo_id
    return repos


@pytest.mark.slow
def test_repos_published_by_059b148_load_by_id_both_ways_and_sample_the_same_images(saved, saved_repos, tmp_path):
    for kind, repo_id in saved_repos.items():
        pipeline = DDPMHubPipeline.from_pretrained(repo_id, cache_dir=tmp_path / "cache")
        pipeline.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(pipeline(**arguments(kind)).images, np.load(SAVED / kind / "expected.npy"))
    places = json.dumps(saved_repos)
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_DIFFUSERS, str(saved), str(tmp_path), places],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for kind in KINDS:
        np.testing.assert_array_equal(np.load(tmp_path / f"{kind}.npy"), np.load(SAVED / kind / "expected.npy"))


def test_a_folder_saved_by_059b148_is_published_with_this_release_s_code_and_loads_back(saved, hub_server, tmp_path):
    """`ddpm-hub push` of an old folder: its index names the pipeline's file, which is there; what goes up is the code
    of this release (which imports a file the old folder lacks), and the repo samples the same images."""
    from ddpm_hub.hub import publish

    folder = saved_folder("class", tmp_path)
    (folder / "expected.npy").unlink()
    repo_id = f"alice/republished-{uuid.uuid4().hex[:8]}"
    publish(folder, repo_id=repo_id, token="hf_alice_write")
    shipped = {path.name for path in (Path(ddpm_hub.__file__).parent / "shipped").glob("*_ddpm_hub*.py")}
    published = set(HfApi(token="hf_alice_write").list_repo_files(repo_id))
    assert "condition_batch_ddpm_hub.py" in published - set(
        json.loads((SAVED / "class" / "code_files.json").read_text())
    )
    assert {name for name in published if name.endswith(".py") and "/" not in name} <= shipped
    pipeline = DDPMHubPipeline.from_pretrained(repo_id, token="hf_alice_write", cache_dir=tmp_path / "cache")
    pipeline.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(pipeline(**arguments("class")).images, np.load(SAVED / "class" / "expected.npy"))
