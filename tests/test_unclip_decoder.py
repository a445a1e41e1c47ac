"""DALL-E 2's decoder (issue 33, item 3): a DDPM conditioned on a CLIP image embedding (Kandinsky 2.2's layout:
ImageTimeEmbedding + ImageProjection), its preprocessing, its dropout for guidance, its training run, and the image
variations pipeline loaded both ways."""

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from helpers import LAUNCHER, ROOT, assert_bit_identical, check, check_ok, run_script, unet_weights
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler, DDPMHubUnCLIPImageVariationPipeline
from ddpm_hub.errors import UsageError
from ddpm_hub.hub.model_card import render_model_card
from ddpm_hub.loading.components import code_files
from ddpm_hub.loading.image_encoder import load_image_encoder
from ddpm_hub.pipelines import Source
from ddpm_hub.pipelines.image_embeds_kind import TrainingImageEmbedsCondition
from ddpm_hub.shipped.conditioning_ddpm_hub import ConditionBatch, Conditioning, guided_output
from ddpm_hub.shipped.image_embeds_ddpm_hub import encoder_pixels, image_embeddings
from ddpm_hub.training.options import parse_options
from ddpm_hub.training.randomness import CONDITION_DROPOUT, make_generator

EMBED_DIM = 8
KILL_AFTER_2 = {"FAULT_KILL_AFTER_CHECKPOINT": "2"}  # tests/launch_train.py: killed after the step-2 checkpoint
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8)


def tiny_image_encoder(image_size: int = 16, channels: int = 1, seed: int = 0) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(**VISION, image_size=image_size, num_channels=channels, projection_dim=EMBED_DIM)
    return CLIPVisionModelWithProjection(config).eval()


def tiny_decoder(image_encoder=None, feature_extractor=None, seed: int = 0) -> DDPMHubPipeline:
    """An 8 x 16 gray decoder: ImageTimeEmbedding and ImageProjection of an 8-wide embedding, 32 context tokens."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=(8, 16), in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4, addition_embed_type="image",
        encoder_hid_dim_type="image_proj", encoder_hid_dim=EMBED_DIM,
    ).eval()  # fmt: skip
    scheduler = DDPMHubScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    pipeline = DDPMHubPipeline(unet, scheduler, image_encoder=image_encoder, feature_extractor=feature_extractor)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def unit_rows(count: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(count, EMBED_DIM, generator=torch.Generator().manual_seed(seed)))


def canvas(seed: int = 0, size=(8, 16)) -> np.ndarray:
    """A uint8 gray canvas `[H x W]`."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def run(pipeline, **kwargs) -> np.ndarray:
    kwargs = {"num_inference_steps": 3, "generator": torch.Generator().manual_seed(0), "output_type": "np", **kwargs}
    return pipeline(**kwargs).images


# ----------------------------------------------------------------------------------------------------------------
# The kind


def test_the_decoder_is_conditioned_on_an_image_embedding_only():
    conditioning = tiny_decoder().conditioning
    assert [kind.name for kind in conditioning.kinds] == ["image_embeds"]  # no prompt kind for its cross-attention
    assert conditioning.get("image_embeds").embed_dim == EMBED_DIM
    assert conditioning.call_arguments == ("image_embeds", "negative_image_embeds")


def test_the_embedding_reaches_the_unet_and_the_zero_embedding_is_the_null_branch():
    pipeline = tiny_decoder()
    one, other = unit_rows(1, 1), unit_rows(1, 2)
    assert np.abs(run(pipeline, image_embeds=one) - run(pipeline, image_embeds=other)).max() > 1e-3
    np.testing.assert_array_equal(run(pipeline, image_embeds=one), run(pipeline, image_embeds=one[0]))  # [D] too
    np.testing.assert_array_equal(
        run(pipeline, image_embeds=one, guidance_scale=0.0), run(pipeline, image_embeds=torch.zeros(1, EMBED_DIM))
    )
    with pytest.warns(UserWarning, match="no image_embeds were given"):
        nothing = run(pipeline)
    np.testing.assert_array_equal(nothing, run(pipeline, image_embeds=torch.zeros(1, EMBED_DIM)))
    with pytest.raises(ValueError, match=r"image_embeds must be a torch tensor \[N x 8\]"):
        run(pipeline, image_embeds=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="class_labels given"):
        run(pipeline, image_embeds=one, class_labels=[1])


def test_the_unet_call_is_kandinskys_added_cond_kwargs():
    pipeline = tiny_decoder()
    x_t, t, embeds = torch.randn(2, 1, 8, 16), torch.tensor([10, 60]), unit_rows(2, 3)
    with torch.no_grad():
        ours = ConditionBatch({"image_embeds": embeds})(pipeline.unet, x_t, t)
        theirs = pipeline.unet(x_t, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": embeds}).sample
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_guidance_is_eps_null_plus_w_times_the_difference(w):
    pipeline = tiny_decoder()
    conditioning = Conditioning.of(pipeline.unet.config)
    embeds = unit_rows(2, 4)
    guided, batch_size = conditioning.prepare({"image_embeds": embeds}, None, w, "cpu")
    assert batch_size == 2 and (guided.null is None) == (w == 1)
    x_t, t = torch.randn(2, 1, 8, 16), torch.tensor(40)
    with torch.no_grad():
        output = guided_output(pipeline.unet, x_t, t, guided.condition, guided.null, w)
        eps_c = pipeline.unet(x_t, t, None, added_cond_kwargs={"image_embeds": embeds}).sample
        zeros = torch.zeros(2, EMBED_DIM)
        eps_null = pipeline.unet(x_t, t, None, added_cond_kwargs={"image_embeds": zeros}).sample
    torch.testing.assert_close(output, eps_null + w * (eps_c - eps_null), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The preprocessing (one function, shipped: training and the variations pipeline use it)


def test_a_canvas_is_padded_to_a_square_with_black_and_normalised_by_hand():
    x = torch.rand(1, 1, 16, 32) * 2 - 1  # a 16 x 32 canvas in [-1, 1]
    encoder = tiny_image_encoder(image_size=32, channels=3)
    processor = CLIPImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.5])
    pixels = encoder_pixels(x, encoder, processor)
    assert pixels.shape == (1, 3, 32, 32)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.5]).view(3, 1, 1)
    torch.testing.assert_close(pixels[0, :, 8:24], ((x[0] + 1) / 2 - mean) / std)  # gray repeated to RGB
    black = ((0 - mean) / std).expand(3, 8, 32)
    torch.testing.assert_close(pixels[0, :, :8], black)
    torch.testing.assert_close(pixels[0, :, 24:], black)
    without = encoder_pixels(x, tiny_image_encoder(image_size=32, channels=1))  # no feature extractor: [-1, 1]
    torch.testing.assert_close(without[0, 0, 8:24], x[0, 0])
    assert bool((without[0, 0, :8] == -1).all())


def test_the_square_is_resized_to_the_encoders_size_and_rgb_averaged_for_a_gray_encoder():
    x = torch.full((1, 3, 16, 32), 0.5)
    x[:, 0] = 0.2  # RGB (0.2, 0.5, 0.5): gray 0.4
    pixels = encoder_pixels(x, tiny_image_encoder(image_size=16, channels=1))
    assert pixels.shape == (1, 1, 16, 16)
    torch.testing.assert_close(pixels[0, 0, 5:11], torch.full((6, 16), 0.4))  # the canvas's rows, away from the band
    torch.testing.assert_close(pixels[0, 0, :3], torch.full((3, 16), -1.0))  # the black padding
    expected = torch.nn.functional.interpolate(
        torch.nn.functional.pad(x.mean(1, keepdim=True), (0, 0, 8, 8), value=-1), size=(16, 16), mode="bilinear",
        antialias=True, align_corners=False,
    )  # fmt: skip
    torch.testing.assert_close(pixels, expected)


def test_image_embeddings_are_the_encoders_image_embeds_l2_normalised():
    encoder = tiny_image_encoder()
    x = torch.rand(3, 1, 8, 16) * 2 - 1
    embeds = image_embeddings(encoder, x)
    with torch.no_grad():
        raw = encoder(pixel_values=encoder_pixels(x, encoder)).image_embeds
    torch.testing.assert_close(embeds, raw / raw.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3))


# ----------------------------------------------------------------------------------------------------------------
# Training: dropout, the encoder option, a run


def test_training_drops_the_share_asked_from_the_seeded_stream_of_each_micro_batch():
    kind = TrainingImageEmbedsCondition(EMBED_DIM, tiny_image_encoder())
    kind.dropout_prob = 0.25
    images = torch.rand(400, 1, 8, 16) * 2 - 1
    first = kind.drop(images, make_generator(0, CONDITION_DROPOUT, 7, 0))
    again = kind.drop(images, make_generator(0, CONDITION_DROPOUT, 7, 0))  # resumed at micro-batch 7: no state
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    dropped = (first == 0).all(dim=1)
    assert abs(dropped.float().mean().item() - 0.25) < 0.06
    torch.testing.assert_close(first[~dropped], kind.kept(images)[~dropped], rtol=0, atol=0)
    other = (kind.drop(images, make_generator(0, CONDITION_DROPOUT, 8, 0)) == 0).all(dim=1)
    assert not torch.equal(dropped, other)
    kind.dropout_prob = 0.0
    assert not (kind.drop(images, make_generator(0, CONDITION_DROPOUT, 7, 0)) == 0).all(dim=1).any()


def save_tiny_clip(folder: Path, image_size: int = 32) -> CLIPModel:
    torch.manual_seed(0)
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=30)
    vision = {**VISION, "image_size": image_size, "num_channels": 1}
    clip = CLIPModel(CLIPConfig(text_config={**text, "max_position_embeddings": 8}, vision_config=vision,
                                projection_dim=EMBED_DIM)).eval()  # fmt: skip
    clip.save_pretrained(folder)
    return clip


def test_a_clip_model_folder_gives_its_vision_tower_and_projection(tmp_path):
    clip = save_tiny_clip(tmp_path / "clip")
    encoder, feature_extractor = load_image_encoder(str(tmp_path / "clip"))
    assert type(encoder) is CLIPVisionModelWithProjection and feature_extractor is None
    assert encoder.config.projection_dim == EMBED_DIM and not any(p.requires_grad for p in encoder.parameters())
    pixels = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = clip.get_image_features(pixel_values=pixels)
        expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
        torch.testing.assert_close(encoder(pixel_values=pixels).image_embeds, expected)
    vision = tiny_image_encoder()
    vision.save_pretrained(tmp_path / "vision")
    CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]).save_pretrained(tmp_path / "vision")
    loaded, processor = load_image_encoder(str(tmp_path / "vision"))
    assert processor is not None and list(processor.image_mean) == [0.5]
    with pytest.raises(UsageError, match="CLIPModel or a CLIPVisionModelWithProjection"):
        load_image_encoder(str(ROOT / "pipelines" / "ddpm-digit-pairs-text" / "text_encoder"))


def test_a_clip_trained_here_embeds_canvases_as_its_own_encode_images_does(tmp_path):
    """The decoder is conditioned on the embeddings the CLIP stage (and the prior) compute: ddpm_hub.loading.clip."""
    from ddpm_hub.loading.clip import ImagePreprocessing, encode_images

    clip = save_tiny_clip(tmp_path / "clip")
    ImagePreprocessing(32, 1, (0.4,), (0.3,), data_size=(16, 32)).save(tmp_path / "clip")
    encoder, feature_extractor = load_image_encoder(str(tmp_path / "clip"))
    images = torch.from_numpy(np.stack([canvas(seed, (16, 32)) for seed in range(3)]))[:, None]  # uint8 canvases
    theirs = encode_images(clip, ImagePreprocessing.read(tmp_path / "clip"), images)
    ours = image_embeddings(encoder, images.float() / 127.5 - 1, feature_extractor)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def decoder_config(tmp_path: Path, text: bool = False) -> Path:
    """ddpm-unclip-digit-pairs-decoder at 8 x 16 with two levels: seconds per step on this CPU; reading the embedding
    alone (`image_proj`) unless `text` (the shipped layout, `text_image_proj`: the caption too)."""
    config = tmp_path / "tiny-decoder"
    shutil.copytree(ROOT / "pipelines" / "ddpm-unclip-digit-pairs-decoder", config)
    unet = json.loads((config / "unet" / "config.json").read_text())
    assert unet["encoder_hid_dim_type"] == "text_image_proj"
    if not text:
        unet["encoder_hid_dim_type"] = "image_proj"
        index = json.loads((config / "model_index.json").read_text())
        index = {key: value for key, value in index.items() if key not in ("text_encoder", "tokenizer")}
        (config / "model_index.json").write_text(json.dumps(index))
    unet.update(sample_size=[8, 16], block_out_channels=[16, 32], cross_attention_dim=16, attention_head_dim=4)
    unet.update(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"])
    unet.update(up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"])
    (config / "unet" / "config.json").write_text(json.dumps(unet))
    return config


def test_the_decoder_options_are_checked_before_any_work(tmp_path):
    save_tiny_clip(tmp_path / "clip")
    data = ["--dataset_name", "builtin:digit-pairs", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(UsageError, match="without an image encoder: give --image_encoder"):
        check(["--pipeline", str(decoder_config(tmp_path)), *data])
    with pytest.raises(UsageError, match="apply to decoders"):
        check(["--pipeline", "ddpm-digits-16", "--image_encoder", str(tmp_path / "clip"), *data])
    options, _ = check(["--pipeline", str(tmp_path / "tiny-decoder"), "--image_encoder", str(tmp_path / "clip"),
                        *data])  # fmt: skip
    assert options.conditioning.image_embed_dropout_prob == 0.1
    with pytest.raises(UsageError, match="reading captions too without a text encoder: give --text_encoder"):
        check(["--pipeline", "ddpm-unclip-digit-pairs-decoder", "--image_encoder", str(tmp_path / "clip"), *data])
    config = parse_options(["--config", str(ROOT / "training" / "configs" / "ddpm-unclip-digit-pairs-decoder.yaml")])
    clip = "runs/ddpm-unclip-digit-pairs-clip"
    assert config[0].conditioning.image_encoder == config[0].conditioning.text_encoder == clip
    assert config[0].conditioning.caption_dropout_prob == 0.5


def straight_and_resumed(common: list[str], tmp_path: Path) -> Path:
    """A run straight to its end in tmp_path/a, and one killed after its step-2 checkpoint in tmp_path/b and resumed:
    their UNets bit-identical; returns the straight run's folder."""
    out = tmp_path / "a"
    check_ok(run_script([*common, "--output_dir", str(out)]))
    killed = run_script([*common, "--output_dir", str(tmp_path / "b")], script=LAUNCHER, env=KILL_AFTER_2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    check_ok(run_script([*common, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "latest"]))
    assert_bit_identical(unet_weights(out), unet_weights(tmp_path / "b"))
    return out


@pytest.mark.slow
def test_a_tiny_decoder_run_resumes_bit_identically_and_saves_a_folder_that_loads_alone(tmp_path):
    save_tiny_clip(tmp_path / "clip", image_size=16)
    common = [
        "--pipeline", str(decoder_config(tmp_path)), "--image_encoder", str(tmp_path / "clip"),
        "--dataset_name", "builtin:digit-pairs", "--resolution", "8x16", "--max_train_samples", "32",
        "--train_batch_size", "8", "--max_train_steps", "4", "--lr_warmup_steps", "1", "--num_validation_images", "4",
        "--ddpm_num_inference_steps", "3", "--validation_steps", "0", "--validation_holdout", "8", "--logger", "none",
        "--checkpointing_steps", "2", "--validation_guidance_scale", "3",
    ]  # fmt: skip
    out = straight_and_resumed(common, tmp_path)  # the same embeddings dropped
    index = json.loads((out / "model_index.json").read_text())
    assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]
    assert (out / "image_encoder" / "model.safetensors").is_file() and (out / "samples.png").is_file()
    assert json.loads((out / "training_options.json").read_text())["image_embed_dropout_prob"] == 0.1
    variations = DDPMHubUnCLIPImageVariationPipeline.from_pretrained(out)
    variations.set_progress_bar_config(disable=True)
    images = variations(image=canvas(), num_images_per_prompt=2, decoder_num_inference_steps=3,
                        generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    assert images.shape == (2, 8, 16, 1)
    # a call that names no w takes the run's (--validation_guidance_scale, 3 here), not the class's 4
    assert index["decoder_guidance_scale"] == 3.0 and variations.config.decoder_guidance_scale == 3.0
    embeds = variations.embed_images(canvas())
    default, named = (vary(variations, image_embeddings=embeds, **w) for w in ({}, {"decoder_guidance_scale": 3.0}))
    np.testing.assert_array_equal(default, named)
    assert not np.array_equal(default, vary(variations, image_embeddings=embeds, decoder_guidance_scale=4.0))
    card = str(render_model_card(out, "alice/tiny-decoder"))
    assert "from a CLIP image embedding" in card and "transformers `CLIPVisionModelWithProjection` (`clip`)" in card
    assert "probability 0.1" in card and "DDPMHubUnCLIPImageVariationPipeline.from_pretrained" in card
    assert 'custom_pipeline="pipeline_ddpm_hub_unclip_variation", trust_remote_code=True' in card


# ----------------------------------------------------------------------------------------------------------------
# The image variations pipeline


def variations_of(pipeline=None) -> DDPMHubUnCLIPImageVariationPipeline:
    pipeline = pipeline or tiny_decoder(tiny_image_encoder(), CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]))
    return DDPMHubUnCLIPImageVariationPipeline.from_pipe(pipeline)


def vary(pipeline, **kwargs) -> np.ndarray:
    kwargs = {"decoder_num_inference_steps": 3, "generator": torch.Generator().manual_seed(0), "output_type": "np",
              **kwargs}  # fmt: skip
    return pipeline(**kwargs).images


def test_a_variation_decodes_the_images_own_embedding():
    decoder = tiny_decoder(tiny_image_encoder(), CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]))
    variations = variations_of(decoder)
    image = canvas()
    x = torch.from_numpy(image).float()[None, None] / 127.5 - 1
    embeds = image_embeddings(decoder.image_encoder, x, decoder.feature_extractor)
    expected = run(decoder, image_embeds=embeds, guidance_scale=4.0)
    for given in (image, Image.fromarray(image), torch.from_numpy(image)[None]):  # numpy, PIL, torch uint8
        np.testing.assert_array_equal(vary(variations, image=given), expected)
    np.testing.assert_array_equal(vary(variations, image_embeddings=embeds), expected)
    with pytest.raises(ValueError, match="one of the two"):
        vary(variations)


def test_num_images_per_prompt_and_output_types():
    variations = variations_of()
    images = [canvas(1), canvas(2)]
    generators = [torch.Generator().manual_seed(i) for i in range(4)]
    out = vary(variations, image=images, num_images_per_prompt=2, generator=generators)
    assert out.shape == (4, 8, 16, 1)
    embeds = variations.embed_images(images)
    same = run(DDPMHubPipeline.from_pipe(variations), image_embeds=embeds.repeat_interleave(2, 0), guidance_scale=4.0,
               generator=[torch.Generator().manual_seed(i) for i in range(4)])  # fmt: skip
    np.testing.assert_array_equal(out, same)  # i0, i0, i1, i1
    pil = variations(image=images[0], num_images_per_prompt=3, decoder_num_inference_steps=2).images
    assert len(pil) == 3 and pil[0].mode == "L" and pil[0].size == (16, 8)
    pt = variations(image=images[0], decoder_num_inference_steps=2, output_type="pt", return_dict=False)[0]
    assert pt.shape == (1, 1, 8, 16) and 0 <= float(pt.min()) and float(pt.max()) <= 1
    seen = []
    variations(image=images[0], decoder_num_inference_steps=3, callback_on_step_end=lambda p, i, t, k: seen.append(i))
    assert seen == [0, 1, 2]


def test_variations_need_a_decoder_with_an_image_encoder():
    with pytest.raises(ValueError, match="has none"):
        vary(variations_of(tiny_decoder()), image=canvas())
    with pytest.raises(ValueError, match="needs a decoder"):
        vary(DDPMHubUnCLIPImageVariationPipeline.from_pipe(Source.of("ddpm-tiny-8").build()), image=canvas())


def test_the_saved_decoder_ships_the_variation_files_and_loads_back(tmp_path):
    decoder = tiny_decoder(tiny_image_encoder(), CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]))
    decoder.save_pretrained(tmp_path)
    names = {path.name for path in code_files(DDPMHubPipeline)}
    assert {"image_embeds_ddpm_hub.py", "pipeline_ddpm_hub_unclip_variation.py"} <= names
    assert all((tmp_path / name).is_file() for name in names)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
    loaded = DDPMHubUnCLIPImageVariationPipeline.from_pretrained(tmp_path)
    assert type(loaded) is DDPMHubUnCLIPImageVariationPipeline
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(vary(loaded, image=canvas()), vary(variations_of(decoder), image=canvas()))
    card = render_model_card(tmp_path, "alice/decoder")  # a bare folder: no training record
    assert card.data.pipeline_tag == "image-to-image" and "unconditional-image-generation" not in card.data.tags
    card = str(card)
    assert "embeddings of width 8" in card and "image_embeds=" in card
    base = DDPMHubPipeline.from_pretrained(tmp_path)
    base.set_progress_bar_config(disable=True)
    embeds = unit_rows(1, 9)
    np.testing.assert_array_equal(run(base, image_embeds=embeds), run(decoder, image_embeds=embeds))


PLAIN_DIFFUSERS_VARIATIONS = textwrap.dedent(
    """
    import sys
    sys.modules["ddpm_hub"] = None  # ddpm_hub cannot be imported in this process
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    torch.set_num_threads(1)
    folder, image, out = sys.argv[1:4]
    task = "pipeline_ddpm_hub_unclip_variation"
    pipeline = DiffusionPipeline.from_pretrained(folder, custom_pipeline=task, trust_remote_code=True)
    pipeline.set_progress_bar_config(disable=True)
    print("LOADED", type(pipeline).__name__, type(pipeline.image_encoder).__name__)
    images = pipeline(image=np.load(image), num_images_per_prompt=2, decoder_num_inference_steps=3,
                      generator=torch.Generator().manual_seed(0), output_type="np").images
    np.save(out, images)
    """
)


@pytest.mark.slow
def test_plain_diffusers_makes_the_same_variations_with_trust_remote_code(tmp_path):
    decoder = tiny_decoder(tiny_image_encoder(), CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]))
    decoder.save_pretrained(tmp_path / "folder")
    np.save(tmp_path / "image.npy", canvas())
    args = [str(tmp_path / name) for name in ("folder", "image.npy", "out.npy")]
    result = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS_VARIATIONS, *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED DDPMHubUnCLIPImageVariationPipeline CLIPVisionModelWithProjection" in result.stdout
    expected = vary(variations_of(decoder), image=canvas(), num_images_per_prompt=2)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


@pytest.mark.slow
def test_a_decoder_round_trips_through_the_hub_with_its_image_encoder(hub_server, tmp_path, hub_cache):
    from ddpm_hub.hub.publishing import publish

    decoder = tiny_decoder(tiny_image_encoder(), CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]))
    decoder.save_pretrained(tmp_path / "folder")
    publish(tmp_path / "folder", "alice/tiny-decoder", token="hf_alice_write")
    loaded = DDPMHubUnCLIPImageVariationPipeline.from_pretrained(
        "alice/tiny-decoder", cache_dir=hub_cache, token="hf_alice_write"
    )
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.feature_extractor).__name__.startswith("CLIPImageProcessor")
    np.testing.assert_array_equal(vary(loaded, image=canvas()), vary(variations_of(decoder), image=canvas()))


def test_the_variations_command_writes_a_row_per_image(tmp_path, capsys):
    from ddpm_hub import cli

    decoder = tiny_decoder(tiny_image_encoder(), CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]))
    decoder.save_pretrained(tmp_path / "decoder")
    for seed in (1, 2):
        Image.fromarray(canvas(seed)).save(tmp_path / f"canvas-{seed}.png")
    argv = ["variations", str(tmp_path / "decoder"), str(tmp_path / "canvas-1.png"), str(tmp_path / "canvas-2.png"),
            "--num_images", "3", "--steps", "2", "--scale", "1", "--output", str(tmp_path / "out.png")]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"output": str(tmp_path / "out.png"), "num_images": 6,
                                                   "guidance_scale": 4.0}  # fmt: skip
    assert Image.open(tmp_path / "out.png").size == (4 * 16 + 5 * 2, 2 * 8 + 3 * 2)  # input + 3 variations, 2 rows
    # a decoder saved with its run's w: that is the command's default
    DDPMHubUnCLIPImageVariationPipeline.from_pipe(decoder, decoder_guidance_scale=2.5).save_pretrained(tmp_path / "w")
    assert cli.main([argv[0], str(tmp_path / "w"), *argv[2:]]) == 0
    assert json.loads(capsys.readouterr().out)["guidance_scale"] == 2.5
    Source.of("ddpm-tiny-8").build().save_pretrained(tmp_path / "plain")
    argv[1] = str(tmp_path / "plain")
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "ddpm-hub variations: error:" in error and "needs a decoder" in error and "Traceback" not in error


# ----------------------------------------------------------------------------------------------------------------
# Measuring variations (benchmarks/unclip_variations.py)


def test_the_spread_of_a_group_is_the_mean_squared_distance_to_its_mean():
    from ddpm_hub.evaluation.variation_accuracy import spread

    features = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])  # two groups of two
    assert spread(features) == pytest.approx((1 + 1 + 0 + 0) / 4)


def test_real_canvases_of_a_pair_are_digit_images_of_its_labels():
    from ddpm_hub.evaluation.clip_accuracy import digit_images
    from ddpm_hub.evaluation.variation_accuracy import pair_canvases

    canvases = pair_canvases([(3, 7), (1, 2)], per_pair=2)
    assert canvases.images.shape == (4, 1, 16, 32) and canvases.pairs == [(3, 7), (3, 7), (1, 2), (1, 2)]
    digits, labels = digit_images(16, 16)
    for image, (left, right) in zip(canvases.images, canvases.pairs):
        assert any(torch.equal(image[..., :16], digit) for digit in digits[torch.from_numpy(labels == left)])
        assert any(torch.equal(image[..., 16:], digit) for digit in digits[torch.from_numpy(labels == right)])
