"""
A tiny CNN classifier of scikit-learn's 8x8 digits (``builtin:digits`` at 16 x 16), for offline quality measurement.

Inception cannot be downloaded everywhere, so for digit models this module provides (a) the share of samples
classified as the requested label, (b) penultimate-layer features for an offline FID-like Frechet distance, and
(c) the class balance of unconditional samples. The weights are never downloaded: ``python -m
ddpm_hub.evaluation.digit_classifier`` (or the first ``load_digit_classifier()``) trains them deterministically in a
few seconds on one CPU core and caches them as safetensors.
"""

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

CLASSIFIER_VERSION = "1"  # bump when the architecture, data or training changes: cached weights are then retrained
WEIGHTS_FILE = "digit_classifier.safetensors"
REPORT_FILE = "digit_classifier.json"
RESOLUTION = 16
NUM_CLASSES = 10


class DigitClassifier(torch.nn.Module):
    """Two conv blocks and a 64-d penultimate layer on ``[N x 1 x 16 x 16]`` images in [-1, 1]."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32 * 4 * 4, self.feature_dim)
        self.head = torch.nn.Linear(self.feature_dim, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[N x 64]`` of images ``[N x 1 x 16 x 16]``."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N x 10]`` of images ``[N x 1 x 16 x 16]``."""
        return self.head(self.features(x))


def load_digits_dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 digits as uint8 ``[N x 1 x 16 x 16]`` (white on black) and their labels int64 ``[N]``."""
    from sklearn.datasets import load_digits

    from ..data import load_image_tensor

    images, _ = load_image_tensor("builtin:digits", resolution=RESOLUTION, channels=1)
    labels = torch.as_tensor(load_digits().target, dtype=torch.int64)
    if len(images) != len(labels):
        raise RuntimeError(f"builtin:digits gave {len(images)} images for {len(labels)} labels.")
    return images, labels


def digit_split(num_images: int, heldout: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``range(num_images)``: (training indices, ``heldout`` held-out indices), both sorted."""
    if not 0 < heldout < num_images:
        raise ValueError(f"heldout must be in (0, {num_images}), got {heldout}.")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    return order[heldout:].sort().values, order[:heldout].sort().values


def prepare(images_uint8: torch.Tensor) -> torch.Tensor:
    """
    uint8 images ``[N x C x H x W]`` (C = 1, or 3 for RGB, converted to luma 0.299 R + 0.587 G + 0.114 B) -> float
    ``[N x 1 x 16 x 16]`` in [-1, 1], resized (antialiased bilinear, aspect ratio ignored) when H x W is not 16 x 16.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 or images_uint8.shape[1] not in (1, 3):
        raise ValueError(
            f"expected uint8 [N x C x H x W] with C = 1 or 3, got {images_uint8.dtype} {list(images_uint8.shape)}."
        )
    x = images_uint8.float()
    if x.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        x = (x * luma).sum(1, keepdim=True)
    if tuple(x.shape[-2:]) != (RESOLUTION, RESOLUTION):
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 255) / 127.5 - 1


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 1 pixel, partial 3x3 blur and Gaussian noise on a batch ``[B x 1 x 16 x 16]``."""
    b, size = len(x), RESOLUTION
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    offsets = torch.randint(0, 3, (2, b), generator=generator)
    rows = (offsets[0, :, None] + torch.arange(size))[:, :, None]
    cols = (offsets[1, :, None] + torch.arange(size))[:, None, :]
    x = padded[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)
    kernel = (torch.tensor([1.0, 2.0, 1.0])[:, None] * torch.tensor([1.0, 2.0, 1.0]) / 16).view(1, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), value=-1.0), kernel)
    strength = torch.rand(b, 1, 1, 1, generator=generator) * (torch.rand(b, 1, 1, 1, generator=generator) < 0.5)
    x = x + strength * (blurred - x)
    noise_std = 0.15 * torch.rand(b, 1, 1, 1, generator=generator)
    return (x + noise_std * torch.randn(x.shape, generator=generator)).clamp(-1, 1)


def train_digit_classifier(seed: int = 0, epochs: int = 40, heldout: int = 400) -> tuple[DigitClassifier, dict]:
    """
    Train a ``DigitClassifier`` deterministically on one thread, on the digits minus a seeded held-out split of
    ``heldout`` images. Returns the model in eval mode and ``{"heldout_accuracy", "num_train", "num_heldout", "seed",
    "epochs", "seconds"}``.
    """
    start = time.perf_counter()
    images, labels = load_digits_dataset()
    train_idx, heldout_idx = digit_split(len(images), heldout, seed)
    x_train, y_train = prepare(images[train_idx]), labels[train_idx]
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitClassifier()
        batch_size = 64
        steps = epochs * -(-len(x_train) // batch_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.2)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x_train), generator=generator)
            for i in range(0, len(order), batch_size):
                batch = order[i : i + batch_size]
                loss = F.cross_entropy(model(_augment(x_train[batch], generator)), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()
        predicted, _ = classify(model, images[heldout_idx])
    finally:
        torch.set_num_threads(threads)
    report = {
        "heldout_accuracy": float((predicted == labels[heldout_idx]).float().mean()),
        "num_train": len(train_idx),
        "num_heldout": len(heldout_idx),
        "seed": seed,
        "epochs": epochs,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return model, report


def default_cache_dir() -> Path:
    """``$DDPM_HUB_CACHE``, else ``~/.cache/ddpm_hub``."""
    return Path(os.environ.get("DDPM_HUB_CACHE") or Path.home() / ".cache" / "ddpm_hub")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through ``write(temporary_path)`` in the same folder, then rename onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(cache_dir: Path) -> tuple[DigitClassifier, dict] | None:
    """The cached model and report, or None when absent, stale (other version) or not matching its report."""
    weights, report_path = cache_dir / WEIGHTS_FILE, cache_dir / REPORT_FILE
    try:
        report = json.loads(report_path.read_text())
        if report.get("version") != CLASSIFIER_VERSION or report.get("weights_sha256") != _sha256(weights):
            return None
        model = DigitClassifier()
        model.load_state_dict(load_file(weights))
    except (OSError, ValueError, RuntimeError, AttributeError):
        return None
    return model.eval(), report


def load_digit_classifier(
    cache_dir: str | os.PathLike | None = None, retrain: bool = False
) -> tuple[DigitClassifier, dict]:
    """
    The classifier (eval mode) and its training report from ``cache_dir`` (default: ``default_cache_dir()``). When
    the files are missing, unreadable, from another ``CLASSIFIER_VERSION``, or ``retrain`` is set, train it with
    ``train_digit_classifier()`` and save ``digit_classifier.safetensors`` + ``digit_classifier.json`` atomically.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not retrain and (cached := _load_cached(cache_dir)) is not None:
        return cached
    model, report = train_digit_classifier()
    cache_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    weights = cache_dir / WEIGHTS_FILE
    _atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"version": CLASSIFIER_VERSION}))
    report = {**report, "version": CLASSIFIER_VERSION, "weights_sha256": _sha256(weights)}
    _atomic_write(cache_dir / REPORT_FILE, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    return model.eval(), report


@torch.no_grad()
def classify(
    model: DigitClassifier, images_uint8: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``[N x C x H x W]`` -> predicted labels int64 ``[N]`` and class probabilities ``[N x 10]``."""
    device = next(model.parameters()).device
    chunks = images_uint8.split(batch_size)
    logits = [model(prepare(chunk.to(device))) for chunk in chunks]
    probabilities = torch.cat(logits).softmax(-1).cpu() if logits else torch.zeros(0, NUM_CLASSES)
    return probabilities.argmax(-1), probabilities


def digit_feature_extractor(model: DigitClassifier | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """
    A feature extractor for ``ddpm_hub.evaluation.sweep``: uint8 ``[N x C x H x W]`` (C = 1 or 3) -> float ``[N x 64]``
    penultimate activations. Default model: ``load_digit_classifier()``.
    """
    if model is None:
        model, _ = load_digit_classifier()
    model.eval()
    device = next(model.parameters()).device

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        return model.features(prepare(images.to(device)))

    return extract


def class_balance(labels: torch.Tensor) -> dict:
    """
    Class shares of labels ``[N]`` in 0..9: ``{"num_samples", "shares": [10 floats],
    "total_variation_from_uniform": 0.5 * sum |share - 0.1|}`` (0 when balanced, 0.9 when all in one class).
    """
    labels = torch.as_tensor(labels).flatten()
    if len(labels) == 0 or labels.is_floating_point() or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"labels must be a non-empty integer tensor with values in 0..{NUM_CLASSES - 1}.")
    shares = torch.bincount(labels.long().cpu(), minlength=NUM_CLASSES).double() / len(labels)
    return {
        "num_samples": len(labels),
        "shares": shares.tolist(),
        "total_variation_from_uniform": float(0.5 * (shares - 1 / NUM_CLASSES).abs().sum()),
    }


def main(argv: list[str] | None = None) -> dict:
    """``python -m ddpm_hub.evaluation.digit_classifier [--cache_dir DIR] [--retrain]``: print the report as one JSON
    line."""
    parser = argparse.ArgumentParser(description="Train (or load) the digit classifier; print its report as JSON.")
    parser.add_argument("--cache_dir", default=None, help="default: $DDPM_HUB_CACHE or ~/.cache/ddpm_hub")
    parser.add_argument("--retrain", action="store_true", help="train again even when cached weights exist")
    args = parser.parse_args(argv)
    cache_dir = Path(args.cache_dir) if args.cache_dir is not None else default_cache_dir()
    _, report = load_digit_classifier(cache_dir, retrain=args.retrain)
    print(json.dumps(report := {**report, "weights": str(cache_dir / WEIGHTS_FILE)}))
    return report


if __name__ == "__main__":
    main()
