"""Text to image: the prompt kind of the carrier, text encoders through transformers, captions from every source,
builtin:digit-pairs, and training and publishing a text model (tiny configurations built in the test)."""

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY, check, check_ok, run_script, text_config
from PIL import Image

from ddpm_hub import DDPMHubPipeline
from ddpm_hub.data import load_images
from ddpm_hub.data.digit_pairs import captions_of, is_unseen, side_probe, unseen_pairs
from ddpm_hub.loading.text import load_text_encoder, word_tokenizer
from ddpm_hub.pipelines import Source
from ddpm_hub.shipped.conditioning_ddpm_hub import pad_tokens

TEXT = ["--dataset_name", "builtin:digit-pairs", "--resolution", "8x16"]


def tiny_text(tmp_path, encoder: str = "clip") -> DDPMHubPipeline:
    pipeline = Source.of(text_config(tmp_path, encoder)).build(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run(pipeline, seeds=(0, 1), steps: int = 3, **kwargs) -> torch.Tensor:
    generator = [torch.Generator().manual_seed(s) for s in seeds]
    return pipeline(num_inference_steps=steps, generator=generator, output_type="pt", **kwargs).images


# ----------------------------------------------------------------------------------------------------------------
# The prompt kind


def test_padding_never_changes_the_images(tmp_path):
    pipeline = tiny_text(tmp_path)
    kind = pipeline.conditioning.prompts
    hidden, mask = kind.encode(["3 left of seven"] * 2, "cpu")
    longer = pad_tokens(hidden, mask, hidden.shape[1] + 5)  # the same prompt padded to two lengths
    assert longer[0].shape[1] == hidden.shape[1] + 5 and longer[1][:, -5:].sum() == 0
    a = run(pipeline, prompt_embeds=hidden, prompt_attention_mask=mask)
    b = run(pipeline, prompt_embeds=longer[0], prompt_attention_mask=longer[1])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # and the text path pads to the longest prompt of a batch: alone or next to a longer one, the same image
    alone = run(pipeline, seeds=(0,), prompt="3 left of 7")
    beside = run(pipeline, prompt=["3 left of 7", "seven right of three and more"])[:1]
    torch.testing.assert_close(alone, beside, atol=1e-5, rtol=0)


def test_guidance_one_is_the_conditional_model_and_zero_the_empty_prompt(tmp_path):
    pipeline = tiny_text(tmp_path)
    conditional = run(pipeline, prompt="2 left of 4")
    torch.testing.assert_close(run(pipeline, prompt="2 left of 4", guidance_scale=1.0), conditional)
    # w = 0: the empty prompt (encoded beside the prompt, padded to it: equal up to float rounding)
    torch.testing.assert_close(run(pipeline, prompt="2 left of 4", guidance_scale=0.0), run(pipeline, prompt=""))
    calls = []
    hook = pipeline.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    guided = run(pipeline, prompt="2 left of 4", guidance_scale=3.0, steps=2)
    hook.remove()
    assert calls == [4, 4] and not torch.allclose(guided, run(pipeline, prompt="2 left of 4", steps=2))
    # a negative prompt replaces the empty one as the null branch
    negative = run(pipeline, prompt="2 left of 4", negative_prompt="9 left of 9", guidance_scale=0.0)
    torch.testing.assert_close(negative, run(pipeline, prompt="9 left of 9"))


def test_the_unet_sees_each_pixels_coordinates_after_x_t_in_both_halves_of_a_guided_call(tmp_path):
    from ddpm_hub.shipped.conditioning_ddpm_hub import PositionCondition

    pipeline = tiny_text(tmp_path)  # the configuration's coordinate_channels: 2, the UNet's in_channels: 3
    assert pipeline.unet.config.in_channels == 3 and pipeline.image_channels == 1
    assert isinstance(pipeline.conditioning.get("position"), PositionCondition)
    inputs = []
    hook = pipeline.unet.register_forward_hook(lambda module, args, output: inputs.append(args[0]))
    image = run(pipeline, seeds=(0,), prompt="2 left of 4", guidance_scale=3.0, steps=1)
    hook.remove()
    assert image.shape == (1, 1, 8, 16) and inputs[0].shape == (2, 3, 8, 16)  # x_t, y, x; condition and null
    y, x = inputs[0][:, 1], inputs[0][:, 2]
    assert torch.equal(x[:, 0, :], torch.linspace(-1, 1, 16).expand(2, 16))  # -1 at the left edge, 1 at the right
    assert torch.equal(y[:, :, 0], torch.linspace(-1, 1, 8).expand(2, 8))
    assert torch.equal(inputs[0][0, 1:], inputs[0][1, 1:])  # the null branch keeps them
    # a model without the setting takes none: its UNet sees x_t alone
    plain = type(pipeline.conditioning).of(pipeline.unet.config, {}, {})
    assert plain.get("position") is None and plain.image_channels(3) == 3
    with pytest.raises(ValueError, match="coordinate_channels must be 2"):
        type(pipeline.conditioning).of(pipeline.unet.config, {"coordinate_channels": 3}, {})


def test_prompt_embeds_give_the_images_of_their_prompt(tmp_path):
    pipeline = tiny_text(tmp_path)
    hidden, mask = pipeline.conditioning.prompts.encode(["five right of 1"], "cpu")
    by_text = run(pipeline, prompt="five right of 1", guidance_scale=2.0, negative_prompt="")
    empty = pipeline.conditioning.prompts.encode([""], "cpu")
    by_embeds = run(
        pipeline, prompt_embeds=hidden, prompt_attention_mask=mask, negative_prompt_embeds=empty[0],
        negative_prompt_attention_mask=empty[1], guidance_scale=2.0,
    )  # fmt: skip
    torch.testing.assert_close(by_text, by_embeds, atol=1e-5, rtol=0)


def test_bad_prompts_are_warned_of_or_refused(tmp_path):
    pipeline = tiny_text(tmp_path)
    with pytest.warns(UserWarning, match="does not know .*: banana"):
        run(pipeline, seeds=(0,), prompt="3 banana of 7", steps=1)
    with pytest.warns(UserWarning, match="no prompt was given: it samples the null condition"):
        run(pipeline, seeds=(0,), steps=1)
    with pytest.warns(UserWarning, match="longer than the 16 tokens the text encoder takes were cut"):
        run(pipeline, seeds=(0,), prompt=" ".join(["seven"] * 30), steps=1)
    with pytest.raises(ValueError, match="Got 3 prompts for batch_size=2"):
        run(pipeline, prompt=["1 left of 2"] * 3)
    with pytest.raises(ValueError, match="prompt given, but this model is unconditional"):
        run(Source.of("ddpm-tiny-8").build(), prompt="a cat")
    with pytest.raises(ValueError, match="prompt must be a string or a list of strings"):
        run(pipeline, prompt=3)


def test_inpainting_img2img_and_the_likelihood_take_a_prompt(tmp_path):
    from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline

    pipeline = tiny_text(tmp_path)
    image = torch.rand(1, 1, 8, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 16)
    mask[..., 8:] = 1
    inpainted = DDPMHubInpaintPipeline.from_pipe(pipeline)(
        image=image, mask_image=mask, prompt=["1 left of 2", "3 left of 4"], guidance_scale=2.0,
        num_inference_steps=3, jump_length=1, jump_n_sample=1, output_type="pt",
    ).images  # fmt: skip
    assert inpainted.shape == (2, 1, 8, 16) and torch.allclose(
        inpainted[..., :8], image.expand(2, -1, -1, -1)[..., :8], atol=1e-6
    )
    edited = DDPMHubImg2ImgPipeline.from_pipe(pipeline)(
        image=image, prompt="1 left of 2", strength=0.5, num_inference_steps=4, output_type="pt"
    ).images
    assert edited.shape == (1, 1, 8, 16)
    images = (image * 255).round().to(torch.uint8)
    a = pipeline.likelihood(images, num_steps=3, generator=torch.Generator().manual_seed(0), prompt=["1 left of 2"])
    b = pipeline.likelihood(images, num_steps=3, generator=torch.Generator().manual_seed(0), prompt=["9 left of 0"])
    assert np.isfinite(a.mean()) and a.mean() != b.mean()  # -log p(x | prompt) depends on the prompt


# ----------------------------------------------------------------------------------------------------------------
# Encoders and tokenizers


def test_the_word_tokenizer_is_a_transformers_tokenizer_and_the_configuration_carries_it(tmp_path):
    captions = [c for a in range(10) for b in range(10) for c in captions_of(a, b)]
    tokenizer = word_tokenizer(captions)
    assert tokenizer("Seven left of 3").input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer("").input_ids == [tokenizer.eos_token_id]  # the null condition is one token
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    shipped = AutoTokenizer.from_pretrained(ROOT / "pipelines" / "ddpm-digit-pairs-text" / "tokenizer")
    for text in ("3 left of seven", "nine right of 0", "", "unknown words here"):
        assert loaded(text).input_ids == tokenizer(text).input_ids == shipped(text).input_ids
    assert shipped.model_max_length == 16


def test_the_configuration_encoder_starts_with_heads_on_neighbours_so_a_digit_state_says_its_side(tmp_path):
    from ddpm_hub.loading.text import HEAD_OFFSETS

    pipeline = Source.of("ddpm-digit-pairs-text").build(seed=0)
    encoder, tokenizer = pipeline.text_encoder, pipeline.tokenizer
    offsets = encoder.config.to_dict()[HEAD_OFFSETS]
    tokens = tokenizer(["3 left of 7"], return_tensors="pt")
    encoder.set_attn_implementation("eager")  # the one that returns attention weights
    with torch.no_grad():
        attention = encoder(tokens.input_ids, output_attentions=True).attentions[0][0]  # [heads x query x key]
    layer = encoder.encoder.block[0].layer[0].SelfAttention
    length = tokens.input_ids.shape[1]
    relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # key - query
    bucket = layer._relative_position_bucket(
        relative, True, layer.relative_attention_num_buckets, layer.relative_attention_max_distance
    )
    for head, offset in enumerate(offsets):  # most of each head's attention on its offset's bucket
        target = layer._relative_position_bucket(
            torch.tensor(offset), True, layer.relative_attention_num_buckets, layer.relative_attention_max_distance
        )
        for query in range(length):
            if 0 <= query + offset < length:
                assert attention[head, query][bucket[query] == target].sum() > 0.5
    assert side_probe(encoder, tokenizer) > 0.9
    # T5's own start: nearly uniform attention, every token gets the same mean, the side is not in the states
    config = json.loads((ROOT / "pipelines" / "ddpm-digit-pairs-text" / "text_encoder" / "config.json").read_text())
    del config[HEAD_OFFSETS]
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    assert side_probe(T5EncoderModel(T5Config(**config)).eval(), tokenizer) < 0.7


def test_head_offsets_are_refused_where_they_cannot_apply(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from ddpm_hub.errors import UsageError
    from ddpm_hub.loading.text import start_heads_at_offsets

    clip = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=8,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            initial_head_offsets=[-1, 1],
        )
    )
    with pytest.raises(UsageError, match="only a T5 encoder's relative position bias"):
        start_heads_at_offsets(clip)
    t5 = T5EncoderModel(
        T5Config(d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2, vocab_size=8, initial_head_offsets=[1, 2, 3])
    )
    with pytest.raises(UsageError, match=r"one non-zero whole offset per head \(2 heads\)"):
        start_heads_at_offsets(t5)


@pytest.mark.parametrize("encoder", ["clip", "t5"])
def test_a_tiny_clip_and_a_tiny_t5_load_by_path_and_sample(tmp_path, encoder):
    pipeline = tiny_text(tmp_path, encoder)
    folder = tmp_path / "saved"
    pipeline.save_pretrained(folder)
    text_encoder, tokenizer = load_text_encoder(folder)  # a pipeline folder: its text_encoder/ and tokenizer/
    assert type(text_encoder).__name__ == {"clip": "CLIPTextModel", "t5": "T5EncoderModel"}[encoder]
    assert text_encoder.dtype == torch.float32 and tokenizer("1 left of 2").input_ids
    loaded = DDPMHubPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(run(loaded, prompt="1 left of 2"), run(pipeline, prompt="1 left of 2"))
    index = json.loads((folder / "model_index.json").read_text())
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]  # what transformers 4 and 5 both know


def test_a_model_that_is_not_a_text_encoder_is_refused(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path / "vit"
    )
    with pytest.raises(ValueError, match="is a vit model, not a text encoder"):
        check([*TINY, "--pipeline", str(text_config(tmp_path)), *TEXT, "--text_encoder", str(tmp_path / "vit")])


# ----------------------------------------------------------------------------------------------------------------
# Captions from where users keep them


def test_digit_pairs_are_two_builtin_digits_with_every_caption_and_no_unseen_pair():
    pairs = load_images("builtin:digit-pairs", resolution=(16, 32), channels=1, caption_column="text", max_images=300)
    digits = load_images("builtin:digits", resolution=16, channels=1)
    assert pairs.images.shape == (300, 1, 16, 32) and len(pairs.captions) == 300
    lefts, rights = [], []
    for canvas, captions in zip(pairs.images, pairs.captions):
        left = next(i for i in range(1797) if torch.equal(digits.images[i], canvas[..., :16]))
        right = next(i for i in range(1797) if torch.equal(digits.images[i], canvas[..., 16:]))
        a, b = int(digits.labels[left]), int(digits.labels[right])
        assert captions == captions_of(a, b) and not is_unseen(a, b)
        lefts.append(a)
        rights.append(b)
    assert set(lefts) == set(rights) == set(range(10))  # every digit on both sides
    assert captions_of(3, 7)[:2] == ["3 left of 7", "7 right of 3"] and "three left of seven" in captions_of(3, 7)
    assert unseen_pairs()[:2] == [(0, 5), (1, 6)] and len(unseen_pairs()) == 10


def test_a_folder_with_metadata_jsonl_gives_captions_and_skips_images_without_one(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    lines = [{"file_name": "0.png", "text": "a dark square"}, {"file_name": "1.png", "text": ["one", "two"]}]
    lines += [{"file_name": "2.png", "text": ""}]  # empty: skipped; 3.png has no line: skipped
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.warns(UserWarning, match="Skipped 2 of 4"):
        decoded = load_images(None, str(folder), resolution=8, channels=3, caption_column="text")
    assert decoded.captions == [["a dark square"], ["one", "two"]] and len(decoded.images) == 2
    assert load_images(None, str(folder), resolution=8, channels=3).captions is None  # not asked for
    with pytest.raises(ValueError, match="has no 'caption'; its keys"):
        load_images(None, str(folder), resolution=8, channels=3, caption_column="caption")


def write_captioned_parquet(folder, rows: int = 12):
    import datasets

    from ddpm_hub.data.digit_pairs import prompt

    folder.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    images, texts = [], []
    for i in range(rows):
        buffer = __import__("io").BytesIO()
        Image.fromarray(np.full((8, 16), 12 * i, dtype=np.uint8)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": f"{i}.png"})
        texts.append(prompt(i % 10, (i + 1) % 10) if i != 4 else None)  # row 4 has no caption
    data = datasets.Dataset.from_dict({"image": images, "caption": texts}, features=features)
    data.to_parquet(str(folder / "train-00000-of-00001.parquet"))


def test_a_parquet_text_column_and_the_decoded_cache_keep_the_captions(tmp_path):
    write_captioned_parquet(tmp_path / "data")
    common = dict(resolution=(8, 16), channels=1, cache_dir=str(tmp_path / "hf"))
    with pytest.warns(UserWarning, match="no caption"):
        decoded = load_images(str(tmp_path / "data"), caption_column="caption", **common)
    assert len(decoded.captions) == 11 and decoded.captions[0] == ["0 left of 1"]
    from ddpm_hub.data import DataOptions

    options = DataOptions(dataset_name=str(tmp_path / "data"), caption_column="caption", resolution=(8, 16))
    options = DataOptions(**{**options.__dict__, "cache_dir": str(tmp_path / "cache")})
    with pytest.warns(UserWarning):
        cached = options.load(channels=1, captions=True)
    with pytest.warns(UserWarning):
        again = options.load(channels=1, captions=True)  # from the cache: nothing decoded
    assert cached.captions == decoded.captions == again.captions and cached.file is not None
    with pytest.raises(ValueError, match=r"--caption_column 'text' is not a column .* \['image', 'caption'\]"):
        DataOptions(dataset_name=str(tmp_path / "data"), resolution=(8, 16), cache_dir=str(tmp_path / "c2")).load(
            channels=1, captions=True
        )


def test_caption_dropout_draws_one_caption_per_image_and_epoch_from_the_seeded_stream(tmp_path):
    pipeline = tiny_text(tmp_path)
    options = type(
        "Options", (), {"caption_dropout_prob": 0.25, "train_text_encoder": False, "validation_prompts": None}
    )()
    data = type("Data", (), {"columns": {"captions": [["a", "b"]] * 400}})()
    kind = pipeline.conditioning.prompts.trained(data, options)
    first = kind.drop([["x", "y", "z"]] * 400, torch.Generator().manual_seed(1))
    again = kind.drop([["x", "y", "z"]] * 400, torch.Generator().manual_seed(1))
    assert first == again and set(first) == {"x", "y", "z", ""}
    assert 60 < first.count("") < 140 and all(first.count(c) > 60 for c in "xyz")
    assert kind.prompts == ["a"]  # the grid: the data's distinct first captions
    batch = kind.training_batch(first[:5], "cpu")  # a frozen encoder: each caption encoded alone, kept
    assert batch.kwargs["encoder_hidden_states"].shape[0] == 5 and set(kind.memo) == set(first[:5])


# ----------------------------------------------------------------------------------------------------------------
# Training (launched runs)


def text_run(tmp_path, *extra, name="run"):
    return [*TINY, "--pipeline", str(text_config(tmp_path)), *TEXT, "--output_dir", str(tmp_path / name), *extra]


def test_text_options_are_checked_before_the_model_is_built(tmp_path):
    with pytest.raises(ValueError, match="text options apply to text-to-image models"):
        check([*TINY, "--caption_dropout_prob", "0.2"])
    options, _ = check(text_run(tmp_path))
    assert options.conditioning.caption_dropout_prob == 0.1  # the default for a text model


@pytest.mark.slow
def test_a_text_model_trains_resumes_bit_identically_after_sigkill_and_samples(tmp_path):
    from helpers import LAUNCHER, assert_bit_identical, unet_weights

    common = ["--max_train_steps", "6", "--checkpointing_steps", "2", "--use_ema", "--caption_dropout_prob", "0.3"]
    common += ["--validation_prompts", "1 left of 2|three right of 4"]
    check_ok(run_script(text_run(tmp_path, *common, name="a")))
    killed = run_script(
        text_run(tmp_path, *common, name="b"), script=LAUNCHER, env={"FAULT_KILL_AFTER_CHECKPOINT": "4"}
    )
    assert killed.returncode == -9
    check_ok(run_script(text_run(tmp_path, *common, "--resume_from_checkpoint", "latest", name="b")))
    assert_bit_identical(unet_weights(tmp_path / "a"), unet_weights(tmp_path / "b"))
    pipeline = DDPMHubPipeline.from_pretrained(tmp_path / "a")
    assert type(pipeline.text_encoder).__name__ == "CLIPTextModel"
    summary = json.loads((tmp_path / "a" / "training_summary.json").read_text())
    assert summary["samples"]["prompts"] == ["1 left of 2", "three right of 4"]
    assert (tmp_path / "a" / "guidance.png").is_file()


@pytest.mark.slow
def test_a_trained_text_encoder_on_two_ranks_stays_in_step(tmp_path):
    args = text_run(tmp_path, "--max_train_steps", "3", "--train_text_encoder", "--use_ema")
    check_ok(run_script(args, processes=2))
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and len(set(summary["weights_sha256_per_rank"])) == 1
    before = Source.of(text_config(tmp_path)).build(seed=0).text_encoder
    after = DDPMHubPipeline.from_pretrained(tmp_path / "run").text_encoder
    changed = [n for n, p in after.named_parameters() if not torch.equal(p, dict(before.named_parameters())[n])]
    assert changed  # the encoder was trained (and its EMA saved)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["t5"])
def test_text_encoder_by_path_trains(tmp_path, encoder):
    from transformers import T5Config, T5EncoderModel

    source = tiny_text(tmp_path, encoder)  # its tokenizer, with an encoder 40 wide where the UNet attends to 24
    wide = T5Config(vocab_size=source.text_encoder.config.vocab_size, d_model=40, d_kv=8, d_ff=48, num_layers=1,
                    num_heads=2, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)  # fmt: skip
    T5EncoderModel(wide).save_pretrained(tmp_path / "encoder" / "text_encoder")
    source.tokenizer.save_pretrained(tmp_path / "encoder" / "tokenizer")
    check_ok(run_script(text_run(tmp_path, "--max_train_steps", "2", "--text_encoder", str(tmp_path / "encoder"))))
    loaded = DDPMHubPipeline.from_pretrained(tmp_path / "run")
    assert type(loaded.text_encoder).__name__ == "T5EncoderModel"
    assert loaded.text_encoder.config.d_model == 40
    assert loaded.unet.config.encoder_hid_dim == 40 and loaded.unet.config.encoder_hid_dim_type == "text_proj"


@pytest.mark.slow
def test_a_parquet_with_a_text_column_and_a_folder_with_metadata_train(tmp_path):
    write_captioned_parquet(tmp_path / "data", rows=20)
    args = [*TINY, "--pipeline", str(text_config(tmp_path)), "--resolution", "8x16", "--max_train_steps", "2"]
    check_ok(run_script([*args, "--dataset_name", str(tmp_path / "data"), "--caption_column", "caption",
                         "--output_dir", str(tmp_path / "parquet"), "--max_train_samples", "8"]))  # fmt: skip
    folder = tmp_path / "images"
    folder.mkdir()
    lines = []
    for i in range(8):
        Image.fromarray(np.full((8, 16), 30 * i, dtype=np.uint8)).save(folder / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": f"{i % 10} left of {(i + 1) % 10}"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    check_ok(run_script([*args, "--train_data_dir", str(folder), "--output_dir", str(tmp_path / "folder")]))
    for name in ("parquet", "folder"):
        assert json.loads((tmp_path / name / "training_summary.json").read_text())["steps"] == 2
    result = run_script([*args, "--dataset_name", "builtin:digits", "--output_dir", str(tmp_path / "none")])
    assert result.returncode == 2 and "builtin:digits has no captions" in result.stderr
    assert "UNet:" not in result.stderr  # refused before the model is built


@pytest.mark.slow
def test_a_text_model_round_trips_through_the_hub_both_ways(hub_server, tmp_path, hub_cache):
    import subprocess

    from ddpm_hub.hub.publishing import publish

    pipeline = tiny_text(tmp_path)
    pipeline.save_pretrained(tmp_path / "folder")
    repo_id = "alice/tiny-text-round-trip"
    publish(tmp_path / "folder", repo_id, token="hf_alice_write")
    loaded = DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache, token="hf_alice_write")
    loaded.set_progress_bar_config(disable=True)
    expected = run(pipeline, prompt="1 left of 2", guidance_scale=2.0)
    torch.testing.assert_close(run(loaded, prompt="1 left of 2", guidance_scale=2.0), expected)
    script = (
        "import sys, numpy as np, torch\n"
        "sys.modules['ddpm_hub'] = None\n"
        "torch.set_num_threads(1)\n"
        "from diffusers import DiffusionPipeline\n"
        f"p = DiffusionPipeline.from_pretrained({repo_id!r}, trust_remote_code=True, token='hf_alice_write')\n"
        "p.set_progress_bar_config(disable=True)\n"
        "g = [torch.Generator().manual_seed(s) for s in (0, 1)]\n"
        "out = p(prompt='1 left of 2', guidance_scale=2.0, num_inference_steps=3, generator=g, output_type='pt')\n"
        "np.save(sys.argv[1], out.images.numpy())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "plain.npy")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "plain.npy")), expected)


def test_the_cli_samples_a_grid_of_prompts(tmp_path, capsys):
    from ddpm_hub import cli

    tiny_text(tmp_path).save_pretrained(tmp_path / "model")
    (tmp_path / "prompts.txt").write_text("1 left of 2\n\nthree right of 4\n")
    command = ["sample", str(tmp_path / "model"), "--steps", "2", "--num_images", "4", "--guidance_scale", "3"]
    assert (
        cli.main([*command, "--prompts_file", str(tmp_path / "prompts.txt"), "--output", str(tmp_path / "g.png")]) == 0
    )
    facts = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert facts["prompt"] == ["1 left of 2", "three right of 4", "1 left of 2", "three right of 4"]
    assert cli.main([*command, "--prompt", "1 left of 2", "--class_labels", "3"]) == 2
    assert "give one kind of condition" in capsys.readouterr().err
    assert cli.main(["sample", "ddpm-tiny-8", "--steps", "1", "--num_images", "1", "--prompt", "x"]) == 2
    assert "prompt given, but this model is unconditional" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt file of known words: no warning
        assert cli.main([*command, "--prompt", "5 left of 6", "--output", str(tmp_path / "h.png")]) == 0


def test_a_text_model_without_its_tokenizer_folder_is_refused_locally_by_name(tmp_path, capsys, monkeypatch):
    # issue 28: a missing tokenizer/ was sent to the Hub as a repo id (45 retries, 217 s, a wrong hint)
    import shutil

    import huggingface_hub

    from ddpm_hub import cli

    folder = tmp_path / "model"
    tiny_text(tmp_path).save_pretrained(folder)
    shutil.rmtree(folder / "tokenizer")

    def no_hub(*args, **kwargs):
        raise AssertionError("a local folder reached the Hub")

    monkeypatch.setattr(huggingface_hub.file_download, "_get_metadata_or_catch_error", no_hub)
    grid = tmp_path / "grid.png"
    assert cli.main(["sample", str(folder), "--prompt", "1 left of 2", "--steps", "1", "--output", str(grid)]) == 2
    error = capsys.readouterr().err
    assert f"{folder} has no tokenizer/ (transformers.PreTrainedTokenizerFast, named in model_index.json)" in error
    assert "sentencepiece" not in error and not grid.exists()
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"incomplete tokenizer/ .*expected tokenizer\.json.*tokenizer_config"):
        DDPMHubPipeline.from_pretrained(folder)
    configuration = text_config(tmp_path)  # a configuration (no weights) without its tokenizer/: the same
    shutil.rmtree(configuration / "tokenizer")
    with pytest.raises(FileNotFoundError, match=f"{configuration} has no tokenizer/ "):
        Source.of(configuration).build()


def test_a_text_encoder_folder_without_tokenizer_files_is_refused_before_training(tmp_path):
    # issue 28: --text_encoder a folder without tokenizer files: an empty 104-token tokenizer, a prompt-blind model
    from transformers import T5Config, T5EncoderModel

    encoder = tmp_path / "t5"
    config = T5Config(vocab_size=40, d_model=24, d_kv=12, d_ff=48, num_layers=1, num_heads=2, decoder_start_token_id=0)
    T5EncoderModel(config).save_pretrained(encoder)
    with pytest.raises(ValueError, match=r"--text_encoder .*t5': no tokenizer in .*expected one of tokenizer\.json"):
        check([*TINY, "--pipeline", str(text_config(tmp_path)), *TEXT, "--text_encoder", str(encoder)])
    word_tokenizer(["one two"]).save_pretrained(encoder)  # with its tokenizer, it is accepted
    check([*TINY, "--pipeline", str(text_config(tmp_path)), *TEXT, "--text_encoder", str(encoder)])


def test_special_token_text_in_a_prompt_never_crashes_and_a_tokenizer_past_the_encoder_is_refused(tmp_path):
    # issue 28: a prompt such as <extra_id_5> crashed a model whose tokenizer had more ids than its encoder embeds
    pipeline = tiny_text(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown words are warned of
        for prompt in ("<extra_id_5>", "[PAD] [EOS] [UNK]", "</s><pad>"):
            assert run(pipeline, seeds=(0,), steps=1, prompt=prompt).isfinite().all()
    folder = tmp_path / "model"
    pipeline.save_pretrained(folder)
    config = pipeline.text_encoder.config.to_dict() | {"vocab_size": len(pipeline.tokenizer) - 1}
    short = type(pipeline.text_encoder)(type(pipeline.text_encoder.config).from_dict(config))
    with pytest.raises(
        ValueError, match=r"the tokenizer has \d+ tokens but the text encoder embeds \d+ \(vocab_size\)"
    ):
        DDPMHubPipeline.from_pretrained(folder, text_encoder=short)
