"""Folders saved by an earlier release load with this package and with plain diffusers, and sample the same images.

`tests/fixtures/saved_059b148/` holds tiny pipelines of every kind (unconditional, class-conditional, text, super-
resolution, a distilled student) as 059b148 saved them, with the images 059b148 sampled from each (`make.py` there
says how they were made). What a published repo holds is what these folders hold: the shipped code files named by
`model_index.json` and the weights.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_hub import DDPMHubPipeline, DDPMHubSuperResolutionPipeline

SAVED = Path(__file__).resolve().parent / "fixtures" / "saved_059b148"
CALLS = json.loads((SAVED / "calls.json").read_text())
KINDS = sorted(CALLS)


def arguments(kind: str) -> dict:
    """The call of `make.py` for `kind`: image i from `Generator().manual_seed(i)`, two images, numpy output."""
    called = dict(CALLS[kind])
    if "low_res_seed" in called:
        called["image"] = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(called.pop("low_res_seed")))
    return {**called, "generator": [torch.Generator().manual_seed(seed) for seed in (0, 1)], "output_type": "np"}


def test_the_fixtures_cover_every_kind_of_model():
    assert set(KINDS) == {"unconditional", "class", "text", "superres", "distilled"}
    for kind in KINDS:
        index = json.loads((SAVED / kind / "model_index.json").read_text())
        module, name = index["_class_name"]  # the shipped pipeline file at the folder's root, as published repos hold
        assert (SAVED / kind / f"{module}.py").is_file() and name.startswith("DDPMHub")


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_saved_by_059b148_loads_and_samples_the_same_images(kind):
    pipeline = DDPMHubPipeline.from_pretrained(SAVED / kind)
    pipeline.set_progress_bar_config(disable=True)
    assert isinstance(pipeline, DDPMHubSuperResolutionPipeline) == (kind == "superres")
    images = pipeline(**arguments(kind)).images
    np.testing.assert_array_equal(images, np.load(SAVED / kind / "expected.npy"))


def test_the_distilled_student_keeps_its_default_calls():
    student = DDPMHubPipeline.from_pretrained(SAVED / "distilled")
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
    for kind, called in calls.items():
        called = dict(called)
        if "low_res_seed" in called:
            seed = called.pop("low_res_seed")
            called["image"] = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
        pipeline = DiffusionPipeline.from_pretrained(f"{saved}/{kind}", trust_remote_code=True)
        pipeline.set_progress_bar_config(disable=True)
        generator = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
        images = pipeline(generator=generator, output_type="np", **called).images
        np.save(f"{out}/{kind}.npy", images)
        print(kind, type(pipeline).__name__)
    """
)


@pytest.mark.slow
def test_plain_diffusers_loads_the_folders_saved_by_059b148_and_samples_the_same_images(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_DIFFUSERS, str(SAVED), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for kind in KINDS:
        np.testing.assert_array_equal(np.load(tmp_path / f"{kind}.npy"), np.load(SAVED / kind / "expected.npy"))
