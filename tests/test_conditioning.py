"""The conditioning carrier, the one sampling rule, the resolver, and the shape they give the pipelines."""

import inspect
import json
import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from PIL import Image

from ddpm_hub import (
    DDPMHubImg2ImgPipeline,
    DDPMHubInpaintPipeline,
    DDPMHubPipeline,
    cli,
    image_processing_ddpm_hub,
    pipeline_ddpm_hub,
)
from ddpm_hub.errors import UsageError
from ddpm_hub.evaluation.sweep import generate_images
from ddpm_hub.loading.components import code_files
from ddpm_hub.pipelines import Source
from ddpm_hub.pipelines.conditioning import (
    ConditionBatch,
    ImageConditions,
    TrainingClassCondition,
    TrainingConditioning,
)
from ddpm_hub.pipelines.sampling import image_generator, sample_images, with_sampler
from ddpm_hub.pipelines.source import ModelLoadError
from ddpm_hub.shipped import conditioning_ddpm_hub as shipped
from ddpm_hub.shipped import samplers_ddpm_hub
from ddpm_hub.shipped.scheduling_ddpm_hub import DDPMHubScheduler, is_ddpm_family

NAMES = [str(i) for i in range(10)]


def conditional(null: int | None = 10) -> DDPMHubPipeline:
    base = Source.of("ddpm-tiny-8").build(seed=0, unet_overrides={"num_class_embeds": 11})
    with torch.no_grad():
        base.unet.class_embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    pipeline = DDPMHubPipeline(base.unet, base.scheduler, id2label=dict(enumerate(NAMES)), null_class_label=null)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ----------------------------------------------------------------------------------------------------------------
# The carrier


def test_condition_batch_calls_the_unet_with_its_arguments_and_its_channels():
    calls = []

    def model(x, t, **kwargs):
        calls.append((x, t, kwargs))
        return type("Output", (), {"sample": x * 2})()

    x_t = torch.ones(2, 3, 4, 4)
    low_res = torch.full((2, 3, 4, 4), 5.0)
    batch = ConditionBatch({"class_labels": torch.tensor([1, 2])}, concat=low_res)
    output = batch(model, x_t, 7)
    x, t, kwargs = calls[0]
    assert x.shape == (2, 6, 4, 4) and torch.equal(x[:, 3:], low_res) and t == 7  # x_t, then the concatenated
    assert kwargs["class_labels"].tolist() == [1, 2] and torch.equal(output, x * 2)
    both = batch.cat(ConditionBatch({"class_labels": torch.tensor([9, 9])}, concat=low_res * 0))
    assert both.kwargs["class_labels"].tolist() == [1, 2, 9, 9] and len(both) == 4 and both.concat.shape[0] == 4
    assert batch.repeat(3).kwargs["class_labels"].tolist() == [1, 2, 1, 2, 1, 2]  # as tensor.repeat: tiled
    assert batch.select(slice(1, 2)).kwargs["class_labels"].tolist() == [2] and len(ConditionBatch()) == 0
    merged = ConditionBatch({"a": torch.zeros(2)}).merge(ConditionBatch({"b": torch.ones(2)}, concat=low_res))
    assert set(merged.kwargs) == {"a", "b"} and torch.equal(merged.concat, low_res)
    with pytest.raises(ValueError, match="both set the UNet argument"):
        batch.merge(ConditionBatch({"class_labels": torch.tensor([0, 0])}))


@pytest.fixture
def text_pipeline(tmp_path) -> DDPMHubPipeline:
    from helpers import text_config

    pipeline = Source.of(text_config(tmp_path)).build(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


BAD_EMBEDS = [
    (dict(prompt_embeds=torch.full((1, 4, 24), float("nan"))), "prompt_embeds holds NaN or infinite values"),
    (dict(negative_prompt_embeds=torch.full((1, 4, 24), float("inf"))), "negative_prompt_embeds holds NaN or inf"),
    (
        dict(prompt_embeds=torch.rand(1, 4, 23)),
        r"prompt_embeds must have shape \[N x L x 24\] .*of width 24, got shape \(1, 4, 23\)",
    ),
    (
        dict(prompt_embeds=torch.rand(5, 24)),
        r"must have shape \[N x L x 24\] \(images, tokens, .*got shape \(5, 24\); one prompt's states \[L x D\]",
    ),
    (dict(prompt_embeds=torch.ones(1, 4, 24, dtype=torch.long)), "must be a floating-point tensor .*torch.int64"),
    (dict(prompt_embeds=np.ones((1, 4, 24), np.float32)), r"must be a torch tensor .*numpy.ndarray \(pass torch"),
    (
        dict(prompt_embeds=torch.rand(1, 4, 24), prompt_attention_mask=torch.ones(1, 5)),
        r"prompt_attention_mask must be a torch tensor \[N x L\] \(1, 4\) .*got \(1, 5\)",
    ),
    (dict(prompt_embeds=torch.rand(1, 4, 24), prompt_attention_mask=torch.full((1, 4), 2)), "0 .padding. and 1"),
    (dict(prompt_attention_mask=torch.ones(1, 4)), "prompt_attention_mask is the mask of prompt_embeds; pass it with"),
]


@pytest.mark.parametrize("kwargs, message", BAD_EMBEDS, ids=[f"case-{i}" for i in range(len(BAD_EMBEDS))])
def test_prompt_embeds_are_checked_for_shape_dtype_and_finiteness_before_any_unet_call(text_pipeline, kwargs, message):
    # issue 28: NaN prompt_embeds gave NaN images; a wrong width, rank, dtype or a numpy array gave tracebacks, and a
    # 2-D prompt_embeds was reported as "5 rows"
    calls = []
    text_pipeline.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        text_pipeline(num_inference_steps=1, output_type="pt", guidance_scale=2.0, **kwargs)
    assert calls == []
    embeds = torch.rand(2, 4, 24, generator=torch.Generator().manual_seed(0))
    images = text_pipeline(prompt_embeds=embeds, num_inference_steps=1, output_type="pt").images
    assert images.shape == (2, 1, 8, 16) and len(calls) == 1  # well-formed embeds are taken


def test_the_class_rules_live_in_the_class_kind():
    kind = TrainingClassCondition(11)
    assert kind.num_classes == 10 and TrainingClassCondition.null_id(11) == 10 and not kind.has_null
    named = TrainingClassCondition(11, {0: "cat", 1: "dog"}, 10)
    assert named.num_classes == 2 and named.has_null and named.label_ids(["dog", 0]) == [1, 0]
    data = type("Data", (), {"label_names": ["cat", "dog"], "columns": {}})()
    trained = kind.trained(data, type("Options", (), {"class_dropout_prob": 0.1})())
    assert trained.null_class_label == 10 and trained.id2label == {0: "cat", 1: "dog"} and trained.dropout_prob == 0.1
    assert trained.settings() == {"id2label": {0: "cat", 1: "dog"}, "null_class_label": 10, "num_classes": 2}
    no_dropout = kind.trained(
        type("Data", (), {"label_names": None})(), type("Options", (), {"class_dropout_prob": 0})()
    )
    assert no_dropout.null_class_label is None and no_dropout.settings()["id2label"] is None
    grid = named.grid(5)  # one row per class, the images shared out
    assert grid.inputs == {"class_labels": [0, 0, 0, 1, 1, 1]} and grid.columns == 3 and grid.num_images == 6
    assert TrainingConditioning.of({"num_class_embeds": 11}, {"id2label": {"0": "cat"}}).classes.id2label == {0: "cat"}
    assert not TrainingConditioning.of({"num_class_embeds": None})  # unconditional: no kinds


def test_label_dropout_is_a_seeded_draw_per_micro_batch():
    data = type("Data", (), {"label_names": None})()
    kind = TrainingClassCondition(11).trained(data, type("Options", (), {"class_dropout_prob": 0.5})())
    labels = torch.arange(10).repeat(10)
    first = kind.drop(labels, torch.Generator().manual_seed(3))
    again = kind.drop(labels, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and 30 < int((first == 10).sum()) < 70
    assert torch.equal(first[first != 10], labels[first != 10])  # the others untouched
    batch = TrainingConditioning([kind]).training_batch({"labels": labels}, torch.Generator().manual_seed(3), "cpu")
    assert torch.equal(batch.kwargs["class_labels"], first)


def test_the_pipeline_and_the_library_see_the_same_kinds():
    pipeline = conditional()
    assert type(pipeline.conditioning) is TrainingConditioning  # the installed pipeline: the library kinds
    assert isinstance(pipeline.conditioning.classes, shipped.ClassCondition)
    assert pipeline.labels["3"] == 3 and pipeline.get_label_ids(["7"]) == [7]
    guided, batch_size = pipeline.prepare_condition(None, 2.0, class_labels=["3", 4])
    assert batch_size == 2 and guided.condition.kwargs["class_labels"].tolist() == [3, 4]
    assert guided.null.kwargs["class_labels"].tolist() == [10, 10] and guided.scale == 2.0
    unguided, _ = pipeline.prepare_condition(None, 1.0, class_labels=3)
    assert unguided.null is None  # w = 1 makes no null branch


# ----------------------------------------------------------------------------------------------------------------
# One sampling rule


def tiles(grid: Image.Image, size: int, count: int, columns: int) -> list[np.ndarray]:
    """The `count` tiles of a strip / grid of `size` x `size` images with padding 2, scale 1."""
    pixels = np.asarray(grid)
    found = []
    for i in range(count):
        row, column = divmod(i, columns)
        top, left = 2 + row * (size + 2), 2 + column * (size + 2)
        found.append(pixels[top : top + size, left : left + size])
    return found


def test_image_i_is_the_same_in_the_grid_the_export_and_the_eval_sampler(tmp_path, capsys):
    model = tmp_path / "model"
    conditional().save_pretrained(model)
    common = ["sample", str(model), "--num_images", "4", "--steps", "3", "--seed", "5", "--guidance_scale", "2"]
    common += ["--sampler", "ddim"]
    assert cli.main([*common, "--scale", "1", "--output", str(tmp_path / "grid.png"), "--batch_size", "3"]) == 0
    assert cli.main([*common, "--output_dir", str(tmp_path / "files"), "--batch_size", "2"]) == 0
    capsys.readouterr()
    pipeline = with_sampler(DDPMHubPipeline.from_pretrained(model), "ddim")
    evaluated, _ = generate_images(pipeline, 4, steps=3, seed=5, batch_size=1, guidance_scale=2.0)
    grid = tiles(Image.open(tmp_path / "grid.png"), 8, 4, columns=10)  # a column per class: one row of 4
    for i in range(4):
        exported = np.asarray(Image.open(tmp_path / "files" / f"{i:06d}.png"))
        np.testing.assert_array_equal(grid[i], exported)
        np.testing.assert_array_equal(evaluated[i].permute(1, 2, 0).numpy(), exported)
    # image i: its own CPU generator from seed + i, class i mod classes
    direct = pipeline(
        class_labels=[2],
        guidance_scale=2.0,
        num_inference_steps=3,
        generator=[image_generator(5, 2)],
        output_type="pt",
    ).images
    np.testing.assert_array_equal((direct[0] * 255).round().permute(1, 2, 0).to(torch.uint8).numpy(), grid[2])


def test_image_conditions_select_and_the_default_cycle():
    conditions = ImageConditions(4, {"class_labels": [5, 6, 7, 8]})
    assert conditions.of([3, 1]) == {"class_labels": [8, 6]}
    assert conditional().conditioning.cycle(12).inputs == {"class_labels": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]}
    assert Source.of("ddpm-tiny-8").build().conditioning.cycle(3) == ImageConditions(3, {}, None)
    images = sample_images(
        Source.of("ddpm-tiny-8").build(), [4, 1], seed=0, batch_size=1, call_kwargs={"num_inference_steps": 2}
    )
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 8, 8)


def test_swapping_the_sampler_shares_the_components_and_keeps_the_dtype():
    pipeline = conditional().to(torch.bfloat16)
    swapped = with_sampler(pipeline, "dpmsolver++")
    assert swapped.unet is pipeline.unet and swapped.unet.dtype == torch.bfloat16
    assert type(swapped.scheduler) is DPMSolverMultistepScheduler and type(pipeline.scheduler) is DDPMHubScheduler
    assert swapped.config.null_class_label == 10 and swapped.labels == pipeline.labels


# ----------------------------------------------------------------------------------------------------------------
# The pipelines, the DDPM family, the shipped files


def test_task_pipelines_are_ddpm_hub_pipelines_with_the_likelihood():
    base = Source.of("ddpm-tiny-8").build()
    for cls in (DDPMHubInpaintPipeline, DDPMHubImg2ImgPipeline):
        task = cls.from_pipe(base)
        assert isinstance(task, DDPMHubPipeline) and task.unet is base.unet
        images = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        direct = base.likelihood(images, num_steps=3, generator=torch.Generator().manual_seed(1))
        via_task = task.likelihood(images, num_steps=3, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(direct.bits_per_dim, via_task.bits_per_dim)


def test_one_predicate_for_the_ddpm_family_and_its_shipped_copy():
    assert is_ddpm_family(DDPMHubScheduler) and is_ddpm_family(DDPMScheduler()) and is_ddpm_family(DDPMHubScheduler())
    assert not is_ddpm_family(DDIMScheduler) and not is_ddpm_family(DPMSolverMultistepScheduler())
    # the shipped pipeline must stand alone, so it carries a copy: the same code, word for word
    original = inspect.getsource(is_ddpm_family)
    copy = inspect.getsource(pipeline_ddpm_hub.is_ddpm_family)
    assert copy == original
    assert "Copied from ddpm_hub.shipped.scheduling_ddpm_hub.is_ddpm_family" in inspect.getsource(samplers_ddpm_hub)


def test_a_saved_folder_ships_only_its_family_and_what_it_imports(tmp_path):
    names = [path.name for path in code_files(DDPMHubPipeline)]
    assert sorted(names) == [
        "call_arguments_ddpm_hub.py", "condition_batch_ddpm_hub.py", "conditioning_ddpm_hub.py",
        "image_embeds_ddpm_hub.py", "image_processing_ddpm_hub.py", "latents_ddpm_hub.py", "pipeline_ddpm_hub.py",
        "pipeline_ddpm_hub_img2img.py", "pipeline_ddpm_hub_inpaint.py", "pipeline_ddpm_hub_unclip_variation.py",
        "samplers_ddpm_hub.py",
    ]  # fmt: skip
    Source.of("ddpm-tiny-8").build().save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.py")) == sorted(names)
    assert [p.name for p in (tmp_path / "scheduler").glob("*.py")] == ["scheduling_ddpm_hub.py"]
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_hub", "DDPMHubPipeline"]
    assert index["scheduler"] == ["scheduling_ddpm_hub", "DDPMHubScheduler"]


def test_the_shipped_carrier_stays_self_contained():
    from ddpm_hub.shipped import condition_batch_ddpm_hub, image_embeds_ddpm_hub

    for module in (shipped, condition_batch_ddpm_hub, image_embeds_ddpm_hub):  # torch, stdlib, the carrier's files
        source = inspect.getsource(module)
        imports = [line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))]
        allowed = ("torch", "torch.nn.functional", ".condition_batch_ddpm_hub", ".image_embeds_ddpm_hub")
        assert "torch" in imports and all(name in allowed or name in sys.stdlib_module_names for name in imports)
    # the shipped image decoding: numpy and PIL only (training's decoder imports it too)
    source = inspect.getsource(image_processing_ddpm_hub)
    imports = [line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["numpy", "PIL.Image"]


# ----------------------------------------------------------------------------------------------------------------
# One way from a name to a pipeline: Source


def test_one_source_for_configurations_folders_and_errors(tmp_path):
    config = Source.of("ddpm-tiny-8")
    assert config.kind == "config" and not config.trained and config.unet_config["sample_size"] == 8
    assert not config.conditioning()  # unconditional
    conditional().save_pretrained(tmp_path / "trained")
    trained = Source.of(tmp_path / "trained")
    assert trained.kind == "folder" and trained.conditioning().classes.null_class_label == 10
    loaded = trained.load()
    assert type(loaded) is DDPMHubPipeline and loaded.config.null_class_label == 10
    assert torch.equal(loaded.unet.conv_in.weight, conditional().unet.conv_in.weight)  # its weights
    rebuilt = trained.build(seed=5)  # the trained folder's configuration, fresh weights
    assert rebuilt.config.null_class_label == 10 and rebuilt.unet.config.num_class_embeds == 11
    assert not torch.equal(rebuilt.unet.conv_in.weight, loaded.unet.conv_in.weight)
    fresh = config.load(seed=3)  # a configuration loads as it builds: fresh weights from the seed
    assert torch.equal(fresh.unet.conv_in.weight, Source.of("ddpm-tiny-8").build(seed=3).unet.conv_in.weight)
    assert not torch.equal(fresh.unet.conv_in.weight, config.build(seed=4).unet.conv_in.weight)
    overridden = trained.load(scheduler_overrides={"prediction_type": "v_prediction"})
    assert (
        type(overridden.scheduler) is DDPMHubScheduler
        and overridden.scheduler.config.prediction_type == "v_prediction"
    )
    with pytest.raises(FileNotFoundError, match="ddpm-digits-16"):  # the error lists the configurations
        Source.of("no-such-configuration")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        Source.of(tmp_path / "bad")


def test_a_source_refuses_a_super_resolution_model_to_commands_that_draw_from_noise():
    Source.of("ddpm-tiny-8").refuse_super_resolution("ddpm-hub sample")  # draws from noise: accepted
    with pytest.raises(UsageError, match="ddpm-sr-16-to-64 is a super-resolution model .* ddpm-hub sample cannot"):
        Source.of("ddpm-sr-16-to-64").refuse_super_resolution("ddpm-hub sample")


def test_a_hub_name_that_does_not_exist_is_one_message(hub_server, hub_cache):
    with pytest.raises(ModelLoadError, match="cannot load alice/no-such-pipeline: Repository 'alice/no-such"):
        Source.of("alice/no-such-pipeline")


# ----------------------------------------------------------------------------------------------------------------
# A model knows the class ids it was trained on: their number is a saved setting (the second reliability probe)


def test_the_number_of_trained_classes_is_a_saved_setting_read_by_both_loaders(tmp_path):
    from diffusers import DiffusionPipeline

    from ddpm_hub.pipelines.conditioning import TrainingConditioning
    from ddpm_hub.training.options import ConditioningOptions

    base = Source.of("ddpm-tiny-8").build(seed=0, unet_overrides={"num_class_embeds": 11})
    data = type("Data", (), {"label_names": None, "num_labels": 4})()  # four unnamed integer labels
    kind = TrainingConditioning.of(base.unet.config).trained(data, ConditioningOptions(class_dropout_prob=0.1))
    settings = kind.settings()
    assert settings == {"id2label": None, "null_class_label": 10, "num_classes": 4}  # unnamed integer labels 0..3
    base.register_to_config(**settings)
    base.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "model_index.json").read_text())["num_classes"] == 4
    loaded = DDPMHubPipeline.from_pretrained(tmp_path / "model")
    plain = DiffusionPipeline.from_pretrained(tmp_path / "model", trust_remote_code=True)
    for pipeline in (loaded, plain):
        pipeline.set_progress_bar_config(disable=True)
        assert pipeline(class_labels=3, num_inference_steps=1, output_type="np").images.shape == (1, 8, 8, 3)
        with pytest.raises(ValueError, match=r"ids or names of the 4 classes this model was trained on \(ids 0..3\)"):
            pipeline(class_labels=4, num_inference_steps=1)
