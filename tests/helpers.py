"""Helpers shared by the test files (no tests here): launching training/train.py, reading what a run wrote, the
tiny settings that make a run take seconds, and the tiny models and files that tests of several features build."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import AutoencoderKL, UNet2DModel
from processes import run_process_group
from safetensors.torch import load_file
from warm_start import run_warm, warm_startable

from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler
from ddpm_hub.pipelines import Source
from ddpm_hub.training.checks import check_options
from ddpm_hub.training.options import parse_options

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "training" / "train.py"
LAUNCHER = ROOT / "tests" / "launch_train.py"  # train.py with test doubles: fault injection, a Hub stand-in
# A run small enough for seconds: 64 digits at 8x8 RGB, 45k parameters, 5-step sampling of 4 images.
TINY = [
    "--pipeline", "ddpm-tiny-8", "--max_train_samples", "64", "--train_batch_size", "4", "--lr_warmup_steps", "2",
    "--num_validation_images", "4", "--ddpm_num_inference_steps", "5", "--validation_steps", "0", "--logger", "none",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_script(
    args: list[str], processes: int = 1, script: Path = SCRIPT, env: dict | None = None, timeout: int = 180
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    if processes == 1:
        if warm_startable(env):  # as `python script *args`, without its imports (tests/warm_start.py)
            return run_warm(script, args, env, ROOT, timeout)
        command = [sys.executable, str(script), *args]
    else:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1"]
        launch += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
        launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        command = [*launch, str(script), *args]
    return run_process_group(command, timeout, cwd=ROOT, env=env)


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "training_summary.json").read_text())


def unet_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def check(argv: list[str]):
    return check_options(parse_options(argv)[0])


def conditional_config(tmp_path: Path, num_class_embeds: int = 11) -> Path:
    """ddpm-tiny-8 with a class embedding: the digits' 10 classes and the null label."""
    config = tmp_path / f"tiny-cond-{num_class_embeds}"
    if config.exists():
        return config
    shutil.copytree(ROOT / "pipelines" / "ddpm-tiny-8", config)
    unet_config = json.loads((config / "unet" / "config.json").read_text())
    (config / "unet" / "config.json").write_text(json.dumps({**unet_config, "num_class_embeds": num_class_embeds}))
    return config


def text_config(tmp_path: Path, encoder: str = "clip") -> Path:
    """
    A tiny text-to-image configuration: an 8 x 16 UNet2DConditionModel with cross-attention on a one-layer CLIP or
    T5 text encoder (built from its config), and the digit-pairs word tokenizer.
    """
    from transformers import CLIPTextConfig, T5Config

    config = tmp_path / f"tiny-text-{encoder}"
    if config.exists():
        return config
    shutil.copytree(ROOT / "pipelines" / "ddpm-digit-pairs-text", config)
    unet = json.loads((config / "unet" / "config.json").read_text())
    unet.update(sample_size=[8, 16], block_out_channels=[16, 32], layers_per_block=1, cross_attention_dim=24)
    unet.update(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], attention_head_dim=4)
    unet.update(up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"])
    (config / "unet" / "config.json").write_text(json.dumps(unet))
    vocabulary = len(json.loads((config / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"])
    shutil.rmtree(config / "text_encoder")
    if encoder == "clip":
        text = CLIPTextConfig(
            vocab_size=vocabulary, hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=2,
        )  # fmt: skip
        name = "CLIPTextModel"
    else:
        text = T5Config(
            vocab_size=vocabulary, d_model=24, d_kv=12, d_ff=48, num_layers=1, num_heads=2, pad_token_id=0,
            eos_token_id=2, decoder_start_token_id=0,
        )  # fmt: skip
        name = "T5EncoderModel"
    text.save_pretrained(config / "text_encoder")
    index = json.loads((config / "model_index.json").read_text())
    index["text_encoder"] = ["transformers", name]
    (config / "model_index.json").write_text(json.dumps(index))
    return config


WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def trained_folder(folder: Path) -> Path:
    Source.of("ddpm-tiny-8").build(seed=3).save_pretrained(folder)
    return folder


def conditional(num_classes: int = 10, null: int | None = 10, **settings) -> DDPMHubPipeline:
    """ddpm-tiny-8 with 11 class embeddings (random, distinct), `num_classes` named classes and the null label 10."""
    base = Source.of("ddpm-tiny-8").build(seed=0, unet_overrides={"num_class_embeds": 11})
    with torch.no_grad():
        base.unet.class_embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    names = {i: f"c{i}" for i in range(num_classes)}
    pipeline = DDPMHubPipeline(base.unet, base.scheduler, id2label=names, null_class_label=null, **settings)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def error_of(capsys) -> str:
    """The one line a command printed to stderr (progress bars aside)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


def sample_into(model, out, *extra) -> list[str]:
    return ["sample", str(model), "--num_images", "3", "--steps", "1", "--output_dir", str(out), *extra]


def labelled_shards(folder, labels: list, names: list[str] | None = None):
    """One parquet shard of 8x8 images (red = the row's number) with `labels` (a ClassLabel column with `names`)."""
    import io

    import datasets
    from PIL import Image

    def png(value: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (value * 10, 0, 0)).save(buffer, format="PNG")
        return buffer.getvalue()

    label = datasets.ClassLabel(names=names) if names else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label})
    rows = {"image": [{"bytes": png(i), "path": f"row{i}.png"} for i in range(len(labels))], "label": labels}
    folder.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def tiny_vae(channels: int = 1, scaling_factor: float = 1.0, shift_factor: float | None = None, seed: int = 0):
    """An AutoencoderKL with f = 4 (three blocks) and 4 latent channels, small enough for a test."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        mid_block_add_attention=False,
    ).eval()


def tiny_latent_pipeline(vae=None, seed: int = 0) -> DDPMHubPipeline:
    """A UNet on the 4x4x4 latents of `vae` (default `tiny_vae()`): 16x16 images; random weights."""
    vae = vae if vae is not None else tiny_vae()
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    ).eval()
    pipeline = DDPMHubPipeline(unet=unet, scheduler=DDPMHubScheduler(num_train_timesteps=100), vae=vae)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class GaussianDenoiser(torch.nn.Module):
    """
    The optimal model of N(mu, s^2) data (each value), predicting epsilon or v from its exact
    E[x_0 | x_t] = mu + alpha s^2 (x_t - alpha mu) / (alpha^2 s^2 + sigma^2): the teacher of the distillation tests.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, prediction: str, mu: float = 0.0, s: float = 0.25):
        super().__init__()
        self.alphas_cumprod, self.prediction, self.mu, self.s = alphas_cumprod.double(), prediction, mu, s

    def forward(self, x, t):
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        x_0 = self.mu + alpha * self.s**2 * (x.double() - alpha * self.mu) / (alpha_bar * self.s**2 + sigma**2)
        eps = (x.double() - alpha * x_0) / sigma
        out = eps if self.prediction == "epsilon" else alpha * eps - sigma * x_0
        return SimpleNamespace(sample=out.to(x.dtype))
