"""unCLIP's diffusion prior (issue 33, item 2) and the text-to-image pipeline through it (item 4): the x_0 target on
Gaussian embeddings against its closed form, the normalisation saved and undone, guidance of the prior, a tiny run's
bit-identical resume, and `DDPMHubUnCLIPPipeline` loading both ways and from the loopback Hub."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import PriorTransformer
from helpers import ROOT, assert_bit_identical
from test_unclip_decoder import EMBED_DIM, tiny_decoder, tiny_image_encoder
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModelWithProjection

from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler, DDPMHubUnCLIPImageVariationPipeline, DDPMHubUnCLIPPipeline
from ddpm_hub.errors import UsageError
from ddpm_hub.loading.clip import clip_word_tokenizer
from ddpm_hub.loading.prior import save_prior_stage
from ddpm_hub.shipped.prior_ddpm_hub import PriorText, encode_prompts, guided_x0, normalise, predict_x0, sample_prior
from ddpm_hub.training.options import parse_options
from ddpm_hub.training.prior_loss import prior_loss

TEXT_POSITIONS = 6
CAPTIONS = [f"{a} left of {b}" for a in range(10) for b in range(10) if a != b]


def tiny_text_side(seed: int = 0):
    """A CLIP text tower with an 8-wide projection and its word tokenizer (the end token the largest id)."""
    tokenizer = clip_word_tokenizer(CAPTIONS, max_length=TEXT_POSITIONS)
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=EMBED_DIM, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=TEXT_POSITIONS, projection_dim=EMBED_DIM,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, pad_token_id=0,
    )  # fmt: skip
    return CLIPTextModelWithProjection(config).eval(), tokenizer


def tiny_prior(seed: int = 0) -> PriorTransformer:
    torch.manual_seed(seed)
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=4, num_layers=1, embedding_dim=EMBED_DIM,
        num_embeddings=TEXT_POSITIONS, additional_embeddings=4, clip_embed_dim=EMBED_DIM,
    )  # fmt: skip
    with torch.no_grad():
        prior.clip_mean.copy_(torch.linspace(-0.3, 0.3, EMBED_DIM)[None])
        prior.clip_std.copy_(torch.linspace(0.1, 0.4, EMBED_DIM)[None])
    return prior.eval()


def prior_scheduler() -> DDPMHubScheduler:
    return DDPMHubScheduler(
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type="sample", clip_sample=False
    )


def tiny_unclip() -> DDPMHubUnCLIPPipeline:
    text_encoder, tokenizer = tiny_text_side()
    decoder = tiny_decoder(tiny_image_encoder(), CLIPImageProcessor(image_mean=[0.5], image_std=[0.5]))
    pipeline = DDPMHubUnCLIPPipeline(
        unet=decoder.unet, scheduler=decoder.scheduler, prior=tiny_prior(), prior_scheduler=prior_scheduler(),
        text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=decoder.image_encoder,
        feature_extractor=decoder.feature_extractor, prior_guidance_scale=3.0, prior_num_inference_steps=4,
    )  # fmt: skip
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def draw(pipeline, **kwargs) -> np.ndarray:
    kwargs = {
        "prompt": ["3 left of 7", "0 left of 5"], "num_images_per_prompt": 2, "decoder_num_inference_steps": 3,
        "generator": torch.Generator().manual_seed(0), "output_type": "np", **kwargs,
    }  # fmt: skip
    return pipeline(**kwargs).images


def texts(prompts: list[str]) -> PriorText:
    text_encoder, tokenizer = tiny_text_side()
    return encode_prompts(text_encoder, tokenizer, prompts, TEXT_POSITIONS)


# ----------------------------------------------------------------------------------------------------------------
# The objective: x_0 on normalised embeddings


def gaussian_posterior_mean(x_t, alphas_cumprod, mu: float, s: float):
    """E[x_0 | x_t] for x_0 ~ N(mu, s^2 I): mu + sqrt(abar) s^2 / (abar s^2 + 1 - abar) (x_t - sqrt(abar) mu)."""
    abar = alphas_cumprod.view(-1, 1).to(x_t)
    return mu + abar.sqrt() * s**2 / (abar * s**2 + 1 - abar) * (x_t - abar.sqrt() * mu)


def test_the_x0_target_of_gaussian_embeddings_has_its_closed_form_loss():
    """
    x_0 ~ N(mu, s^2 I), x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps: the best x_0 prediction is E[x_0 | x_t] = mu +
    sqrt(abar) s^2 / (abar s^2 + 1 - abar) (x_t - sqrt(abar) mu), whose squared error per dimension has the expected
    value of the posterior variance s^2 (1 - abar) / (abar s^2 + 1 - abar). The objective's target is x_0 itself, and
    its loss of that predictor matches the expectation.
    """
    scheduler = prior_scheduler()
    mu, s, n, d = 0.7, 0.5, 20000, EMBED_DIM
    generator = torch.Generator().manual_seed(0)
    x_0 = mu + s * torch.randn(n, d, generator=generator)
    t = torch.randint(0, 100, (n,), generator=generator)
    noise = torch.randn(n, d, generator=generator)
    x_t = scheduler.add_noise(x_0, noise, t)

    def model(x, timesteps):
        return gaussian_posterior_mean(x, scheduler.alphas_cumprod[timesteps], mu, s)

    losses, target = prior_loss(model, scheduler, x_0, t, noise, reduce=False)
    torch.testing.assert_close(target, x_0)
    abar = scheduler.alphas_cumprod[t].double()
    expected = s**2 * (1 - abar) / (abar * s**2 + 1 - abar)
    assert losses.shape == (n,)
    assert abs(float(losses.double().mean()) - float(expected.mean())) < 0.01 * float(expected.mean())
    noisy_guess = torch.nn.functional.mse_loss(x_t, x_0, reduction="none").mean(1)  # a worse predictor costs more
    assert float(noisy_guess.mean()) > 1.5 * float(losses.mean())


def test_the_normalisation_is_saved_in_the_prior_and_undone_after_the_chain(tmp_path):
    prior = tiny_prior()
    z = torch.randn(5, EMBED_DIM)
    normed = normalise(prior, z)
    torch.testing.assert_close(normed, (z - prior.clip_mean) / prior.clip_std)
    torch.testing.assert_close(prior.post_process_latents(normed), z)
    prior.save_pretrained(tmp_path / "prior")
    loaded = PriorTransformer.from_pretrained(tmp_path / "prior")
    assert torch.equal(loaded.clip_mean, prior.clip_mean) and torch.equal(loaded.clip_std, prior.clip_std)


# ----------------------------------------------------------------------------------------------------------------
# Guidance and sampling


def test_prior_guidance_mixes_the_null_and_the_text_predictions():
    prior = tiny_prior()
    text, null = texts(["3 left of 7", "0 left of 5"]), texts([""])
    x_t, t = torch.randn(2, EMBED_DIM, generator=torch.Generator().manual_seed(1)), torch.tensor(40)
    with torch.no_grad():
        x0_text = predict_x0(prior, x_t, t, text)
        x0_null = predict_x0(prior, x_t, t, null.repeat_each(2))
        torch.testing.assert_close(guided_x0(prior, x_t, t, text, null, 0.0), x0_null)
        torch.testing.assert_close(guided_x0(prior, x_t, t, text, null, 1.0), x0_text)
        by_hand = x0_null + 3.0 * (x0_text - x0_null)
        torch.testing.assert_close(guided_x0(prior, x_t, t, text, null, 3.0), by_hand, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(x0_text, x0_null)


def test_the_prior_samples_unit_embeddings_and_keeps_the_candidate_closest_to_the_text():
    prior, scheduler = tiny_prior(), prior_scheduler()
    text, null = texts(["3 left of 7", "0 left of 5"]), texts([""])
    latents = torch.randn(4, EMBED_DIM, generator=torch.Generator().manual_seed(2))
    every = []  # each text's two candidates, drawn alone from its generator
    for i in range(2):
        generator = torch.Generator().manual_seed(10 + i)
        every.append(sample_prior(prior, scheduler, text.rows(torch.tensor([i, i])), null, 2.0, 4,
                                  [generator, generator], latents=latents[2 * i : 2 * i + 2]))  # fmt: skip
    every = torch.cat(every)
    generators = [torch.Generator().manual_seed(10 + i) for i in range(2)]
    kept = sample_prior(prior, scheduler, text, null, 2.0, 4, generators, num_candidates=2, latents=latents)
    torch.testing.assert_close(kept.norm(dim=-1), torch.ones(2))
    similarity = (every * text.repeat_each(2).text_embeds).sum(-1).view(2, 2)
    torch.testing.assert_close(kept, every[similarity.argmax(1) + torch.tensor([0, 2])])


# ----------------------------------------------------------------------------------------------------------------
# The pipeline


def test_the_pipeline_decodes_the_priors_embeddings_as_the_variations_pipeline_does():
    pipeline = tiny_unclip()
    images = draw(pipeline)
    assert images.shape == (4, 8, 16, 1)
    embeds = pipeline.prompt_image_embeddings(
        ["3 left of 7", "0 left of 5"], 2, torch.Generator().manual_seed(0), prior_guidance_scale=3.0,
        prior_num_inference_steps=4,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    pipeline.prompt_image_embeddings(["3 left of 7", "0 left of 5"], 2, generator)  # the prior's draws first
    variations = DDPMHubUnCLIPImageVariationPipeline.from_pipe(pipeline)
    decoded = variations(image_embeddings=embeds, decoder_num_inference_steps=3, generator=generator, output_type="np")
    np.testing.assert_array_equal(images, decoded.images)
    assert not np.array_equal(draw(pipeline, prior_guidance_scale=0.0), images)


def test_the_pipeline_is_saved_with_its_code_and_loads_back_as_both_pipelines(tmp_path):
    pipeline = tiny_unclip()
    pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_hub_unclip", "DDPMHubUnCLIPPipeline"]
    assert index["prior"] == ["diffusers", "PriorTransformer"] and index["prior_guidance_scale"] == 3.0
    for name in ("pipeline_ddpm_hub_unclip.py", "prior_ddpm_hub.py", "pipeline_ddpm_hub_unclip_variation.py"):
        assert (tmp_path / name).is_file()
    loaded = DDPMHubUnCLIPPipeline.from_pretrained(tmp_path)
    assert type(loaded) is DDPMHubUnCLIPPipeline and loaded.config.prior_num_inference_steps == 4
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(draw(loaded), draw(pipeline))
    variations = DDPMHubUnCLIPImageVariationPipeline.from_pretrained(tmp_path)
    assert type(variations) is DDPMHubUnCLIPImageVariationPipeline and not hasattr(variations, "prior")
    assert type(DDPMHubPipeline.from_pretrained(tmp_path)) is DDPMHubPipeline
    from ddpm_hub.hub.model_card import render_model_card

    card = render_model_card(tmp_path, "alice/tiny-unclip")
    assert card.data.pipeline_tag == "text-to-image" and "unclip" in card.data.tags
    card = str(card)
    assert "diffusers `PriorTransformer` (DALL-E 2's diffusion prior)" in card and "image encoder" in card
    assert "DDPMHubUnCLIPPipeline.from_pretrained" in card and "prior_guidance_scale=3.0" in card
    assert "custom_pipeline" not in card  # plain diffusers loads the index's own pipeline: the unCLIP one


def test_from_stages_builds_the_pipeline_of_a_prior_folder_and_a_decoder_folder(tmp_path, capsys):
    pipeline = tiny_unclip()
    save_prior_stage(tmp_path / "prior", pipeline.prior, pipeline.prior_scheduler, pipeline.text_encoder,
                     pipeline.tokenizer)  # fmt: skip
    (tmp_path / "prior" / "training_options.json").write_text(json.dumps({"validation_guidance_scale": 3.0,
                                                                          "ddpm_num_inference_steps": 4}))  # fmt: skip
    DDPMHubUnCLIPImageVariationPipeline.from_pipe(pipeline).save_pretrained(tmp_path / "decoder")
    options = {"validation_guidance_scale": 2.5, "ddpm_num_inference_steps": 7}  # the decoder run's grids
    (tmp_path / "decoder" / "training_options.json").write_text(json.dumps(options))
    built = DDPMHubUnCLIPPipeline.from_stages(prior=tmp_path / "prior", decoder=tmp_path / "decoder")
    built.set_progress_bar_config(disable=True)
    assert built.config.prior_guidance_scale == 3.0 and built.config.prior_num_inference_steps == 4
    assert built.config.decoder_guidance_scale == 2.5 and built.config.default_num_inference_steps == 7
    index = json.loads((tmp_path / "decoder" / "model_index.json").read_text())
    (tmp_path / "decoder" / "model_index.json").write_text(json.dumps({**index, "default_num_inference_steps": 5}))
    own = DDPMHubUnCLIPPipeline.from_stages(prior=tmp_path / "prior", decoder=tmp_path / "decoder")
    assert own.config.default_num_inference_steps == 5  # the decoder folder's own (a fast sampler's calls) win
    (tmp_path / "decoder" / "training_options.json").unlink()
    (tmp_path / "decoder" / "model_index.json").write_text(json.dumps(index))
    built = DDPMHubUnCLIPPipeline.from_stages(prior=tmp_path / "prior", decoder=tmp_path / "decoder")
    built.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(draw(built), draw(pipeline))
    from ddpm_hub import cli

    arguments = ["--prior", str(tmp_path / "prior"), "--decoder", str(tmp_path / "decoder")]
    assert (
        cli.main(["unclip", *arguments, "--output_dir", str(tmp_path / "unclip"), "--prior_num_candidates", "1"]) == 0
    )
    folder = DDPMHubUnCLIPPipeline.from_pretrained(tmp_path / "unclip")
    folder.set_progress_bar_config(disable=True)
    assert folder.config.prior_num_candidates == 1 and folder.config.prior_guidance_scale == 3.0
    np.testing.assert_array_equal(draw(folder), draw(pipeline, prior_num_candidates=1))
    assert type(DDPMHubUnCLIPImageVariationPipeline.from_pretrained(tmp_path / "unclip").image_encoder).__name__ == (
        "CLIPVisionModelWithProjection"
    )
    output = tmp_path / "grid.png"
    sample = ["sample", str(tmp_path / "unclip"), "--prompt", "3 left of 7", "--num_images", "2", "--steps", "2"]
    assert cli.main([*sample, "--guidance_scale", "2", "--output", str(output)]) == 0
    assert output.is_file()
    assert cli.main(["sample", str(tmp_path / "unclip"), "--num_images", "2", "--output", str(output)]) != 0
    assert "give --prompt or --prompts_file" in capsys.readouterr().err


PLAIN_DIFFUSERS_UNCLIP = textwrap.dedent(
    """
    import sys
    sys.modules["ddpm_hub"] = None  # ddpm_hub cannot be imported in this process
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    torch.set_num_threads(1)
    folder, out = sys.argv[1:3]
    pipeline = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipeline.set_progress_bar_config(disable=True)
    print("LOADED", type(pipeline).__name__, type(pipeline.prior).__name__, type(pipeline.prior_scheduler).__name__)
    images = pipeline(prompt=["3 left of 7", "0 left of 5"], num_images_per_prompt=2, decoder_num_inference_steps=3,
                      generator=torch.Generator().manual_seed(0), output_type="np").images
    np.save(out, images)
    """
)


@pytest.mark.slow
def test_plain_diffusers_draws_the_same_images_with_trust_remote_code(tmp_path):
    pipeline = tiny_unclip()
    pipeline.save_pretrained(tmp_path / "folder")
    args = [str(tmp_path / "folder"), str(tmp_path / "out.npy")]
    result = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS_UNCLIP, *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED DDPMHubUnCLIPPipeline PriorTransformer DDPMHubScheduler" in result.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), draw(pipeline))


@pytest.mark.slow
def test_the_pipeline_round_trips_through_the_hub(hub_server, tmp_path, hub_cache):
    from ddpm_hub.hub.publishing import publish

    pipeline = tiny_unclip()
    pipeline.save_pretrained(tmp_path / "folder")
    publish(tmp_path / "folder", "alice/tiny-unclip", token="hf_alice_write")
    loaded = DDPMHubUnCLIPPipeline.from_pretrained("alice/tiny-unclip", cache_dir=hub_cache, token="hf_alice_write")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.prior).__name__ == "PriorTransformer"
    np.testing.assert_array_equal(draw(loaded), draw(pipeline))


# ----------------------------------------------------------------------------------------------------------------
# Training


TINY_PRIOR_RUN = [
    "--dataset_name", "builtin:digit-pairs", "--max_images", "120", "--validation_holdout", "16",
    "--train_batch_size", "8", "--lr_warmup_steps", "2", "--learning_rate", "1e-3", "--logger", "none",
    "--seed", "3", "--cpu_threads", "1", "--ddpm_num_inference_steps", "3", "--validation_guidance_scale", "2",
]  # fmt: skip


def tiny_clip_run(folder: Path) -> Path:
    """A CLIP folder as a CLIP run leaves it (weights, word tokenizer, image_preprocessing.json), 8 wide."""
    from transformers import CLIPConfig, CLIPModel

    from ddpm_hub.loading.clip import ImagePreprocessing

    words = [*map(str, range(10)), "zero one two three four five six seven eight nine left right of".split()]
    tokenizer = clip_word_tokenizer([" ".join(map(str, words))], max_length=8)
    torch.manual_seed(0)
    text = dict(hidden_size=EMBED_DIM, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=len(tokenizer), max_position_embeddings=8, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.eos_token_id, pad_token_id=0)  # fmt: skip
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8,
                  image_size=32, num_channels=1)  # fmt: skip
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=EMBED_DIM)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ImagePreprocessing(32, 1, (0.5,), (0.5,), data_size=(16, 32)).save(folder)
    return folder


def tiny_prior_config(folder: Path) -> Path:
    shutil.copytree(ROOT / "pipelines" / "ddpm-unclip-digit-pairs-prior", folder)
    config = json.loads((folder / "prior" / "config.json").read_text())
    config.update(num_attention_heads=2, attention_head_dim=4, num_layers=1, embedding_dim=EMBED_DIM,
                  clip_embed_dim=EMBED_DIM)  # fmt: skip
    (folder / "prior" / "config.json").write_text(json.dumps(config))
    return folder


def test_the_prior_options_are_checked_before_any_work(tmp_path, capsys):
    from ddpm_hub.training.main import main

    clip, config = tiny_clip_run(tmp_path / "clip"), tiny_prior_config(tmp_path / "prior-config")
    common = ["--pipeline", str(config), "--output_dir", str(tmp_path / "out"), *TINY_PRIOR_RUN]
    with pytest.raises(UsageError, match="give --clip"):
        main([*common, "--dry-run"])
    with pytest.raises(UsageError, match="--prediction_type: options of diffusion"):
        main([*common, "--clip", str(clip), "--prediction_type", "epsilon", "--dry-run"])
    with pytest.raises(UsageError, match="--random_flip"):
        main([*common, "--clip", str(clip), "--random_flip", "--dry-run"])
    wide = json.loads((config / "prior" / "config.json").read_text())
    (config / "prior" / "config.json").write_text(json.dumps({**wide, "clip_embed_dim": 16}))
    with pytest.raises(UsageError, match="clip_embed_dim"):
        main([*common, "--clip", str(clip), "--dry-run"])
    (config / "prior" / "config.json").write_text(json.dumps(wide))
    main([*common, "--clip", str(clip), "--dry-run"])
    report = json.loads(capsys.readouterr().out)
    assert report["pipeline_source"] == "prior configuration" and report["options"]["resolution"] == [16, 32]
    # The shipped YAML parses (its CLIP, runs/ddpm-unclip-digit-pairs-clip, exists only after the first stage's run)
    options, _ = parse_options(["--config", str(ROOT / "training" / "configs" / "ddpm-unclip-digit-pairs-prior.yaml")])
    assert options.prior.clip == "runs/ddpm-unclip-digit-pairs-clip" and options.prior.text_dropout_prob == 0.1


def test_the_gpu_configurations_fit_a_clip_of_vit_b32_widths(tmp_path, capsys):
    """ddpm-unclip-prior-vit-b32 and ddpm-unclip-decoder-64 (given the CLIP's text tower too) pass a run's checks on a
    CLIP laid out as openai/clip-vit-base-patch32 (transformers' default CLIPConfig is ViT-B/32: text width 512, 77
    positions, projection 512; only its config.json and a tokenizer are read), and the digit CLIP of width 64 is
    refused by the prior."""
    from ddpm_hub.training.main import main

    vit_b32 = tmp_path / "vit-b32"
    config = CLIPConfig()
    config.text_config.eos_token_id = config.text_config.vocab_size - 1  # OpenAI's <|endoftext|>, the largest id
    config.save_pretrained(vit_b32)
    clip_word_tokenizer(CAPTIONS, max_length=77).save_pretrained(vit_b32)  # a text encoder's folder has its tokenizer
    assert (config.projection_dim, config.text_config.hidden_size, config.vision_config.patch_size) == (512, 512, 32)
    data = ["--dataset_name", "builtin:digit-pairs", "--dry-run"]
    prior = ["--pipeline", "ddpm-unclip-prior-vit-b32", "--clip", str(vit_b32)]
    main([*prior, "--output_dir", str(tmp_path / "p"), *data])
    assert json.loads(capsys.readouterr().out)["pipeline_source"] == "prior configuration"
    decoder = ["--pipeline", "ddpm-unclip-decoder-64", "--image_encoder", str(vit_b32), "--resolution", "64"]
    main([*decoder, "--text_encoder", str(vit_b32), "--output_dir", str(tmp_path / "d"), *data])
    assert json.loads(capsys.readouterr().out)["options"]["image_embed_dropout_prob"] == 0.1
    with pytest.raises(UsageError, match="reading captions too without a text encoder: give --text_encoder"):
        main([*decoder, "--output_dir", str(tmp_path / "d"), *data])  # DALL-E 2's decoder reads the caption too
    digit_clip = ROOT / "pipelines" / "ddpm-unclip-digit-pairs-clip"
    with pytest.raises(UsageError, match=r"embedding_dim \(the token states' width\) 512 != 64"):
        main([*prior[:3], str(digit_clip), *data])


@pytest.mark.parametrize("name", ["ddpm-unclip-digit-pairs-prior", "ddpm-unclip-prior-vit-b32"])
def test_the_prior_readmes_state_the_real_parameter_count(name):
    folder = ROOT / "pipelines" / name
    prior = PriorTransformer.from_config(PriorTransformer.load_config(folder / "prior"))
    trained = sum(p.numel() for n, p in prior.named_parameters() if n not in ("clip_mean", "clip_std"))
    assert f"Parameters: {trained:,} trained, plus `clip_mean` and `clip_std` ({prior.clip_mean.numel()} each)" in (
        folder / "README.md"
    ).read_text().replace("\n", " ")


class Stop(Exception):
    """Stands for a kill right after a checkpoint."""


@pytest.mark.slow
def test_a_tiny_prior_run_resumes_bit_identically_and_leaves_a_prior_folder(tmp_path, monkeypatch):
    """6 steps straight, and 3 + a resume to 6 (EMA on): the same weights; the folder builds the unCLIP pipeline."""
    from safetensors.torch import load_file

    from ddpm_hub.training import prior_loop
    from ddpm_hub.training.main import main

    clip, config = tiny_clip_run(tmp_path / "clip"), tiny_prior_config(tmp_path / "prior-config")
    common = ["--pipeline", str(config), "--clip", str(clip), *TINY_PRIOR_RUN, "--use_ema", "--checkpointing_steps",
              "3", "--max_train_steps", "6", "--text_dropout_prob", "0.5"]  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main([*common, "--output_dir", str(straight)])
    save = prior_loop.save_prior_checkpoint

    def save_then_stop(run, step):
        save(run, step)
        raise Stop(step)

    monkeypatch.setattr(prior_loop, "save_prior_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        main([*common, "--output_dir", str(resumed)])
    monkeypatch.setattr(prior_loop, "save_prior_checkpoint", save)
    main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"])
    weights = [load_file(out / "prior" / "diffusion_pytorch_model.safetensors") for out in (straight, resumed)]
    assert_bit_identical(*weights)
    prior = PriorTransformer.from_pretrained(straight / "prior")
    assert not torch.equal(prior.clip_std, torch.zeros_like(prior.clip_std))  # the data's std, saved
    summary = json.loads((straight / "training_summary.json").read_text())
    assert summary["steps"] == 6 and 0 <= summary["prior"]["held_out"]["caption_accuracy"] <= 1
    assert json.loads((resumed / "training_summary.json").read_text())["resumed_from_step"] == 3
    with pytest.raises(UsageError, match="not a checkpoint of this prior"):
        main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest", "--text_dropout_prob",
              "0.2", "--max_train_steps", "9"])  # fmt: skip
    DDPMHubUnCLIPImageVariationPipeline.from_pipe(tiny_unclip()).save_pretrained(tmp_path / "decoder")
    pipeline = DDPMHubUnCLIPPipeline.from_stages(prior=straight, decoder=tmp_path / "decoder")
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline.config.prior_guidance_scale == 2.0 and pipeline.config.prior_num_inference_steps == 3
    assert draw(pipeline).shape == (4, 8, 16, 1)


# ----------------------------------------------------------------------------------------------------------------
# Measuring


@pytest.mark.slow
def test_the_text_accuracy_and_the_spread_of_a_prompt_measure_the_unclip_pipeline():
    from ddpm_hub.evaluation.unclip_accuracy import PriorGuided, prompt_spread, unclip_text_accuracy

    pipeline = tiny_unclip()
    call = PriorGuided(pipeline, decoder_guidance_scale=2.0, prior_num_inference_steps=2)
    images = call(2, [torch.Generator().manual_seed(i) for i in range(2)], "np", "3 left of 7", 3.0, 3).images
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    expected = pipeline(
        ["3 left of 7"] * 2, generator=generators, output_type="np", prior_guidance_scale=3.0,
        decoder_num_inference_steps=3, decoder_guidance_scale=2.0, prior_num_inference_steps=2,
    )  # fmt: skip
    np.testing.assert_array_equal(images, expected.images)
    rows = unclip_text_accuracy(pipeline, [1.0], 2.0, num_per_prompt=1, decoder_steps=2, prior_steps=2)
    assert rows[0]["guidance_scale"] == 1.0 and rows[0]["decoder_guidance_scale"] == 2.0
    assert 0 <= rows[0]["seen"] <= 1 and 0 <= rows[0]["unseen"] <= 1
    spread = prompt_spread(call, {"guidance_scale": 1.0, "num_inference_steps": 2}, [(3, 7), (1, 4)], per_prompt=3)
    assert spread["spread"] >= 0 and spread["real_spread"] > 0 and 0 <= spread["accuracy"] <= 1


def test_prior_options_are_refused_by_the_other_runs(tmp_path):
    """--clip given to a DDPM, a CLIP or an autoencoder run would be ignored: each refuses it by name."""
    from helpers import check

    with pytest.raises(UsageError, match="--clip: options of a prior"):
        check(["--clip", "runs/ddpm-unclip-digit-pairs-clip"])
    from ddpm_hub.training.options import options_given

    options, _ = parse_options(["--clip", "c", "--text_dropout_prob", "0.2", "--distill_from", "t", "--use_ema"])
    assert options_given(options, ("prior",)) == ["--clip", "--text_dropout_prob", "--distill_from"]
