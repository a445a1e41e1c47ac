"""unCLIP's first stage, a CLIP trained here (`ddpm_hub.loading.clip`, `ddpm_hub.training.clip*`,
`ddpm_hub.evaluation.clip_accuracy`): the contrastive loss by hand, the masked negatives and the gathered features,
where the text tower pools, the image preprocessing, loading by name and the refusals, an exact resume, the eval task,
two processes."""

import json
import math
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers
from helpers import check_ok, run_script
from huggingface_hub import HfApi
from PIL import Image
from safetensors.torch import load_file
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from ddpm_hub import cli
from ddpm_hub.data import DataOptions, digit_pairs
from ddpm_hub.errors import UsageError
from ddpm_hub.loading.clip import ImagePreprocessing, check_text_pooling, clip_word_tokenizer, load_clip
from ddpm_hub.loading.configs import PIPELINES_DIR, count_parameters
from ddpm_hub.loading.text import word_tokenizer
from ddpm_hub.training.clip import CaptionColumns, meaning_ids
from ddpm_hub.training.clip_loss import contrastive_loss, gather_with_local_grad, same_meaning
from ddpm_hub.training.main import main

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = [caption for a in range(10) for b in range(10) for caption in digit_pairs.captions_of(a, b)]
TINY_RUN = [
    "--dataset_name", "builtin:digit-pairs", "--max_images", "120", "--validation_holdout", "16",
    "--train_batch_size", "8", "--lr_warmup_steps", "2", "--learning_rate", "1e-3", "--num_validation_images", "4",
    "--logger", "none", "--seed", "3", "--cpu_threads", "1",
]  # fmt: skip


def tiny_config(eos_token_id: int, vocab_size: int) -> transformers.CLIPConfig:
    text = dict(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    text.update(max_position_embeddings=8, eos_token_id=eos_token_id, bos_token_id=eos_token_id, pad_token_id=0)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    vision.update(patch_size=8, num_channels=1)
    return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)


def tiny_clip_folder(folder, weights: bool = False):
    """A CLIP configuration (or, with `weights`, a trained-looking CLIP folder) for builtin:digit-pairs."""
    tokenizer = clip_word_tokenizer(CAPTIONS, max_length=8)
    config = tiny_config(tokenizer.eos_token_id, len(tokenizer))
    if weights:
        torch.manual_seed(0)
        transformers.CLIPModel(config).save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ImagePreprocessing(32, 1, (0.5,), (0.5,), (16, 32)).save(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# The objective


def hand_loss(text, image, scale, same=None) -> float:
    """CLIP's loss written out: for each text, -log of its image's share of exp(scale * cos); then for each image."""
    n, total = len(text), 0.0
    cos = [[sum(t * i for t, i in zip(text[a], image[b])) for b in range(n)] for a in range(n)]
    for a in range(n):
        for direction in (lambda x, y: cos[x][y], lambda x, y: cos[y][x]):
            kept = [b for b in range(n) if b == a or not (same and same[a][b])]
            denominator = sum(math.exp(scale * direction(a, b)) for b in kept)
            total += -math.log(math.exp(scale * direction(a, a)) / denominator)
    return total / (2 * n)


def test_the_contrastive_loss_against_a_hand_computation_and_transformers():
    generator = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(4, 3, generator=generator, dtype=torch.float64), dim=-1)
    image = torch.nn.functional.normalize(torch.randn(4, 3, generator=generator, dtype=torch.float64), dim=-1)
    logit_scale = torch.tensor(math.log(10.0), dtype=torch.float64)
    loss = contrastive_loss(text, image, logit_scale)
    assert float(loss) == pytest.approx(hand_loss(text.tolist(), image.tolist(), 10.0), rel=1e-12)
    assert float(loss) == pytest.approx(float(image_text_contrastive_loss(10.0 * text @ image.t())), rel=1e-12)
    same = [[False, False, True, False], [False, False, False, False], [True, False, False, False]] + [[False] * 4]
    masked = contrastive_loss(text, image, logit_scale, torch.tensor(same))
    assert float(masked) == pytest.approx(hand_loss(text.tolist(), image.tolist(), 10.0, same), rel=1e-12)


def test_images_of_the_same_pair_are_not_negatives():
    """Two canvases of one pair with the same embeddings: a wrong answer to each other unmasked, not masked."""
    meanings = meaning_ids(
        [digit_pairs.captions_of(3, 7), digit_pairs.captions_of(3, 7)[::-1], digit_pairs.captions_of(7, 3)]
    )
    assert meanings[0] == meanings[1] != meanings[2]
    same = same_meaning(meanings)
    assert same.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    decoded = DataOptions(dataset_name="builtin:digit-pairs", resolution=(16, 32), max_images=256).load(
        1, captions=True
    )
    batch = CaptionColumns().columns(decoded, "builtin:digit-pairs", "test")
    pairs = [texts[0] for texts in batch["captions"]]  # "{a} left of {b}": the pair
    expected = torch.tensor([[a == b for b in pairs] for a in pairs])
    assert torch.equal(same_meaning(batch["meaning"]), expected) and int(expected.sum()) > 256  # pairs repeat
    embeds = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    logit_scale = torch.tensor(math.log(100.0))
    assert float(contrastive_loss(embeds, embeds, logit_scale)) > 0.6 * math.log(2)  # the duplicates split 50/50
    assert float(contrastive_loss(embeds, embeds, logit_scale, same)) < 1e-6


def test_gathered_features_give_each_rank_its_share_of_the_global_gradient():
    """Two ranks simulated: each back-propagates the global loss times 2 through its own rows; DDP's mean of the two
    gradients is the gradient of the global loss on one process."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 3, generator=generator, requires_grad=True)
    inputs = torch.randn(2, 4, 5, generator=generator)  # [ranks x rows x features]
    meanings = torch.tensor([[0, 1, 2, 3], [1, 4, 5, 6]])

    def embeds(x):
        return torch.nn.functional.normalize(x @ weight, dim=-1)

    scale = torch.tensor(math.log(5.0))
    everything = embeds(inputs.reshape(8, 5))
    global_loss = contrastive_loss(everything, everything.flip(0), scale, same_meaning(meanings.reshape(8)))
    (expected,) = torch.autograd.grad(global_loss, weight)
    gradients = []
    for rank in range(2):
        local = embeds(inputs[rank])
        every_rank = embeds(inputs.reshape(8, 5)).detach()
        accelerator = SimpleNamespace(num_processes=2, process_index=rank, gather=lambda t, every=every_rank: every)
        text = gather_with_local_grad(accelerator, local)
        loss = contrastive_loss(text, text.flip(0), scale, same_meaning(meanings.reshape(8)))
        assert float(loss.detach()) == pytest.approx(float(global_loss.detach()), rel=1e-6)
        gradients.append(torch.autograd.grad(loss * 2, weight)[0])
    torch.testing.assert_close((gradients[0] + gradients[1]) / 2, expected)


# ----------------------------------------------------------------------------------------------------------------
# The components


def test_the_text_tower_pools_at_the_end_token():
    """clip_word_tokenizer's [EOS] is the largest id: pooled there with eos_token_id set or with the legacy 2."""
    tokenizer = clip_word_tokenizer(CAPTIONS, max_length=8)
    assert tokenizer.eos_token_id == len(tokenizer) - 1 and tokenizer.pad_token_id == 0
    tokens = tokenizer(["3 left of seven", "one right of 9", "zero left of 0"], padding=True, return_tensors="pt")
    ends = (tokens.input_ids == tokenizer.eos_token_id).int().argmax(dim=1)
    assert ends.tolist() == [4, 4, 4] and tokens.input_ids.shape[1] == 5
    cut = tokenizer(["3 left of seven left of 9 right of 2"], truncation=True).input_ids[0]
    assert len(cut) == 8 and cut[-1] == tokenizer.eos_token_id  # a long caption keeps its end token
    for eos in (tokenizer.eos_token_id, 2):
        torch.manual_seed(0)
        text = transformers.CLIPTextModel(tiny_config(eos, len(tokenizer)).text_config).eval()
        out = text(**tokens)
        torch.testing.assert_close(out.pooler_output, out.last_hidden_state[torch.arange(3), ends])
        check_text_pooling(text.config, tokenizer, "test")
    # The project's word tokenizer ends in id 2: the legacy pooling would read the largest word id instead
    words = word_tokenizer(CAPTIONS)
    legacy = transformers.CLIPTextModel(tiny_config(2, len(words)).text_config).eval()
    tokens = words(["3 left of seven"], return_tensors="pt")
    out = legacy(**tokens)
    assert tokens.input_ids[0, -1] == 2 and int(tokens.input_ids.argmax()) != 4
    assert not torch.allclose(out.pooler_output[0], out.last_hidden_state[0, -1])
    with pytest.raises(UsageError, match="pools at the largest id .* end token is id 2"):
        check_text_pooling(legacy.config, words, "test")


def test_canvases_are_padded_to_the_towers_square():
    preprocessing = ImagePreprocessing(32, 1, (0.5,), (0.5,), (16, 32))
    canvas = torch.full((2, 1, 16, 32), 255, dtype=torch.uint8)
    pixels = preprocessing.pixel_values(canvas)
    assert pixels.shape == (2, 1, 32, 32)
    assert bool((pixels[..., 8:24, :] == 1).all()) and bool((pixels[..., :8, :] == -1).all())
    assert bool((pixels[..., 24:, :] == -1).all())
    rgb = ImagePreprocessing(8, 3, (0.5,) * 3, (0.25,) * 3).pixel_values(torch.ones(1, 1, 16, 32))  # resized, cropped
    assert rgb.shape == (1, 3, 8, 8) and torch.allclose(rgb, torch.full_like(rgb, 2.0), atol=1e-5)


def test_a_clip_loads_from_a_folder_frozen_and_anything_else_is_refused(tmp_path):
    folder = tiny_clip_folder(tmp_path / "clip", weights=True)
    model, tokenizer, preprocessing = load_clip(folder)
    assert isinstance(model, transformers.CLIPModel) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert preprocessing == ImagePreprocessing(32, 1, (0.5,), (0.5,), (16, 32))
    assert tokenizer("3 left of 7").input_ids[-1] == len(tokenizer) - 1
    t5 = transformers.T5Config(vocab_size=26, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2)
    transformers.T5EncoderModel(t5).save_pretrained(tmp_path / "t5")
    with pytest.raises(UsageError, match=r"is a t5 model \(T5EncoderModel\), not a CLIP"):
        load_clip(tmp_path / "t5")
    with pytest.raises(UsageError, match="is a pipeline folder .*, not a CLIP"):
        load_clip(PIPELINES_DIR / "ddpm-tiny-8")
    with pytest.raises(UsageError, match="a configuration without weights: train it first"):
        load_clip(PIPELINES_DIR / "ddpm-unclip-digit-pairs-clip")
    ImagePreprocessing(32, 3, (0.5,) * 3, (0.5,) * 3).save(folder)
    with pytest.raises(UsageError, match=r"3-channel images of 32x32, and its vision tower takes 1 channel"):
        load_clip(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(UsageError, match="no tokenizer"):
        load_clip(folder)


def test_a_clip_loads_by_hub_name_with_its_preprocessing(hub_server, tmp_path):
    """By repo id from the loopback Hub: ours (image_preprocessing.json), and one laid out as OpenAI's CLIPs are (a
    preprocessor_config.json of CLIPImageProcessor, the legacy eos_token_id 2 and the end token the largest id)."""
    api = HfApi(token="hf_alice_write")
    ours, openai_like = f"alice/clip-{uuid.uuid4().hex[:8]}", f"alice/clip-{uuid.uuid4().hex[:8]}"
    folder = tiny_clip_folder(tmp_path / "ours", weights=True)
    for repo_id in (ours, openai_like):
        api.create_repo(repo_id)
    api.upload_folder(folder_path=folder, repo_id=ours)
    model, _, preprocessing = load_clip(ours)
    assert preprocessing.data_size == (16, 32) and not model.training
    expected = load_file(folder / "model.safetensors")
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in expected.items())
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "image_preprocessing.json").unlink()
    processor = {"crop_size": {"height": 32, "width": 32}, "image_mean": [0.48], "image_std": [0.27]}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    api.upload_folder(folder_path=folder, repo_id=openai_like)
    _, tokenizer, preprocessing = load_clip(openai_like)
    assert preprocessing == ImagePreprocessing(32, 1, (0.48,), (0.27,))
    assert tokenizer.eos_token_id == len(tokenizer) - 1


def test_the_shipped_configuration():
    folder = PIPELINES_DIR / "ddpm-unclip-digit-pairs-clip"
    config = transformers.CLIPConfig.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.CLIPModel(config)
    assert f"Parameters: {count_parameters(model):,}." in (folder / "README.md").read_text()
    check_text_pooling(config.text_config, tokenizer, "shipped")
    assert {word for caption in CAPTIONS for word in caption.split()} <= set(tokenizer.get_vocab())
    assert ImagePreprocessing.read(folder).data_size == (16, 32)


# ----------------------------------------------------------------------------------------------------------------
# Training


def test_options_of_other_runs_are_refused(tmp_path, capsys):
    folder = tiny_clip_folder(tmp_path / "clip")
    main(["--pipeline", str(folder), "--output_dir", str(tmp_path / "out"), "--dry-run", *TINY_RUN])
    report = json.loads(capsys.readouterr().out)
    assert report["pipeline_source"] == "CLIP configuration" and report["options"]["resolution"] == [16, 32]
    with pytest.raises(UsageError, match=r"--prediction_type: options of diffusion or autoencoder runs"):
        main(["--pipeline", str(folder), "--prediction_type", "v_prediction", "--dry-run"])
    with pytest.raises(UsageError, match="--random_flip: a flipped image"):
        main(["--pipeline", str(folder), "--random_flip", "--dry-run", *TINY_RUN])
    main(
        [
            "--config",
            str(ROOT / "training" / "configs" / "ddpm-unclip-digit-pairs-clip.yaml"),
            "--dry-run",
            "--output_dir",
            str(tmp_path / "run"),
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert report["options"]["pipeline"] == "ddpm-unclip-digit-pairs-clip" and report["options"]["cpu_threads"] == 1


class Stop(Exception):
    """Stands for a kill right after a checkpoint."""


def test_resume_is_bit_identical_and_the_folder_is_a_clip(tmp_path, monkeypatch, capsys):
    """6 steps straight, and 3 + a resume to 6 (EMA on): the same weights; the folder loads with plain transformers
    and `ddpm-hub eval --clip_accuracy` measures it."""
    from ddpm_hub.training import clip_loop

    folder = tiny_clip_folder(tmp_path / "clip")
    common = [
        "--pipeline",
        str(folder),
        *TINY_RUN,
        "--use_ema",
        "--checkpointing_steps",
        "3",
        "--max_train_steps",
        "6",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main([*common, "--output_dir", str(straight)])
    save = clip_loop.save_clip_checkpoint

    def save_then_stop(run, step):
        save(run, step)
        raise Stop(step)

    monkeypatch.setattr(clip_loop, "save_clip_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        main([*common, "--output_dir", str(resumed)])
    monkeypatch.setattr(clip_loop, "save_clip_checkpoint", save)
    main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"])
    weights = [load_file(out / "model.safetensors") for out in (straight, resumed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    summary = json.loads((straight / "training_summary.json").read_text())
    assert summary["steps"] == 6 and summary["validation"]["held_out_images"] == 16
    assert summary["validation"]["num_candidates"] <= 100 and summary["clip"]["tokenizer_size"] == 26
    assert json.loads((resumed / "training_summary.json").read_text())["resumed_from_step"] == 3
    model = transformers.CLIPModel.from_pretrained(straight)
    tokenizer = transformers.AutoTokenizer.from_pretrained(straight)
    assert model.config.text_config.eos_token_id == tokenizer.eos_token_id == 25
    assert (straight / "clip_retrieval.png").is_file() and (straight / "image_preprocessing.json").is_file()
    with pytest.raises(UsageError, match="not a checkpoint of this CLIP"):  # another model
        other = tiny_clip_folder(tmp_path / "other")
        json.loads((other / "config.json").read_text())
        config = json.loads((other / "config.json").read_text())
        config["projection_dim"] = 4
        (other / "config.json").write_text(json.dumps(config))
        main([*common, "--pipeline", str(other), "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"])
    capsys.readouterr()
    assert cli.main(["eval", str(straight), "--clip_accuracy", "--num_images", "20", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seen"]["num_images"] == 20 and result["unseen"]["num_images"] == 20
    assert 0 <= result["seen"]["accuracy"] <= 1 and set(result["seen"]["accuracy_per_form"]) == {
        "{a} left of {b}", "{a} left of {b} (words)", "{b} right of {a}", "{b} right of {a} (words)"
    }  # fmt: skip
    assert "| held-out canvases of seen pairs | 20 |" in (straight / "clip_accuracy.md").read_text()
    assert Image.open(straight / "clip_accuracy.png").size[1] > 0
    assert cli.main(["eval", str(straight), "--clip_accuracy", "--bpd"]) == 2


def test_held_out_canvases_are_new_and_unseen_canvases_have_the_unseen_pairs():
    from ddpm_hub.evaluation.clip_accuracy import digit_images, seen_canvases, unseen_canvases

    seen = seen_canvases(200)
    assert seen.images.shape == (200, 1, 16, 32) and not any(digit_pairs.is_unseen(*pair) for pair in seen.pairs)
    digits, labels = digit_images(16, 16)
    training = digit_pairs.compose(digits, labels, digit_pairs.NUM_CANVASES, captions=False)[0]
    as_rows = {bytes(canvas.flatten().tolist()) for canvas in training}
    assert not any(bytes(canvas.flatten().tolist()) in as_rows for canvas in seen.images)
    unseen = unseen_canvases(3)
    assert sorted(set(unseen.pairs)) == sorted(digit_pairs.unseen_pairs()) and len(unseen.pairs) == 30


@pytest.mark.slow
def test_two_processes_train_one_clip(tmp_path):
    """DDP (gloo, two processes on this CPU), the features gathered: the ranks end with the same weights."""
    folder, out = tiny_clip_folder(tmp_path / "clip"), tmp_path / "out"
    check_ok(run_script(["--pipeline", str(folder), *TINY_RUN, "--max_train_steps", "4", "--output_dir", str(out)], 2))
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_batch_size"] == 16
    assert len(set(summary["weights_sha256_per_rank"])) == 1 and len(summary["weights_sha256_per_rank"]) == 2
    model, _, _ = load_clip(out)
    assert model.config.projection_dim == 8
