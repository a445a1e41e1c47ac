"""Sample quality and the `ddpm-hub eval` command: FID and KID against a dataset, the sampler sweep (quality and
images/s against the number of UNet evaluations), and the likelihood report of `ddpm_hub.likelihood`.

    ddpm-hub eval MODEL --bpd                                  # bits/dim, full chain: JSON + bits_per_timestep.png
    ddpm-hub eval MODEL --bpd --bpd_steps 50 --bpd_estimator sampled          # ... estimated with 50 UNet calls
    ddpm-hub eval MODEL --fid --num_images 10000 --steps 250   # FID / KID of one sampler
    ddpm-hub eval MODEL --sweep --num_images 10000             # sweep.md + sweep.json for the model card

Results go to `--output_dir`, by default the trained MODEL folder itself: `metrics.json` (bpd, fid, kid; merged
with what is there), `bpd.json` + `bits_per_timestep.png`, `fid.json`, `sweep.md` + `sweep.json`. The model card
(`ddpm_hub.model_card`) reads `metrics.json` and `sweep.md` from that folder.

FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) are computed here from features, in float64: FID through
the eigenvalues of sqrt(S_a) S_b sqrt(S_a) (the same value as scipy's sqrtm formula, without its complex round-off),
KID as the unbiased MMD^2 with the cubic polynomial kernel averaged over random subsets (torch-fidelity's
definition). The features come from a feature extractor passed in, by default torch-fidelity's Inception-v3
(`inception_feature_extractor`): the port of the TensorFlow FID network, so the numbers compare with papers.
torch-fidelity needs torchvision, hence the optional `metrics` extra; without it, or offline without the weights,
`FeatureExtractorUnavailable` says what to do.
"""

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from .configs import load_or_build_pipeline
from .images import to_uint8
from .scheduling_ddpm_hub import DDPMHubScheduler

# uint8 images [N x 3 x H x W] -> float features [N x D]
FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_FEATURES = "2048"  # the pool3 features FID and KID are defined on
METRICS_FILE = "metrics.json"  # read by ddpm_hub.model_card


class FeatureExtractorUnavailable(RuntimeError):
    """The Inception network cannot be built here: torch-fidelity missing, or its weights not downloadable."""


# ----------------------------------------------------------------------------------------------------------------
# Features


def inception_feature_extractor(
    weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """
    torch-fidelity's Inception-v3 (`inception-v3-compat`, pool3, 2048 features), as a function of uint8 images.

    Args:
        weights_path: a local copy of the weights file (`weights-inception-2015-12-05-6726825d.pth`); default:
            torch-fidelity's normal download into the torch hub cache ($TORCH_HOME/hub/checkpoints).
        device: where the network runs.

    Raises:
        FeatureExtractorUnavailable: torch-fidelity is not installed, or the weights cannot be downloaded.
        FileNotFoundError / ValueError: `weights_path` is missing or is not a plain tensor state dict.
    """
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
    except ImportError as error:
        raise FeatureExtractorUnavailable(
            f"FID and KID use torch-fidelity's Inception-v3, which is not importable here ({error}). Install it with "
            "`pip install 'ddpm-hub[metrics]'` (torch-fidelity, which needs torchvision built for your torch)."
        ) from error
    if weights_path is not None:
        _check_weights_file(weights_path)
    try:
        network = FeatureExtractorInceptionV3(
            INCEPTION_NAME,
            [INCEPTION_FEATURES],
            feature_extractor_weights_path=None if weights_path is None else str(weights_path),
        )
    except (OSError, RuntimeError) as error:  # URLError, socket and HTTP errors are OSErrors; a bad hash RuntimeError
        raise FeatureExtractorUnavailable(
            f"Could not get the Inception-v3 weights ({type(error).__name__}: {error}). This machine may be offline: "
            f"download {URL_INCEPTION_V3} elsewhere and pass it with --inception_weights PATH "
            "(inception_feature_extractor(weights_path=...)), or put it in $TORCH_HOME/hub/checkpoints/."
        ) from error
    network = network.to(device)

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        return network(images.to(device))[0]

    return extract


def _check_weights_file(weights_path: str | os.PathLike) -> None:
    """The weights must be a state dict of tensors: load it with the safe unpickler before torch-fidelity does."""
    if not Path(weights_path).is_file():
        raise FileNotFoundError(f"Inception weights file {str(weights_path)!r} does not exist.")
    try:
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{weights_path} is not a PyTorch state dict of tensors ({type(error).__name__}: {error}); expected "
            "torch-fidelity's weights-inception-2015-12-05-6726825d.pth."
        ) from error
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{weights_path} holds {type(state_dict).__name__}, not a state dict of tensors.")


def extract_features(images: torch.Tensor, feature_extractor: FeatureExtractor, batch_size: int = 64) -> np.ndarray:
    """
    Features of uint8 images `[N x C x H x W]` -> float64 `[N x D]`. One-channel images are repeated to RGB, as the
    Inception network expects (it resizes to 299 x 299 itself).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be uint8 [N x C x H x W] with C = 1 or 3, got {images.dtype} {list(images.shape)}."
        )
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    chunks = [feature_extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    features = torch.cat([c.reshape(c.shape[0], -1) for c in chunks]).detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(features).all():
        raise ValueError("the feature extractor returned non-finite features.")
    return features


# ----------------------------------------------------------------------------------------------------------------
# FID and KID


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and covariance `[D x D]` (unbiased, ddof = 1) of features `[N x D]`, N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID needs features [N x D] with N >= 2, got shape {list(features.shape)}.")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance_from_statistics(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """
    Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b):
    ||mu_a - mu_b||^2 + Tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^(1/2)).

    Tr (S_a S_b)^(1/2) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD matrix with the same
    eigenvalues as S_a S_b, so the trace is real by construction.
    """
    sqrt_a = _psd_sqrt(sigma_a)
    middle = sqrt_a @ sigma_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    fid = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * trace_sqrt
    return float(max(fid, 0.0))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID when the features are Inception pool3 features: the Frechet distance of their Gaussian fits."""
    return frechet_distance_from_statistics(*feature_statistics(features_a), *feature_statistics(features_b))


def polynomial_mmd2_unbiased(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel k(x, y) = (x . y / D + 1)^3 (KID's kernel), `[m x D]` and `[n x D]`."""
    dim = features_a.shape[1]
    k_aa = (features_a @ features_a.T / dim + 1) ** 3
    k_bb = (features_b @ features_b.T / dim + 1) ** 3
    k_ab = (features_a @ features_b.T / dim + 1) ** 3
    m, n = len(features_a), len(features_b)
    return float(
        (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1)) + (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1)) - 2 * k_ab.mean()
    )


def kernel_inception_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """
    KID: mean and standard deviation of the unbiased polynomial MMD^2 over `num_subsets` random subsets of
    `min(subset_size, N_a, N_b)` features from each set, drawn without replacement (torch-fidelity's protocol).
    """
    size = min(subset_size, len(features_a), len(features_b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {len(features_a)} and {len(features_b)}.")
    rng = np.random.default_rng(seed)
    mmds = [
        polynomial_mmd2_unbiased(
            features_a[rng.choice(len(features_a), size, replace=False)],
            features_b[rng.choice(len(features_b), size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(mmds)), float(np.std(mmds))


def sample_quality(
    generated_features: np.ndarray, reference_features: np.ndarray, kid_subset_size: int = 1000, seed: int = 0
) -> dict:
    """FID and KID of generated against reference features, with the set sizes (small sets bias FID upwards)."""
    kid_mean, kid_std = kernel_inception_distance(
        generated_features, reference_features, subset_size=kid_subset_size, seed=seed
    )
    return {
        "fid": frechet_distance(generated_features, reference_features),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "num_generated": len(generated_features),
        "num_reference": len(reference_features),
    }


# ----------------------------------------------------------------------------------------------------------------
# Samplers and the sweep


@dataclass(frozen=True)
class Sampler:
    """A scheduler to sample with, and its number of steps. `name`: one of `SAMPLER_CLASSES`."""

    name: str
    steps: int

    @property
    def label(self) -> str:
        return SAMPLER_LABELS[self.name]

    def __str__(self) -> str:
        return f"{self.name}-{self.steps}"


SAMPLER_CLASSES = {"ddpm": DDPMHubScheduler, "ddim": DDIMScheduler, "dpmsolver++": DPMSolverMultistepScheduler}
SAMPLER_KWARGS = {"dpmsolver++": {"algorithm_type": "dpmsolver++", "solver_order": 2}}
SAMPLER_LABELS = {"ddpm": "DDPM ancestral", "ddim": "DDIM (eta = 0)", "dpmsolver++": "DPM-Solver++ (2M)"}
DEFAULT_SWEEP = (
    Sampler("ddpm", 1000),
    Sampler("ddpm", 250),
    Sampler("ddpm", 50),
    Sampler("ddim", 50),
    Sampler("ddim", 20),
    Sampler("dpmsolver++", 20),
    Sampler("dpmsolver++", 10),
)


def parse_sampler(text: str) -> Sampler:
    """`"ddim-50"` -> Sampler("ddim", 50)."""
    name, _, steps = text.strip().rpartition("-")
    if name not in SAMPLER_CLASSES or not steps.isdigit() or int(steps) < 1:
        raise ValueError(
            f"Unknown sampler {text!r}: write NAME-STEPS with NAME one of {', '.join(SAMPLER_CLASSES)} "
            "(e.g. ddpm-250, ddim-50, dpmsolver++-20)."
        )
    return Sampler(name, int(steps))


def with_sampler(pipeline, name: str):
    """A new pipeline sharing `pipeline.unet`, with the sampler built by `XScheduler.from_config(scheduler.config)`."""
    if name not in SAMPLER_CLASSES:
        raise ValueError(f"Unknown sampler {name!r}; valid choices are: {', '.join(SAMPLER_CLASSES)}.")
    scheduler = SAMPLER_CLASSES[name].from_config(pipeline.scheduler.config, **SAMPLER_KWARGS.get(name, {}))
    swapped = type(pipeline)(unet=pipeline.unet, scheduler=scheduler)
    swapped.set_progress_bar_config(disable=True)
    return swapped


@torch.no_grad()
def generate_images(
    pipeline, num_images: int, steps: int, seed: int = 0, batch_size: int = 64
) -> tuple[torch.Tensor, dict]:
    """
    `num_images` samples as uint8 `[N x C x H x W]` (round(255 x), as PIL saves them), and the timing: image i uses
    `torch.Generator().manual_seed(seed + i)`, so it is the same whatever the batch size, and every sampler starts
    from the same x_T. Returns `(images, {"seconds", "images_per_second", "nfe"})`, NFE counted as UNet calls.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}.")
    calls = []
    hook = pipeline.unet.register_forward_hook(lambda *_: calls.append(1))
    batches, start_time = [], time.perf_counter()
    try:
        for start in range(0, num_images, batch_size):
            count = min(batch_size, num_images - start)
            generator = [torch.Generator().manual_seed(seed + start + i) for i in range(count)]  # CPU: any device
            images = pipeline(batch_size=count, num_inference_steps=steps, generator=generator, output_type="pt")
            batches.append(to_uint8(images.images).cpu())
    finally:
        hook.remove()
    seconds = time.perf_counter() - start_time
    timing = {"seconds": seconds, "images_per_second": num_images / seconds, "nfe": len(calls) // len(batches)}
    return torch.cat(batches), timing


def sampler_sweep(
    pipeline,
    reference_features: np.ndarray,
    feature_extractor: FeatureExtractor,
    num_images: int,
    samplers: Sequence[Sampler] = DEFAULT_SWEEP,
    seed: int = 0,
    batch_size: int = 64,
    kid_subset_size: int = 1000,
) -> list[dict]:
    """One row per sampler: FID, KID, NFE and images/s for `num_images` samples against `reference_features`."""
    rows = []
    for sampler in samplers:
        images, timing = generate_images(
            with_sampler(pipeline, sampler.name), num_images, sampler.steps, seed, batch_size
        )
        quality = sample_quality(
            extract_features(images, feature_extractor), reference_features, kid_subset_size, seed
        )
        rows.append({"sampler": sampler.name, "label": sampler.label, "steps": sampler.steps, **timing, **quality})
    return rows


def sweep_markdown(rows: list[dict], settings: dict) -> str:
    """The Markdown table the model card includes, with the settings that produced it underneath."""
    lines = [
        "| sampler | steps | NFE | FID ↓ | KID × 10³ ↓ | images/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['steps']} | {row['nfe']} | {row['fid']:.2f} | "
            f"{1e3 * row['kid_mean']:.2f} ± {1e3 * row['kid_std']:.2f} | {row['images_per_second']:.2f} |"
        )
    setup = f"device: {settings['device']}"
    if settings.get("batch_size"):
        setup += f", batch size {settings['batch_size']}"
    lines += [
        "",
        f"{settings['num_images']} generated images per sampler against {settings['num_reference']} images of "
        f"{settings['dataset']}; features: {settings['features']}; {setup}. FID and KID of small sets are biased "
        "upwards: compare rows of one table, not numbers from other papers.",
    ]
    if settings.get("command"):
        lines += ["", f"Produced by `{settings['command']}`."]
    return "\n".join(lines) + "\n"


def write_sweep(rows: list[dict], settings: dict, output_dir: str | os.PathLike) -> dict:
    """`sweep.md` and `sweep.json` in `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown, data = output_dir / "sweep.md", output_dir / "sweep.json"
    markdown.write_text(sweep_markdown(rows, settings))
    data.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    return {"markdown": str(markdown), "json": str(data)}


# ----------------------------------------------------------------------------------------------------------------
# The `ddpm-hub eval` command


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ddpm-hub eval` (the dataset options are those of training)."""
    parser.add_argument("model", help="a trained pipeline folder, a Hub repo id, or a pipelines/<name> configuration")
    tasks = parser.add_argument_group("what to measure (at least one)")
    tasks.add_argument("--bpd", action="store_true", help="the variational bound in bits/dim on the dataset")
    tasks.add_argument("--fid", action="store_true", help="FID and KID of --num_images samples from --sampler")
    tasks.add_argument("--sweep", action="store_true", help="FID, KID and images/s for every sampler in --samplers")

    data = parser.add_argument_group("dataset (as in training)")
    data.add_argument(
        "--dataset_name",
        default=None,
        help="a Hub dataset name or builtin:digits (default: builtin:digits, unless --train_data_dir is given)",
    )
    data.add_argument("--train_data_dir", default=None, help="a folder of images (instead of --dataset_name)")
    data.add_argument("--image_column", default=None, help="image column of a Hub dataset (default: detected)")
    data.add_argument("--dataset_split", "--split", default="train", help="split of a Hub dataset (default: train)")
    data.add_argument("--cache_dir", default=None, help="datasets cache folder")
    data.add_argument("--center_crop", action=argparse.BooleanOptionalAction, default=True, help="centre crop")
    data.add_argument("--max_images", type=int, default=None, help="use the first N dataset images (default: all)")

    options = parser.add_argument_group("settings")
    options.add_argument(
        "--bpd_steps", type=int, default=None, help="K < T steps for a cheaper --bpd (default: the full chain of T)"
    )
    options.add_argument(
        "--bpd_estimator",
        choices=("strided", "sampled"),
        default="strided",
        help="with --bpd_steps: the strided bound of the K-step chain, or the stratified sampled estimate of the full "
        "chain (default: strided)",
    )
    options.add_argument("--num_images", type=int, default=1000, help="samples per sampler for FID (default: 1000)")
    options.add_argument("--sampler", default="ddpm", choices=list(SAMPLER_CLASSES), help="--fid sampler")
    options.add_argument("--steps", type=int, default=1000, help="--fid sampler steps (default: 1000)")
    options.add_argument(
        "--samplers",
        default=",".join(map(str, DEFAULT_SWEEP)),
        help=f"--sweep samplers, NAME-STEPS comma separated (default: {','.join(map(str, DEFAULT_SWEEP))})",
    )
    options.add_argument("--inception_weights", default=None, help="local Inception weights (default: download)")
    options.add_argument("--kid_subset_size", type=int, default=1000, help="KID subset size (default: 1000)")
    options.add_argument("--batch_size", type=int, default=64, help="images per UNet call (default: 64)")
    options.add_argument("--seed", type=int, default=0, help="noise seed; sample i uses seed + i (default: 0)")
    options.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    options.add_argument(
        "--output_dir",
        default=None,
        help="where metrics.json, the plot and the table go (default: MODEL itself when it is a trained folder, "
        "so that `ddpm-hub push` puts them on the model card; else ./eval)",
    )


def run_eval(args: argparse.Namespace) -> int:
    """`ddpm-hub eval`: load the model and the dataset once, run the requested measurements, print JSON."""
    if not (args.bpd or args.fid or args.sweep):
        raise ValueError("nothing to do: pass --bpd, --fid and/or --sweep.")
    if args.dataset_name and args.train_data_dir:
        raise ValueError(
            f"Give one image source: --dataset_name {args.dataset_name!r} or --train_data_dir {args.train_data_dir!r}."
        )
    args.dataset_name = args.dataset_name or (None if args.train_data_dir else "builtin:digits")
    samplers = [parse_sampler(s) for s in args.samplers.split(",")] if args.sweep else []
    feature_extractor = None
    if args.fid or args.sweep:  # before any slow work: offline without the Inception weights fails here
        try:
            feature_extractor = inception_feature_extractor(args.inception_weights, args.device)
        except FeatureExtractorUnavailable as error:
            print(f"ddpm-hub eval: error: {error}", file=sys.stderr)
            return 2
    pipeline = load_or_build_pipeline(args.model, args.seed).to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    images = _load_dataset(args, pipeline.unet)
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(args.model)
    report = {"model": args.model, "dataset": _dataset_label(args), "output_dir": str(output_dir)}
    if args.bpd:
        report["bpd"] = _eval_bpd(pipeline, images, args, output_dir)
    if feature_extractor is not None:
        report.update(_eval_sample_quality(pipeline, images, feature_extractor, samplers, args, output_dir))
    report["metrics"] = str(update_metrics_file(output_dir, _metric_entries(report, args)))
    print(json.dumps(report, indent=2))
    return 0


def update_metrics_file(output_dir: str | os.PathLike, entries: dict) -> Path:
    """Merge `entries` into `output_dir/metrics.json` (the model card's metrics): a new run replaces its own keys."""
    path = Path(output_dir) / METRICS_FILE
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    if not isinstance(metrics, dict):
        raise ValueError(f"{path} must hold a JSON object; move it away to start a new one.")
    metrics.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def _metric_entries(report: dict, args: argparse.Namespace) -> dict:
    """metrics.json entries: `bpd`, `fid`, `kid`, each with its value, spread, image count, method and dataset."""
    dataset = {"dataset": args.train_data_dir or args.dataset_name, "split": _split(args)}
    entries = {}
    if "bpd" in report:
        bpd = report["bpd"]
        kept = ("bits_per_dim", "standard_error", "num_images", "bound", "prior_bpd", "decoder_bpd")
        entries["bpd"] = {**{key: bpd[key] for key in kept}, **dataset, "seed": args.seed}
    if "fid" in report:
        row = report["fid"]
        method = (
            f"{row['label']}, {row['steps']} steps; {row['num_generated']} samples against {row['num_reference']} "
            f"dataset images; {INCEPTION_NAME} features (torch-fidelity)"
        )
        common = {"num_images": row["num_generated"], "method": method, **dataset, "seed": args.seed}
        entries["fid"] = {"value": row["fid"], **common}
        entries["kid"] = {"value": row["kid_mean"], "std": row["kid_std"], **common}
    return entries


def _split(args: argparse.Namespace) -> str | None:
    """The dataset split, for Hub datasets only (a folder or the built-in digits has none)."""
    return None if args.train_data_dir or args.dataset_name.startswith("builtin:") else args.dataset_split


def _default_output_dir(model: str) -> Path:
    return Path(model) if any(Path(model, "unet").glob("*.safetensors")) else Path("eval")


def _eval_sample_quality(
    pipeline, images: torch.Tensor, feature_extractor: FeatureExtractor, samplers, args, output_dir: Path
) -> dict:
    """--fid: one sampler, `fid.json`; --sweep: every sampler, `sweep.md` + `sweep.json`. One reference set."""
    reference = extract_features(images, feature_extractor, args.batch_size)
    settings = _sweep_settings(args, len(reference))
    options = dict(seed=args.seed, batch_size=args.batch_size, kid_subset_size=args.kid_subset_size)
    report = {}
    if args.fid:
        fid_sampler = [Sampler(args.sampler, args.steps)]
        (row,) = sampler_sweep(pipeline, reference, feature_extractor, args.num_images, fid_sampler, **options)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "fid.json").write_text(json.dumps({"settings": settings, **row}, indent=2) + "\n")
        report["fid"] = {**row, "json": str(output_dir / "fid.json")}
    if args.sweep:
        rows = sampler_sweep(pipeline, reference, feature_extractor, args.num_images, samplers, **options)
        report["sweep"] = write_sweep(rows, settings, output_dir)
    return report


def _eval_bpd(pipeline, images: torch.Tensor, args: argparse.Namespace, output_dir: Path) -> dict:
    from .likelihood import bits_per_dim, write_likelihood_report

    generator = torch.Generator().manual_seed(args.seed)
    result = bits_per_dim(
        pipeline,
        images,
        num_steps=args.bpd_steps,
        generator=generator,
        batch_size=args.batch_size,
        estimator=args.bpd_estimator,
        progress=True,
    )
    summary = write_likelihood_report(result, output_dir)
    if not math.isfinite(summary["bits_per_dim"]):
        raise ValueError(f"the bound is not finite ({summary['bits_per_dim']}); the model output has NaN or inf.")
    return {**summary, "json": str(output_dir / "bpd.json")}


def _load_dataset(args: argparse.Namespace, unet) -> torch.Tensor:
    from .data import load_image_tensor

    size = unet.config.sample_size
    if not isinstance(size, int) and size[0] != size[1]:
        raise ValueError(f"the dataset loader makes square images; this UNet has sample_size {size}.")
    images, _ = load_image_tensor(
        dataset_name=args.dataset_name,
        train_data_dir=args.train_data_dir,
        image_column=args.image_column,
        resolution=size if isinstance(size, int) else size[0],
        channels=unet.config.in_channels,
        center_crop=args.center_crop,
        split=args.dataset_split,
        cache_dir=args.cache_dir,
        max_images=args.max_images,
    )
    return images


def _dataset_label(args: argparse.Namespace) -> str:
    split = _split(args)
    source = f"folder {args.train_data_dir}" if args.train_data_dir else args.dataset_name
    source += f" ({split})" if split else ""
    return source if args.max_images is None else f"{source}, first {args.max_images}"


def _sweep_settings(args: argparse.Namespace, num_reference: int) -> dict:
    return {
        "model": args.model,
        "dataset": _dataset_label(args),
        "num_images": args.num_images,
        "num_reference": num_reference,
        "features": f"torch-fidelity {INCEPTION_NAME} pool3 ({INCEPTION_FEATURES})",
        "device": _device_name(args.device),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "torch": torch.__version__,
        "command": _command_line(args),
    }


def _command_line(args: argparse.Namespace) -> str:
    """The `ddpm-hub eval` command that reproduces the sample-quality numbers (the options that change them)."""
    parts = ["ddpm-hub eval", shlex.quote(args.model), "--fid" if args.fid else "", "--sweep" if args.sweep else ""]
    if args.train_data_dir:
        parts += ["--train_data_dir", shlex.quote(args.train_data_dir)]
    else:
        parts += ["--dataset_name", shlex.quote(args.dataset_name)]
        parts += ["--dataset_split", shlex.quote(args.dataset_split)] if _split(args) else []
    if args.max_images is not None:
        parts += ["--max_images", str(args.max_images)]
    if not args.center_crop:
        parts.append("--no-center_crop")
    if args.fid:
        parts += ["--sampler", args.sampler, "--steps", str(args.steps)]
    if args.sweep:
        parts += ["--samplers", args.samplers]
    parts += ["--num_images", str(args.num_images), "--kid_subset_size", str(args.kid_subset_size)]
    parts += ["--seed", str(args.seed), "--batch_size", str(args.batch_size)]
    return " ".join(part for part in parts if part)


def _device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
