"""Reliability, part 2: each failure of the second hostile probe (issue 20), reproduced, and what happens now.

1. a streamed label outside the classes is skipped and counted like a bad image, never reaches the embedding;
2. `ddpm-hub sample --output_dir` records what was sampled (the weights' sha256) and checks the folder first;
3. one range for the guidance scale wherever it enters; no non-finite metric is written or published;
4. everything user-supplied in the model card is escaped for Markdown and HTML;
5. the shipped code files published are the installed package's, and a tampered copy is named;
6. a checkpoint records the model's configuration, and resuming with another one names what differs;
7. images of every bit depth take one decoding path; masks follow diffusers' conventions;
8. a model knows the class ids it was trained on;
9. the decoded cache trusts nothing it can check cheaply, and reads a complete cache without write access;
and the tracebacks that became one-line errors, the README's snippets, local paths, and the noise of every run.
"""

import json
import math

import pytest
import torch

from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubPipeline, cli
from ddpm_hub.configs import build_pipeline
from ddpm_hub.errors import UsageError
from ddpm_hub.model_card import render_model_card
from ddpm_hub.run_folder import METRICS_FILE, read_metrics, update_metrics
from ddpm_hub.training.options import parse_options

NON_FINITE_OR_OUT_OF_RANGE = [float("nan"), float("inf"), 1e308, -2.0, 101.0]


def conditional(num_classes: int = 10, null: int | None = 10, **settings) -> DDPMHubPipeline:
    """ddpm-tiny-8 with 11 class embeddings (random, distinct), `num_classes` named classes and the null label 10."""
    base = build_pipeline("ddpm-tiny-8", seed=0, unet_overrides={"num_class_embeds": 11})
    with torch.no_grad():
        base.unet.class_embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    names = {i: f"c{i}" for i in range(num_classes)}
    pipeline = DDPMHubPipeline(base.unet, base.scheduler, id2label=names, null_class_label=null, **settings)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def error_of(capsys) -> str:
    """The one line a command printed to stderr (progress bars aside)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------------------
# 3. Guidance: one range wherever it enters; no non-finite metric written or published


@pytest.mark.parametrize("scale", NON_FINITE_OR_OUT_OF_RANGE)
def test_every_pipeline_refuses_a_guidance_scale_out_of_the_one_range(scale):
    pipeline = conditional()
    image = torch.zeros(1, 3, 8, 8)
    calls = [
        lambda: pipeline(class_labels=1, guidance_scale=scale, num_inference_steps=2),
        lambda: DDPMHubImg2ImgPipeline.from_pipe(pipeline)(image, class_labels=1, guidance_scale=scale),
        lambda: DDPMHubInpaintPipeline.from_pipe(pipeline)(image, image, class_labels=1, guidance_scale=scale),
        lambda: build_pipeline("ddpm-tiny-8")(guidance_scale=scale, num_inference_steps=2),  # unconditional too
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"guidance_scale must be a number in \[0, 100\]"):
            call()
    # the edges of the range are valid
    for valid in (0.0, 100):
        assert pipeline(class_labels=1, guidance_scale=valid, num_inference_steps=1, output_type="np").images.shape


def test_the_command_lines_and_training_refuse_the_same_range_before_any_work(tmp_path, capsys):
    model = tmp_path / "model"
    conditional().save_pretrained(model)
    for scale in ("nan", "inf", "1e308", "-2"):
        output = tmp_path / f"grid-{scale}.png"
        assert cli.main(["sample", str(model), "--guidance_scale", scale, "--output", str(output)]) == 2
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys) and not output.exists()
        assert cli.main(["eval", str(model), "--fid", "--guidance_scale", scale, "--output_dir", str(tmp_path)]) == 2
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys)
    assert not (tmp_path / METRICS_FILE).exists()
    for scale in ("nan", "1e308", "-1", "200"):
        with pytest.raises(SystemExit):
            parse_options(["--validation_guidance_scale", scale])
        assert "guidance_scale must be a number in [0, 100]" in error_of(capsys)
    config = tmp_path / "run.yaml"
    config.write_text("validation_guidance_scale: 1.0e+308\n")
    with pytest.raises(UsageError, match=r"validation_guidance_scale: guidance_scale must be a number in \[0, 100\]"):
        parse_options(["--config", str(config)])


def test_a_non_finite_metric_is_neither_written_nor_published(tmp_path):
    folder = tmp_path / "model"
    build_pipeline("ddpm-tiny-8").save_pretrained(folder)
    update_metrics(folder, {"bpd": {"bits_per_dim": 2.5, "standard_error": 0.1}})
    for bad in ({"fid": {"value": math.nan}}, {"kid": {"value": 0.1, "std": math.inf}}, {"fid": -math.inf}):
        with pytest.raises(UsageError, match="is not a finite number"):
            update_metrics(folder, bad)
    assert json.loads((folder / METRICS_FILE).read_text()) == {"bpd": {"bits_per_dim": 2.5, "standard_error": 0.1}}
    # written by hand (or by an older version): the card refuses it instead of leaving it out silently
    (folder / METRICS_FILE).write_text('{"bpd": {"bits_per_dim": 2.5}, "fid": {"value": NaN}}')
    with pytest.raises(UsageError, match=r"metrics.json: the metric 'fid' is not a finite number \(value = nan\)"):
        read_metrics(folder)
    with pytest.raises(UsageError, match="not a finite number"):
        render_model_card(folder, "alice/model")
