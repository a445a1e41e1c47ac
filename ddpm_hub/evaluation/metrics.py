"""Sample quality from features: FID (Heusel et al. 2017), KID (Binkowski et al. 2018), the Inception Score (Salimans
et al. 2016) and precision/recall (Kynkaanniemi et al. 2019), computed here in float64, and the feature extractors
they are defined on.

FID goes through the eigenvalues of sqrt(S_a) S_b sqrt(S_a) (the same value as scipy's sqrtm formula, without its
complex round-off); KID is the unbiased MMD^2 with the cubic polynomial kernel averaged over random subsets; IS and
precision/recall follow torch-fidelity's definitions (`metric_isc.py`, `metric_prc.py`), so the numbers are its
numbers where both run. The default features are torch-fidelity's Inception-v3 (`inception_feature_extractor`):
the port of the TensorFlow FID network, so the numbers compare with papers. torch-fidelity needs torchvision, hence
the optional `metrics` extra; without it, or offline without the weights, `FeatureExtractorUnavailable` says what to
do.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DDPMHubError, InputNotFoundError, UsageError

# uint8 images [N x 3 x H x W] -> float features [N x D], or (features [N x D], class logits [N x K]): the logits
# give the Inception Score
FeatureExtractor = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_FEATURES = "2048"  # the pool3 features FID, KID and precision/recall are defined on
INCEPTION_LOGITS = "logits_unbiased"  # the 1008 class logits without the bias, which torch-fidelity's IS reads
IS_SPLITS, IS_SHUFFLE_SEED = 10, 2020  # torch-fidelity's isc_splits and rng_seed (samples shuffled before splitting)
PRC_NEIGHBORHOOD = 3  # torch-fidelity's prc_neighborhood: the k of the k-th nearest neighbour radii


class FeatureExtractorUnavailable(DDPMHubError, RuntimeError):
    """The Inception network cannot be built here: torch-fidelity missing, or its weights not downloadable."""

    exit_code = 2


# ----------------------------------------------------------------------------------------------------------------
# Features


def inception_feature_extractor(
    weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """
    torch-fidelity's Inception-v3 (`inception-v3-compat`) as a function of uint8 images: pool3 features `[N x 2048]`
    and the unbiased class logits `[N x 1008]`.

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
            [INCEPTION_FEATURES, INCEPTION_LOGITS],
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
    def extract(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = network(images.to(device))
        return features, logits

    return extract


def _check_weights_file(weights_path: str | os.PathLike) -> None:
    """The weights must be a state dict of tensors: load it with the safe unpickler before torch-fidelity does."""
    if not Path(weights_path).is_file():
        raise InputNotFoundError(f"Inception weights file {str(weights_path)!r} does not exist.")
    try:
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(
            f"{weights_path} is not a PyTorch state dict of tensors ({type(error).__name__}: {error}); expected "
            "torch-fidelity's weights-inception-2015-12-05-6726825d.pth."
        ) from error
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UsageError(f"{weights_path} holds {type(state_dict).__name__}, not a state dict of tensors.")


def extract_features(images: torch.Tensor, feature_extractor: FeatureExtractor, batch_size: int = 64) -> np.ndarray:
    """
    Features of uint8 images `[N x C x H x W]` -> float64 `[N x D]`. One-channel images are repeated to RGB, as the
    Inception network expects (it resizes to 299 x 299 itself).
    """
    return extract_features_and_logits(images, feature_extractor, batch_size)[0]


def extract_features_and_logits(
    images: torch.Tensor, feature_extractor: FeatureExtractor, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray | None]:
    """`extract_features`, and the class logits float64 `[N x K]` when the extractor gives them (else None)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UsageError(
            f"images must be uint8 [N x C x H x W] with C = 1 or 3, got {images.dtype} {list(images.shape)}."
        )
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    outputs = [feature_extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    outputs = [output if isinstance(output, tuple) else (output, None) for output in outputs]
    features = _float64([features for features, _ in outputs], "features")
    logits = [logits for _, logits in outputs]
    return features, None if any(part is None for part in logits) else _float64(logits, "class logits")


def _float64(chunks: list[torch.Tensor], what: str) -> np.ndarray:
    values = torch.cat([c.reshape(c.shape[0], -1) for c in chunks]).detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(values).all():
        raise UsageError(f"the feature extractor returned non-finite {what}.")
    return values


# ----------------------------------------------------------------------------------------------------------------
# FID and KID


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and covariance `[D x D]` (unbiased, ddof = 1) of features `[N x D]`, N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise UsageError(f"FID needs features [N x D] with N >= 2, got shape {list(features.shape)}.")
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
        raise UsageError(f"KID needs at least 2 features in each set, got {len(features_a)} and {len(features_b)}.")
    rng = np.random.default_rng(seed)
    mmds = [
        polynomial_mmd2_unbiased(
            features_a[rng.choice(len(features_a), size, replace=False)],
            features_b[rng.choice(len(features_b), size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(mmds)), float(np.std(mmds))


# ----------------------------------------------------------------------------------------------------------------
# Inception Score and precision/recall


def inception_score(
    logits: np.ndarray, splits: int = IS_SPLITS, shuffle_seed: int | None = IS_SHUFFLE_SEED
) -> tuple[float, float]:
    """
    Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), p(y|x) the softmax of class logits `[N x K]`
    and p(y) its mean over the images, computed on each of `splits` parts of the images; the mean and standard
    deviation over the parts. torch-fidelity's protocol: the rows shuffled by `np.random.RandomState(shuffle_seed)`
    (None: not shuffled), part i = rows [i N / splits, (i + 1) N / splits). From 1 (every image the same
    prediction, or uniform predictions) to K (confident predictions spread evenly over the K classes).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or not 1 <= splits <= len(logits):
        raise UsageError(f"the Inception Score needs logits [N x K] with N >= splits = {splits}, got {logits.shape}.")
    if shuffle_seed is not None:
        logits = logits[np.random.RandomState(shuffle_seed).permutation(len(logits))]
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log p(y|x), the log-softmax
    p = np.exp(log_p)
    scores, n = [], len(logits)
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        log_marginal = np.log(p[part].mean(axis=0, keepdims=True))  # log p(y) of the part
        kl = np.where(p[part] > 0, p[part] * (log_p[part] - log_marginal), 0.0).sum(axis=1)  # KL(p(y|x) || p(y))
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall(
    real: np.ndarray, generated: np.ndarray, neighborhood: int = PRC_NEIGHBORHOOD, batch_size: int = 512
) -> tuple[float, float]:
    """
    Improved precision and recall (Kynkaanniemi et al. 2019) of `generated` `[N x D]` against `real` `[M x D]`
    features. Each set stands for the union of balls around its points, a point's radius being the distance to its
    k-th nearest other point of its set (k = `neighborhood`). Precision: the share of generated points inside the real
    set's balls (are the samples realistic?); recall: the share of real points inside the generated set's balls (do the
    samples cover the data?). torch-fidelity's definition (inside: distance <= radius), in float64, `batch_size`
    rows of distances at a time.
    """
    real, generated = np.asarray(real, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    if min(len(real), len(generated)) <= neighborhood or real.shape[1:] != generated.shape[1:]:
        raise UsageError(
            f"precision/recall need more than k = {neighborhood} features of one dimension in each set, got "
            f"{list(real.shape)} real and {list(generated.shape)} generated."
        )
    precision = _share_inside(generated, real, _neighbour_radii(real, neighborhood, batch_size), batch_size)
    recall = _share_inside(real, generated, _neighbour_radii(generated, neighborhood, batch_size), batch_size)
    return precision, recall


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances `[n x m]` of rows `[n x D]` and `[m x D]`."""
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(squared, 0, None))


def _neighbour_radii(points: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point: the (k + 1)-th smallest of its row, itself at 0."""
    rows = range(0, len(points), batch_size)
    return np.concatenate(
        [np.partition(_distances(points[i : i + batch_size], points), k, axis=1)[:, k] for i in rows]
    )


def _share_inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, batch_size: int) -> float:
    """The share of `points` within the radius of at least one of the `centres`."""
    rows = range(0, len(points), batch_size)
    inside = [(_distances(points[i : i + batch_size], centres) <= radii[None, :]).any(axis=1) for i in rows]
    return float(np.concatenate(inside).mean())


def sample_quality(
    generated_features: np.ndarray,
    reference_features: np.ndarray,
    kid_subset_size: int = 1000,
    seed: int = 0,
    standardize_kernel: bool = False,
    generated_logits: np.ndarray | None = None,
) -> dict:
    """
    FID and KID of generated against reference features, with the set sizes (small sets bias FID upwards); precision
    and recall (`precision_recall`, k = 3) when each set has more than 3 features; with the generated images' class
    logits, the Inception Score (`inception_score`) over min(10, N) splits (`inception_score_splits`).
    `standardize_kernel`: the kernel distance on both sets standardized by the reference set's mean and standard
    deviation per feature. KID's cubic kernel (x . y / D + 1)^3 expects features of about unit scale, as Inception's
    2048 pool features are; on 64 unscaled ReLU features its estimate is dominated by a few large activations (its
    spread over subsets was larger than its mean).
    """
    kernel_generated, kernel_reference = generated_features, reference_features
    if standardize_kernel:
        mean, std = reference_features.mean(axis=0), reference_features.std(axis=0) + 1e-6
        kernel_generated, kernel_reference = (generated_features - mean) / std, (reference_features - mean) / std
    kid_mean, kid_std = kernel_inception_distance(
        kernel_generated, kernel_reference, subset_size=kid_subset_size, seed=seed
    )
    quality = {
        "fid": frechet_distance(generated_features, reference_features),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
    }
    if min(len(generated_features), len(reference_features)) > PRC_NEIGHBORHOOD:
        quality["precision"], quality["recall"] = precision_recall(reference_features, generated_features)
    if generated_logits is not None:
        splits = min(IS_SPLITS, len(generated_logits))
        quality["inception_score_mean"], quality["inception_score_std"] = inception_score(generated_logits, splits)
        quality["inception_score_splits"] = splits
    return {**quality, "num_generated": len(generated_features), "num_reference": len(reference_features)}


# ----------------------------------------------------------------------------------------------------------------
# Which features: Inception (papers' FID), or the repo's own digit classifier (offline, for builtin:digits)


@dataclass(frozen=True)
class Reference:
    """
    What samples are measured against, with a floor: the features of a reference half of the dataset (a seeded
    split), and of real images of the other half, never compared with themselves. The floor is the distance of `n`
    of those real images to the reference: what the same metric says of real data at the samples' own number, which
    the small-sample bias of the Frechet distance makes far from 0. A ratio to it of 1.0 means "as close as real
    images are".
    """

    features: np.ndarray  # the reference half
    held_out: np.ndarray  # the other half: real images at the samples' number come from it

    def floor(self, num_images: int, kid_subset_size: int, seed: int, standardize_kernel: bool) -> dict:
        """The distances of `num_images` real held-out images (a seeded choice) to the reference."""
        count = min(num_images, len(self.held_out))
        chosen = np.random.default_rng(seed).permutation(len(self.held_out))[:count]
        return sample_quality(self.held_out[chosen], self.features, kid_subset_size, seed, standardize_kernel)


def reference_split(features: np.ndarray, seed: int = 0) -> Reference:
    """The dataset's features split in two halves by a seeded permutation: the reference and the held-out half."""
    order = np.random.default_rng(seed).permutation(len(features))
    half = len(features) // 2
    return Reference(features[np.sort(order[:half])], features[np.sort(order[half:])])


@dataclass(frozen=True)
class Features:
    """A feature extractor and how its numbers are named: FID only when the features are Inception's."""

    extract: FeatureExtractor
    description: str  # for the tables: what the features are
    metric_key: str  # metrics.json key of the Frechet distance: "fid", or "fd_digits"
    metric_label: str  # the table's column
    kernel_label: str = "KID × 10³ ↓"  # the kernel distance's column
    standardize_kernel: bool = False  # the kernel distance on features standardized by the reference set
    classify: Callable[[torch.Tensor], torch.Tensor] | None = None  # uint8 images -> class ids (class balance)


FEATURE_KINDS = ("auto", "inception", "digits")


def features_for(kind: str, dataset_name: str | None, inception_weights=None, device="cpu") -> Features:
    """`auto`: the digit classifier's features for builtin:digits (no download), Inception's otherwise."""
    if kind == "auto":
        kind = "digits" if dataset_name == "builtin:digits" else "inception"
    if kind == "digits":
        from .digit_classifier import classify, digit_feature_extractor, load_digit_classifier

        model, report = load_digit_classifier()
        return Features(
            extract=with_logits(digit_feature_extractor(model), model.head),
            description=f"the repo's digit classifier, penultimate layer (64; {report['heldout_accuracy']:.1%} "
            "held-out accuracy; `python -m ddpm_hub.evaluation.digit_classifier`)",
            metric_key="fd_digits",
            metric_label="FD (digit features) ↓",
            kernel_label="KD × 10³ (standardized) ↓",
            standardize_kernel=True,
            classify=lambda images: classify(model, images)[0],
        )
    return Features(
        extract=inception_feature_extractor(inception_weights, device),
        description=f"torch-fidelity {INCEPTION_NAME} pool3 ({INCEPTION_FEATURES})",
        metric_key="fid",
        metric_label="FID ↓",
    )


def with_logits(extract: FeatureExtractor, head: torch.nn.Module) -> FeatureExtractor:
    """A feature extractor that also gives the class logits `head(features)`: the classifier's own score."""

    @torch.no_grad()
    def extract_both(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = extract(images)
        return features, head(features)

    return extract_both


def cached_reference_features(images: torch.Tensor, features: Features, key: dict, batch_size: int = 64) -> np.ndarray:
    """
    The features of a dataset's images, computed once and kept in `$DDPM_HUB_CACHE/reference_features/` (default
    `~/.cache/ddpm_hub`) under a hash of `key` (dataset, size, channels, features) and of the images themselves.
    """
    import hashlib
    import json
    import os

    digest = hashlib.sha256(json.dumps({**key, "features": features.description}, sort_keys=True).encode())
    digest.update(images.contiguous().numpy().tobytes())
    root = Path(os.environ.get("DDPM_HUB_CACHE", Path.home() / ".cache" / "ddpm_hub")) / "reference_features"
    path = root / f"{digest.hexdigest()[:32]}.npy"
    if path.is_file():
        return np.load(path)
    computed = extract_features(images, features.extract, batch_size)
    root.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.npy")
    np.save(temporary, computed)
    os.replace(temporary, path)
    return computed
