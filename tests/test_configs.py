"""The pipeline configurations: parameter counts against the paper and against their own READMEs."""

import json
import re

import pytest
from diffusers import UNet2DModel

from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler
from ddpm_hub.cli import main
from ddpm_hub.loading.configs import PIPELINES_DIR, available_pipelines, count_parameters
from ddpm_hub.pipelines import Source

SHIPPED = [
    "ddpm-digit-pairs-text",
    "ddpm-text-64",
    "ddpm-cifar10-32",
    "ddpm-cifar10-32-cond",
    "ddpm-256",
    "ddpm-digits-16",
    "ddpm-digits-16-cond",
    "ddpm-tiny-8",
    "ddpm-tiny-8x16",
    "ddpm-unclip-digit-pairs-decoder",
    "ddpm-unclip-decoder-64",
]


def test_the_shipped_configurations():
    assert set(SHIPPED) <= set(available_pipelines())


@pytest.mark.parametrize("name", ["ddpm-cifar10-32", "ddpm-digits-16"])
def test_conditional_configurations_add_only_a_class_embedding(name):
    """-cond: the base configuration plus 10 classes and the null label; the same scheduler."""
    base, cond = (UNet2DModel.load_config(PIPELINES_DIR / n / "unet") for n in (name, f"{name}-cond"))
    assert cond["num_class_embeds"] == 11 and base["num_class_embeds"] is None
    assert {k: v for k, v in cond.items() if k != "num_class_embeds"} == {
        k: v for k, v in base.items() if k != "num_class_embeds"
    }
    schedulers = [
        (PIPELINES_DIR / n / "scheduler" / "scheduler_config.json").read_text() for n in (name, f"{name}-cond")
    ]
    assert schedulers[0] == schedulers[1]


@pytest.mark.parametrize("name,paper_millions,tolerance", [("ddpm-cifar10-32", 35.7, 0.1), ("ddpm-256", 114.0, 0.5)])
def test_paper_parameter_counts(name, paper_millions, tolerance):
    unet = UNet2DModel.from_config(UNet2DModel.load_config(PIPELINES_DIR / name / "unet"))
    assert count_parameters(unet) / 1e6 == pytest.approx(paper_millions, abs=tolerance)


@pytest.mark.parametrize("name", SHIPPED)
def test_readme_states_the_real_parameter_count(name):
    readme = (PIPELINES_DIR / name / "README.md").read_text()
    stated = int(re.search(r"Parameters: ([\d,]+)", readme).group(1).replace(",", ""))
    assert stated == count_parameters(Source.of(name).build(seed=None).unet)


def test_cifar10_configuration_is_the_papers():
    config = UNet2DModel.load_config(PIPELINES_DIR / "ddpm-cifar10-32" / "unet")
    assert config["block_out_channels"] == [128, 256, 256, 256] and config["layers_per_block"] == 2
    assert config["down_block_types"][1] == "AttnDownBlock2D"  # attention at 16x16
    assert config["dropout"] == 0.1
    scheduler = DDPMHubScheduler.from_pretrained(PIPELINES_DIR / "ddpm-cifar10-32" / "scheduler")
    assert scheduler.config.variance_type == "fixed_large" and scheduler.config.beta_schedule == "linear"


def test_a_configuration_builds_seeded_with_overrides():
    a, b = Source.of("ddpm-tiny-8").build(seed=3), Source.of("ddpm-tiny-8").build(seed=3)
    assert isinstance(a, DDPMHubPipeline) and isinstance(a.scheduler, DDPMHubScheduler)
    for pa, pb in zip(a.unet.parameters(), b.unet.parameters()):
        assert pa.equal(pb)
    c = Source.of(
        "ddpm-tiny-8").build(unet_overrides={"out_channels": 6}, scheduler_overrides={"variance_type": "learned_range"}
    )
    assert c.unet.config.out_channels == 6 and c.scheduler.config.variance_type == "learned_range"


def test_unknown_configuration_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="ddpm-digits-16"):
        Source.of("ddpm-nope").build()


def test_cli_info_and_sample(tmp_path, capsys):
    assert main(["info", "ddpm-tiny-8"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 45259 and info["resolution"] == 8
    grid = tmp_path / "grid.png"
    assert (
        main(["sample", "ddpm-tiny-8", "--num_images", "4", "--steps", "2", "--output", str(grid), "--scale", "2"])
        == 0
    )
    from PIL import Image

    assert Image.open(grid).size == (2 * (2 * (8 + 2) + 2),) * 2
    assert main(["info", "ddpm-nope"]) == 2
    assert "No pipeline configuration" in capsys.readouterr().err


@pytest.mark.parametrize(
    "key, value", [("in_channels", -1), ("out_channels", 0), ("sample_size", [8]), ("block_out_channels", [])]
)
def test_a_unet_config_value_out_of_range_is_refused_naming_the_file_and_key(tmp_path, capsys, key, value):
    # issue 28: `in_channels: -1` in a configuration's unet/config.json was a traceback from torch
    import shutil

    folder = tmp_path / "config"
    shutil.copytree(PIPELINES_DIR / "ddpm-tiny-8", folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, key: value}))
    grid = tmp_path / "grid.png"
    assert main(["sample", str(folder), "--num_images", "1", "--steps", "2", "--output", str(grid)]) == 2
    error = capsys.readouterr().err
    assert f"{folder / 'unet' / 'config.json'}: {key} must be" in error and repr(value) in error
    assert not grid.exists()
    assert main(["info", str(folder)]) == 2
