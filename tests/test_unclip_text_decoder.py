"""DALL-E 2's decoder with GLIDE's text pathway kept (issue 33): a UNet whose cross-attention reads the CLIP image
embedding's tokens and the caption's token states (`encoder_hid_dim_type="text_image_proj"`): the call with its
attention mask, guidance with the empty caption and the zero embedding as the null branch, the unCLIP pipeline handing
each image's prompt to the decoder and variations the empty caption, and `from_stages` sharing one CLIP text tower."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from test_unclip_decoder import EMBED_DIM, VISION, decoder_config, straight_and_resumed, tiny_image_encoder, unit_rows
from test_unclip_prior import prior_scheduler, tiny_prior, tiny_text_side
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextModel

from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler, DDPMHubUnCLIPImageVariationPipeline, DDPMHubUnCLIPPipeline
from ddpm_hub.data.digit_pairs import captions_of
from ddpm_hub.errors import UsageError
from ddpm_hub.hub.model_card import render_model_card
from ddpm_hub.loading.clip import clip_word_tokenizer
from ddpm_hub.loading.prior import save_prior_stage
from ddpm_hub.loading.text import load_text_encoder
from ddpm_hub.shipped.conditioning_ddpm_hub import ConditionBatch, Conditioning, guided_output

PROMPTS = ["3 left of 7", "0 left of 5"]


def text_decoder(text_encoder, tokenizer, seed: int = 0) -> DDPMHubUnCLIPImageVariationPipeline:
    """An 8 x 16 gray decoder reading 10 tokens of an 8-wide embedding, then the caption's states (width 8)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=(8, 16), in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=EMBED_DIM, attention_head_dim=4, norm_num_groups=4,
        encoder_hid_dim_type="text_image_proj", encoder_hid_dim=EMBED_DIM,
    ).eval()  # fmt: skip
    scheduler = DDPMHubScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    pipeline = DDPMHubUnCLIPImageVariationPipeline(
        unet, scheduler, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=tiny_image_encoder(),
        feature_extractor=CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]),
    )  # fmt: skip
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_the_embedding_tokens_come_before_the_captions_and_padding_changes_nothing():
    decoder = text_decoder(*tiny_text_side())
    assert sorted(kind.name for kind in decoder.conditioning.kinds) == ["image_embeds", "prompt"]
    kind = decoder.conditioning.get("prompt")
    hidden, mask = kind.encode(PROMPTS, "cpu")
    x_t, t, embeds = torch.randn(2, 1, 8, 16), torch.tensor([10, 60]), unit_rows(2, 3)
    batch = ConditionBatch({"encoder_hidden_states": hidden, "encoder_attention_mask": mask, "image_embeds": embeds})
    with torch.no_grad():
        ours = batch(decoder.unet, x_t, t)
        full_mask = torch.cat([torch.ones(2, 10, dtype=mask.dtype), mask], dim=1)  # TextImageProjection's 10 tokens
        theirs = decoder.unet(
            x_t, t, encoder_hidden_states=hidden, encoder_attention_mask=full_mask,
            added_cond_kwargs={"image_embeds": embeds},
        ).sample  # fmt: skip
        padded = torch.cat([hidden, torch.randn(2, 3, EMBED_DIM)], dim=1)  # three more tokens, masked out
        padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=mask.dtype)], dim=1)
        batch = ConditionBatch({"encoder_hidden_states": padded, "encoder_attention_mask": padded_mask,
                                "image_embeds": embeds})  # fmt: skip
        again = batch(decoder.unet, x_t, t)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(again, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("w", [0.0, 3.0])
def test_guidance_drops_the_caption_and_the_embedding_together(w):
    decoder = text_decoder(*tiny_text_side())
    conditioning = Conditioning.of(decoder.unet.config, components={"tokenizer": decoder.tokenizer,
                                                                    "text_encoder": decoder.text_encoder})  # fmt: skip
    embeds = unit_rows(2, 4)
    guided, _ = conditioning.prepare({"prompt": PROMPTS, "image_embeds": embeds}, None, w, "cpu")
    x_t, t = torch.randn(2, 1, 8, 16), torch.tensor(40)
    kind = conditioning.get("prompt")
    with torch.no_grad():
        output = guided_output(decoder.unet, x_t, t, guided.condition, guided.null, w)
        text, empty = kind.prepare_pair({"prompt": PROMPTS}, 2, "cpu", null=True)
        eps_c = text.merge(ConditionBatch({"image_embeds": embeds}))(decoder.unet, x_t, t)
        eps_null = empty.merge(ConditionBatch({"image_embeds": torch.zeros(2, EMBED_DIM)}))(decoder.unet, x_t, t)
    torch.testing.assert_close(output, eps_null + w * (eps_c - eps_null), rtol=1e-5, atol=1e-6)


def unclip_of(decoder) -> DDPMHubUnCLIPPipeline:
    pipeline = DDPMHubUnCLIPPipeline(
        unet=decoder.unet, scheduler=decoder.scheduler, prior=tiny_prior(), prior_scheduler=prior_scheduler(),
        text_encoder=decoder.text_encoder, tokenizer=decoder.tokenizer, image_encoder=decoder.image_encoder,
        feature_extractor=decoder.feature_extractor, prior_guidance_scale=3.0, prior_num_inference_steps=4,
        decoder_guidance_scale=2.0,
    )  # fmt: skip
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_the_unclip_pipeline_gives_the_decoder_each_images_prompt_and_variations_the_empty_one():
    text_encoder, tokenizer = tiny_text_side()
    pipeline = unclip_of(text_decoder(text_encoder, tokenizer))
    generator = torch.Generator().manual_seed(0)
    images = pipeline(PROMPTS, num_images_per_prompt=2, decoder_num_inference_steps=3, generator=generator,
                      output_type="np").images  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    embeds = pipeline.prompt_image_embeddings(PROMPTS, 2, generator)  # the prior's draws first
    decoder = DDPMHubPipeline.from_pipe(pipeline)
    prompts = [text for text in PROMPTS for _ in range(2)]
    expected = decoder(prompt=prompts, image_embeds=embeds, num_inference_steps=3, generator=generator,
                       guidance_scale=2.0, output_type="np").images  # fmt: skip
    np.testing.assert_array_equal(images, expected)
    variations = DDPMHubUnCLIPImageVariationPipeline.from_pipe(pipeline)
    with_empty = decoder(prompt="", image_embeds=embeds, num_inference_steps=3, guidance_scale=2.0,
                         generator=torch.Generator().manual_seed(1), output_type="np").images  # fmt: skip
    ours = variations(image_embeddings=embeds, decoder_num_inference_steps=3,
                      generator=torch.Generator().manual_seed(1), output_type="np").images  # fmt: skip
    np.testing.assert_array_equal(ours, with_empty)
    assert np.abs(ours - expected).max() > 1e-3  # the caption reached the decoder


def test_from_stages_takes_a_text_reading_decoder_only_on_the_priors_clip(tmp_path):
    text_encoder, tokenizer = tiny_text_side()
    pipeline = unclip_of(text_decoder(text_encoder, tokenizer))
    save_prior_stage(tmp_path / "prior", pipeline.prior, pipeline.prior_scheduler, text_encoder, tokenizer)
    tower = CLIPTextModel(text_encoder.config)
    tower.load_state_dict(text_encoder.text_model.state_dict())  # a decoder run saves a CLIPTextModel (transformers 5:
    # the text transformer itself, its keys without "text_model.")
    DDPMHubUnCLIPImageVariationPipeline.from_pipe(pipeline, text_encoder=tower).save_pretrained(tmp_path / "decoder")
    built = DDPMHubUnCLIPPipeline.from_stages(prior=tmp_path / "prior", decoder=tmp_path / "decoder")
    assert type(built.text_encoder).__name__ == "CLIPTextModelWithProjection"
    assert built.conditioning.get("prompt") is not None
    other, _ = tiny_text_side(seed=1)
    DDPMHubUnCLIPImageVariationPipeline.from_pipe(pipeline, text_encoder=other).save_pretrained(tmp_path / "other")
    with pytest.raises(UsageError, match="another text encoder or tokenizer than the prior's CLIP"):
        DDPMHubUnCLIPPipeline.from_stages(prior=tmp_path / "prior", decoder=tmp_path / "other")


def test_a_whole_clip_folder_as_text_encoder_gives_its_text_tower(tmp_path):
    text_encoder, tokenizer = tiny_text_side()
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "patch_size": 8, "image_size": 16, "num_channels": 1}  # fmt: skip
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text_encoder.config.to_dict(), vision_config=vision,
                                projection_dim=EMBED_DIM))  # fmt: skip
    clip.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder, _ = load_text_encoder(tmp_path)
    assert type(encoder).__name__ == "CLIPTextModel"  # not the CLIPModel, which would read pixel values
    tower = {k.removeprefix("text_model."): v for k, v in clip.state_dict().items() if k.startswith("text_model.")}
    loaded = {k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()}  # transformers 5: no prefix
    assert tower.keys() == loaded.keys() and all(torch.equal(value, loaded[k]) for k, value in tower.items())
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "clip"


def save_tiny_text_clip(folder: Path) -> None:
    """A tiny CLIPModel of 16 x 16 gray images with its word tokenizer over the digit pairs' captions."""
    tokenizer = clip_word_tokenizer([c for a in range(10) for b in range(10) for c in captions_of(a, b)], 8)
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=len(tokenizer), max_position_embeddings=8, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config={**VISION, "image_size": 16, "num_channels": 1},
                                projection_dim=EMBED_DIM))  # fmt: skip
    clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.slow
def test_a_tiny_run_of_the_shipped_layout_resumes_bit_identically_and_reads_captions(tmp_path):
    """4 steps straight, and killed after the step-2 checkpoint then resumed: the same weights (the same embeddings and
    captions dropped); the folder reads captions and makes variations."""
    save_tiny_text_clip(tmp_path / "clip")
    common = [
        "--pipeline", str(decoder_config(tmp_path, text=True)), "--image_encoder", str(tmp_path / "clip"),
        "--text_encoder", str(tmp_path / "clip"), "--caption_dropout_prob", "0.5", "--dataset_name",
        "builtin:digit-pairs", "--resolution", "8x16", "--max_train_samples", "32", "--train_batch_size", "8",
        "--max_train_steps", "4", "--lr_warmup_steps", "1", "--num_validation_images", "4",
        "--ddpm_num_inference_steps", "2", "--validation_steps", "0", "--validation_holdout", "8", "--logger", "none",
        "--checkpointing_steps", "2",
    ]  # fmt: skip
    out = straight_and_resumed(common, tmp_path)  # the same embeddings and captions dropped
    index = json.loads((out / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"] and index["image_encoder"][1].startswith("CLIP")
    unet = json.loads((out / "unet" / "config.json").read_text())
    assert (unet["encoder_hid_dim_type"], unet["encoder_hid_dim"], unet["cross_attention_dim"]) == (
        "text_image_proj", 16, EMBED_DIM  # the text tower's width, the embedding's
    )  # fmt: skip
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["samples"]["prompts"] is None  # the grid: variations of held-out canvases, not prompts
    assert (out / "samples.png").is_file() and (out / "guidance.png").is_file()
    variations = DDPMHubUnCLIPImageVariationPipeline.from_pretrained(out)
    variations.set_progress_bar_config(disable=True)
    canvas = np.random.default_rng(0).integers(0, 256, (8, 16), dtype=np.uint8)
    assert variations(image=canvas, decoder_num_inference_steps=2, output_type="np").images.shape == (1, 8, 16, 1)
    card = render_model_card(out, "alice/tiny-text-decoder")
    assert card.data.pipeline_tag == "image-to-image" and "GLIDE's text pathway" in str(card)
    assert "probability 0.5" in str(card)  # the captions' dropout


def test_a_cascade_upsamples_the_unclip_pipelines_images(tmp_path):
    """DALL-E 2's cascade: the unCLIP pipeline (prior, decoder) as the base, a super-resolution stage after it; the
    base's images are the unCLIP pipeline's own for the same generators, and the folder loads as that base."""
    from test_superres import tiny_sr

    from ddpm_hub import DDPMHubCascadePipeline

    text_encoder, tokenizer = tiny_text_side()
    pipeline = unclip_of(text_decoder(text_encoder, tokenizer))
    pipeline.save_pretrained(tmp_path / "unclip")
    stage = tiny_sr(tmp_path, channels=1)
    stage.save_pretrained(tmp_path / "sr")
    cascade = DDPMHubCascadePipeline.from_pretrained(str(tmp_path / "unclip"), [str(tmp_path / "sr")])
    assert type(cascade.base) is DDPMHubUnCLIPPipeline
    cascade.set_progress_bar_config(disable=True)

    def generators():
        return [torch.Generator().manual_seed(seed) for seed in (0, 1)]

    output = cascade(prompt=PROMPTS, generator=generators(), num_inference_steps=[3, 2], output_type="pt",
                     prior_guidance_scale=2.0)  # fmt: skip
    alone = pipeline(PROMPTS, generator=generators(), decoder_num_inference_steps=3, prior_guidance_scale=2.0,
                     output_type="pt").images  # fmt: skip
    torch.testing.assert_close(output.stages[0], alone, rtol=0, atol=1e-6)
    assert output.images.shape == (2, 1, 32, 64)  # 8 x 16, upsampled 4x
    with pytest.raises(UsageError, match="give prompt"):
        cascade(batch_size=2, num_inference_steps=[3, 2])
    with pytest.raises(UsageError, match="guidance_scale=2.0: no stage"):
        cascade(prompt=PROMPTS, num_inference_steps=[3, 2], guidance_scale=2.0)  # the base has its own scales
    from PIL import Image

    from ddpm_hub import cli

    picture = tmp_path / "cascade.png"
    arguments = ["sample", str(tmp_path / "unclip"), "--prompt", PROMPTS[0], "--num_images", "2", "--steps", "3",
                 "--upscale", str(tmp_path / "sr"), "--upscale_steps", "2", "--guidance_scale", "2"]  # fmt: skip
    assert cli.main([*arguments, "--output", str(picture), "--scale", "1"]) == 0
    # a row per stage (the decoder's, the upsampled), two images each at the last stage's 32 x 64, 2-pixel padding
    assert Image.open(picture).size == (2 * (64 + 2) + 2, 2 * (32 + 2) + 2)


@pytest.mark.slow
def test_a_text_reading_unclip_folder_loads_from_the_hub_and_in_plain_diffusers(hub_server, tmp_path, hub_cache):
    import subprocess
    import sys

    from test_unclip_prior import PLAIN_DIFFUSERS_UNCLIP

    from ddpm_hub.hub.publishing import publish

    pipeline = unclip_of(text_decoder(*tiny_text_side()))
    pipeline.save_pretrained(tmp_path / "folder")

    def draw(loaded) -> np.ndarray:  # the call of PLAIN_DIFFUSERS_UNCLIP
        return loaded(prompt=PROMPTS, num_images_per_prompt=2, decoder_num_inference_steps=3,
                      generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip

    expected = draw(pipeline)
    publish(tmp_path / "folder", "alice/tiny-text-unclip", token="hf_alice_write")
    loaded = DDPMHubUnCLIPPipeline.from_pretrained(
        "alice/tiny-text-unclip", cache_dir=hub_cache, token="hf_alice_write"
    )
    loaded.set_progress_bar_config(disable=True)
    assert loaded.conditioning.get("prompt") is not None
    np.testing.assert_array_equal(draw(loaded), expected)
    args = [str(tmp_path / "folder"), str(tmp_path / "out.npy")]
    result = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS_UNCLIP, *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
