"""FID / KID against reference formulas, the Inception plumbing offline, the sampler sweep and `ddpm-hub eval`."""

import json
import math
import sys
import types
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from ddpm_hub import DDPMHubScheduler, cli
from ddpm_hub.errors import UsageError
from ddpm_hub.evaluation import metrics
from ddpm_hub.evaluation.metrics import (
    FeatureExtractorUnavailable,
    extract_features,
    frechet_distance,
    frechet_distance_from_statistics,
    inception_feature_extractor,
    inception_score,
    kernel_inception_distance,
    polynomial_mmd2_unbiased,
    precision_recall,
    sample_quality,
)
from ddpm_hub.evaluation.sweep import DEFAULT_SWEEP, generate_images, sampler_sweep, write_sweep
from ddpm_hub.hub.model_card import render_model_card
from ddpm_hub.pipelines import Source
from ddpm_hub.pipelines.sampling import Sampler, with_sampler
from ddpm_hub.run_folder import METRICS_FILE, read_metrics, update_metrics


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """A stand-in for Inception: uint8 [N x 3 x H x W] -> [N x 22] (channel means and stds, a 4 x 4 pooled grey)."""
    assert images.dtype == torch.uint8 and images.shape[1] == 3
    x = images.float() / 255
    pooled = torch.nn.functional.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), 4).flatten(1)
    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), pooled], dim=1)


def pixel_logits(images: torch.Tensor) -> torch.Tensor:
    """A stand-in for Inception's class logits: uint8 [N x 3 x H x W] -> [N x 6]."""
    return 20 * pixel_features(images)[:, :6]


def tiny():
    pipeline = Source.of("ddpm-tiny-8").build(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def gaussian_features(n, dim, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(n, dim)) @ mixing + shift


# ---------------------------------------------------------------------------------------------------------------------
# FID and KID


def test_fid_matches_the_sqrtm_formula_and_closed_forms():
    a, b = gaussian_features(200, 8, seed=0), gaussian_features(150, 8, shift=0.3, seed=1)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b).real  # pytorch-fid / torch-fidelity's formula
    reference = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * covmean)
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # diagonal Gaussians: ||mu_a - mu_b||^2 + sum (s_a - s_b)^2
    s_a, s_b = np.array([1.0, 2.0, 0.5]), np.array([0.5, 2.0, 3.0])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + np.sum((s_a - s_b) ** 2)
    assert frechet_distance_from_statistics(mu_a, np.diag(s_a**2), mu_b, np.diag(s_b**2)) == pytest.approx(expected)
    # fewer samples than dimensions: singular covariances stay finite
    assert np.isfinite(frechet_distance(gaussian_features(5, 16, seed=2), gaussian_features(6, 16, seed=3)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(a[:1], b)


def test_kid_is_the_unbiased_polynomial_mmd():
    a, b = gaussian_features(12, 5, seed=0), gaussian_features(10, 5, shift=0.5, seed=1)

    def k(x, y):
        return (x @ y / 5 + 1) ** 3

    m, n = len(a), len(b)
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
    assert polynomial_mmd2_unbiased(a, b) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    # subsets of the whole (equal-size) sets are permutations: every subset gives the same MMD, std 0
    mean, std = kernel_inception_distance(a[:10], b, num_subsets=5, subset_size=1000)
    assert mean == pytest.approx(polynomial_mmd2_unbiased(a[:10], b)) and std == pytest.approx(0.0, abs=1e-12)
    assert kernel_inception_distance(a, b, subset_size=6, seed=1) == kernel_inception_distance(a, b, 100, 6, 1)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(a[:1], b)


def test_the_standardized_kernel_distance_ignores_the_features_scale_and_the_plain_one_does_not():
    a, b = gaussian_features(60, 8, seed=0), gaussian_features(50, 8, shift=0.5, seed=1)
    scale = np.linspace(1, 40, 8)  # unscaled features, like a ReLU layer's: some large, some small

    def kid(x, y, standardize):
        return sample_quality(x, y, kid_subset_size=40, standardize_kernel=standardize)["kid_mean"]

    assert kid(a * scale, b * scale, True) == pytest.approx(kid(a, b, True), rel=1e-4)
    assert abs(kid(a * scale, b * scale, False)) > 100 * abs(kid(a, b, False))
    # the Frechet distance stays on the features as they are
    assert sample_quality(a * scale, b * scale, 40, standardize_kernel=True)["fid"] == pytest.approx(
        frechet_distance(a * scale, b * scale)
    )


def test_extract_features_repeats_grey_to_rgb():
    grey = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    features = extract_features(grey, pixel_features, batch_size=2)
    assert features.shape == (5, 22) and features.dtype == np.float64
    np.testing.assert_allclose(features, extract_features(grey.repeat(1, 3, 1, 1), pixel_features), rtol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        extract_features(grey.float(), pixel_features)


# ---------------------------------------------------------------------------------------------------------------------
# Inception Score and precision/recall (issue 32): hand computations, and torch-fidelity where it is installed


def test_inception_score_of_known_predictions():
    one_hot = 100 * np.eye(10)[np.arange(100) % 10]  # confident, each consecutive 10 images one of each class
    assert inception_score(np.zeros((20, 10))) == pytest.approx((1.0, 0.0))  # uniform predictions
    assert inception_score(100 * np.eye(10)[np.full(20, 3)]) == pytest.approx((1.0, 0.0))  # all the same class
    assert inception_score(one_hot, splits=1) == pytest.approx((10.0, 0.0))
    assert inception_score(one_hot, splits=10, shuffle_seed=None) == pytest.approx((10.0, 0.0))
    assert inception_score(100 * np.eye(10)[np.arange(20) % 2], splits=1) == pytest.approx((2.0, 0.0))
    # two images, p(y|x) = (0.9, 0.1) and (0.1, 0.9): p(y) = (0.5, 0.5), both KLs 0.9 ln 1.8 + 0.1 ln 0.2
    two = np.log([[0.9, 0.1], [0.1, 0.9]])
    assert inception_score(two, splits=1)[0] == pytest.approx(math.exp(0.9 * math.log(1.8) + 0.1 * math.log(0.2)))
    with pytest.raises(UsageError, match="N >= splits = 10"):
        inception_score(np.zeros((5, 10)))


def test_inception_score_is_torch_fidelitys_protocol_written_out():
    """Rows shuffled by RandomState(2020), part i = rows [i N / 10, (i + 1) N / 10), exp of the mean KL per part."""
    from scipy.special import softmax
    from scipy.stats import entropy

    logits = np.random.default_rng(0).normal(scale=3, size=(37, 8))  # 37: parts of 3 and 4 rows
    p = softmax(logits[np.random.RandomState(2020).permutation(37)], axis=1)
    bounds = [i * 37 // 10 for i in range(11)]
    parts = [p[start:end] for start, end in zip(bounds, bounds[1:])]
    scores = [math.exp(np.mean([entropy(row, part.mean(axis=0)) for row in part])) for part in parts]
    assert inception_score(logits) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-12)


def test_precision_and_recall_on_hand_made_point_sets():
    points = gaussian_features(40, 5, seed=0)
    assert precision_recall(points, points) == (1.0, 1.0)  # identical sets
    assert precision_recall(points, points + 1000.0) == (0.0, 0.0)  # disjoint, far apart
    # by hand, k = 1 on a line: real 0, 1, 2, 3 (radius 1 each); generated 0.5 and 2.9 (radius 2.4), 10 and 11 (1)
    real, generated = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [2.9], [10.0], [11.0]])
    # precision: 0.5 and 2.9 lie within 1 of a real point, 10 and 11 do not; recall: 0, 1, 2 are within 2.4 of 0.5,
    # 3 is within 2.4 of 2.9
    assert precision_recall(real, generated, neighborhood=1) == (0.5, 1.0)
    # and with k = 3 (the default): real 0..4 have radii 3, 2, 2, 2, 3; generated -2.5 (2.5 from 0) is inside, 7.5
    # (3.5 from 4), 100 and 101 are not; generated -2.5, 7.5, 100, 101 have radii 103.5, 93.5, 102.5, 103.5: every
    # real point is covered
    real = np.arange(5.0)[:, None]
    assert precision_recall(real, np.array([[-2.5], [7.5], [100.0], [101.0]])) == (0.25, 1.0)
    with pytest.raises(UsageError, match="more than k = 3 features"):
        precision_recall(points[:3], points)


def test_precision_and_recall_by_batches_equal_the_whole_distance_matrix():
    from scipy.spatial.distance import cdist

    real, generated = gaussian_features(60, 6, seed=1), gaussian_features(45, 6, shift=0.7, seed=2)
    radii = [np.sort(cdist(x, x), axis=1)[:, 3] for x in (real, generated)]
    precision = (cdist(generated, real) <= radii[0]).any(axis=1).mean()
    recall = (cdist(real, generated) <= radii[1]).any(axis=1).mean()
    assert 0 < precision < 1 and 0 < recall < 1
    for batch_size in (7, 1000):
        assert precision_recall(real, generated, batch_size=batch_size) == pytest.approx((precision, recall))


def test_inception_score_and_precision_recall_equal_torch_fidelitys():
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    logits = np.random.default_rng(3).normal(scale=2, size=(53, 1008))
    theirs = isc_features_to_metric(torch.from_numpy(logits), 10, True, 2020)
    ours = inception_score(logits)
    assert ours == pytest.approx((theirs["inception_score_mean"], theirs["inception_score_std"]), rel=1e-9)
    real, generated = gaussian_features(80, 16, seed=4), gaussian_features(70, 16, shift=0.4, seed=5)
    theirs = calculate_precision_recall_full(torch.from_numpy(real), torch.from_numpy(generated), 3, 10000)
    assert precision_recall(real, generated) == pytest.approx(theirs)


def test_sample_quality_reports_precision_recall_and_with_logits_the_inception_score():
    real, generated = gaussian_features(30, 4, seed=0), gaussian_features(12, 4, shift=0.5, seed=1)
    logits = np.random.default_rng(2).normal(size=(12, 5))
    quality = sample_quality(generated, real, kid_subset_size=10, generated_logits=logits)
    assert (quality["precision"], quality["recall"]) == precision_recall(real, generated)
    assert (quality["inception_score_mean"], quality["inception_score_std"]) == inception_score(logits)
    assert quality["inception_score_splits"] == 10
    assert sample_quality(generated[:5], real, 5, generated_logits=logits[:5])["inception_score_splits"] == 5
    few = sample_quality(generated[:3], real, kid_subset_size=3)  # 3 images: no 3rd neighbour, no IS without logits
    assert not {"precision", "recall", "inception_score_mean"} & set(few)


# ---------------------------------------------------------------------------------------------------------------------
# The Inception feature extractor: clear messages instead of tracebacks, no network in tests


def fake_torch_fidelity(monkeypatch, behaviour):
    package = types.ModuleType("torch_fidelity")
    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.URL_INCEPTION_V3 = "https://example.invalid/weights-inception-2015-12-05-6726825d.pth"
    module.FeatureExtractorInceptionV3 = behaviour
    package.feature_extractor_inceptionv3 = module
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)


def test_inception_missing_library_and_offline_download_are_clear(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(FeatureExtractorUnavailable, match=r"pip install 'ddpm-hub\[metrics\]'"):
        inception_feature_extractor()

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    fake_torch_fidelity(monkeypatch, offline)
    with pytest.raises(FeatureExtractorUnavailable, match="offline.*--inception_weights"):
        inception_feature_extractor()

    with pytest.raises(FileNotFoundError, match="does not exist"):
        inception_feature_extractor(tmp_path / "missing.pth")
    pickled = tmp_path / "not_tensors.pth"
    torch.save({"weights": object()}, pickled)
    with pytest.raises(ValueError, match="state dict of tensors"):
        inception_feature_extractor(pickled)


def test_inception_local_weights_reach_torch_fidelity(monkeypatch, tmp_path):
    seen = {}

    class FakeInception(torch.nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path=None):
            super().__init__()
            seen.update(name=name, features=features_list, path=feature_extractor_weights_path)

        def forward(self, images):  # torch-fidelity's order: the features asked for, as asked
            return pixel_features(images), pixel_logits(images)

    fake_torch_fidelity(monkeypatch, FakeInception)
    weights = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(2)}, weights)
    extract = inception_feature_extractor(weights)
    assert seen == {"name": "inception-v3-compat", "features": ["2048", "logits_unbiased"], "path": str(weights)}
    features, logits = extract(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert features.shape == (2, 22) and logits.shape == (2, 6)


# ---------------------------------------------------------------------------------------------------------------------
# Samplers and the sweep


def test_default_sweep_is_the_issue_list_and_every_sampler_builds():
    assert [str(s) for s in DEFAULT_SWEEP] == [
        "ddpm-1000", "ddpm-250", "ddpm-50", "ddim-50", "ddim-20", "dpmsolver++-20", "dpmsolver++-10",
    ]  # fmt: skip
    pipeline = Source.of("ddpm-digits-16").build()
    expected = {"ddpm": DDPMHubScheduler, "ddim": DDIMScheduler, "dpmsolver++": DPMSolverMultistepScheduler}
    for sampler in DEFAULT_SWEEP:
        scheduler = with_sampler(pipeline, sampler.name).scheduler
        assert type(scheduler) is expected[sampler.name]
        assert scheduler.config.beta_schedule == "squaredcos_cap_v2" and scheduler.config.prediction_type == "epsilon"
        scheduler.set_timesteps(sampler.steps)
        assert len(scheduler.timesteps) == sampler.steps
    assert with_sampler(pipeline, "dpmsolver++").scheduler.config.algorithm_type == "dpmsolver++"
    assert with_sampler(pipeline, "sde-dpmsolver++").scheduler.config.algorithm_type == "sde-dpmsolver++"
    assert type(with_sampler(pipeline, "unipc").scheduler).__name__ == "UniPCMultistepScheduler"
    assert Sampler.parse("sde-dpmsolver++-20") == Sampler("sde-dpmsolver++", 20)
    assert pipeline.scheduler is not with_sampler(pipeline, "ddpm").scheduler  # the pipeline is left alone
    assert Sampler.parse("dpmsolver++-20") == Sampler("dpmsolver++", 20)
    for bad in ("euler-10", "ddim", "ddim-0", "ddim-x"):
        with pytest.raises(ValueError, match="NAME-STEPS"):
            Sampler.parse(bad)


def test_generate_images_is_seeded_per_image_and_counts_nfe():
    pipeline = with_sampler(tiny(), "ddim")
    images, timing = generate_images(pipeline, 3, steps=4, seed=7, batch_size=3)
    again, _ = generate_images(pipeline, 3, steps=4, seed=7, batch_size=2)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 8, 8)
    assert torch.equal(images, again) and timing["nfe"] == 4 and timing["images_per_second"] > 0


def test_the_stochastic_sampler_draws_its_noise_from_the_callers_generator():
    pipeline = Source.of("ddpm-tiny-8").build(seed=0)
    start = torch.randn(2, 3, 8, 8, generator=torch.manual_seed(5))  # the same x_T for every call

    def sample(name, seed):
        call = with_sampler(pipeline, name)
        generator = torch.manual_seed(seed)
        return call(batch_size=2, num_inference_steps=3, noise=start, generator=generator, output_type="np").images

    assert np.array_equal(sample("sde-dpmsolver++", 0), sample("sde-dpmsolver++", 0))
    assert not np.allclose(sample("sde-dpmsolver++", 0), sample("sde-dpmsolver++", 1))  # its step noise
    assert np.array_equal(sample("dpmsolver++", 0), sample("dpmsolver++", 1))  # the ODE sampler has none


def test_sweep_table_on_a_tiny_model(tmp_path):
    pipeline = tiny()
    reference = extract_features(torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8), pixel_features)
    samplers = [Sampler("ddpm", 10), Sampler("ddim", 5), Sampler("dpmsolver++", 4)]
    rows = sampler_sweep(pipeline, reference, pixel_features, num_images=4, samplers=samplers, kid_subset_size=4)
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [
        ("ddpm", 10, 10),
        ("ddim", 5, 5),
        ("dpmsolver++", 4, 4),
    ]
    assert all(r["fid"] >= 0 and np.isfinite(r["kid_mean"]) and r["num_reference"] == 16 for r in rows)
    settings = {"num_images": 4, "num_reference": 16, "dataset": "random", "features": "pixels", "device": "cpu"}
    paths = write_sweep(rows, settings, tmp_path)
    table = (tmp_path / "sweep.md").read_text()
    assert table.startswith("| sampler | steps | NFE | FID ↓ | KID × 10³ ↓ | images/s |")
    assert "| DDPM ancestral | 10 | 10 |" in table and "| DPM-Solver++ (2M) | 4 | 4 |" in table
    assert json.loads((tmp_path / "sweep.json").read_text())["rows"][1]["label"] == "DDIM (eta = 0)"
    assert paths == {"markdown": str(tmp_path / "sweep.md"), "json": str(tmp_path / "sweep.json")}


# ---------------------------------------------------------------------------------------------------------------------
# ddpm-hub eval


def test_cli_fid_and_sweep_with_a_passed_in_feature_extractor(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "tiny"
    tiny().save_pretrained(folder)
    monkeypatch.setattr(metrics, "inception_feature_extractor", lambda weights, device: pixel_features)
    output_dir = tmp_path / "eval"
    argv = ["eval", str(folder), "--fid", "--sweep", "--num_images", "3", "--steps", "4", "--sampler", "ddim"]
    argv += ["--features", "inception"]
    argv += ["--samplers", "ddpm-5,dpmsolver++-3", "--max_images", "12", "--output_dir", str(output_dir)]
    assert cli.main([*argv, "--kid_subset_size", "3", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    # 12 images split in a reference half and a held-out half: distances against 6, and the floor of 3 real ones
    assert report["fid"]["sampler"] == "ddim" and report["fid"]["nfe"] == 4 and report["fid"]["num_reference"] == 6
    assert (
        report["fid"]["fid_floor"] > 0
        and report["fid"]["fid_ratio"] == report["fid"]["fid"] / report["fid"]["fid_floor"]
    )
    saved = json.loads((output_dir / "sweep.json").read_text())
    assert [row["steps"] for row in saved["rows"]] == [5, 3]
    command = saved["settings"]["command"]
    assert command.startswith(f"ddpm-hub eval {folder} --fid --sweep --dataset_name builtin:digits")
    assert "--samplers ddpm-5,dpmsolver++-3" in command and "--num_images 3" in command
    assert f"Produced by `{command}`" in (output_dir / "sweep.md").read_text()
    assert json.loads((output_dir / "fid.json").read_text())["steps"] == 4
    saved_metrics = json.loads((output_dir / "metrics.json").read_text())
    assert (
        saved_metrics["fid"]["value"] == report["fid"]["fid"]
        and saved_metrics["kid"]["std"] == report["fid"]["kid_std"]
    )
    assert saved_metrics["fid"]["ratio_to_floor"] == report["fid"]["fid_ratio"]
    assert "÷ floor" in (output_dir / "sweep.md").read_text()
    assert saved_metrics["fid"]["num_images"] == 3 and saved_metrics["fid"]["method"].startswith(
        "DDIM (eta = 0), 4 steps; 3 sa"
    )
    # a later --bpd run adds its key and keeps the others
    assert cli.main(["eval", str(folder), "--bpd", "--bpd_steps", "5", "--max_images", "2"] + argv[-2:]) == 0
    assert set(json.loads((output_dir / "metrics.json").read_text())) == {"bpd", "fid", "kid"}


def test_cli_fid_reports_the_inception_score_and_precision_recall_of_the_same_features(tmp_path, monkeypatch, capsys):
    """issue 32: --fid with an extractor that gives class logits: IS of the samples' logits, precision/recall of
    their features against the reference half, in the report, fid.json, metrics.json and the model card."""
    folder = output_dir = tmp_path / "tiny"  # the metrics next to the model, as the card reads them
    tiny().save_pretrained(folder)
    seen = []

    def features_and_logits(images):
        seen.append(images)
        return pixel_features(images), pixel_logits(images)

    monkeypatch.setattr(metrics, "inception_feature_extractor", lambda weights, device: features_and_logits)
    argv = ["eval", str(folder), "--fid", "--features", "inception", "--num_images", "5", "--steps", "2"]
    argv += ["--max_images", "14", "--kid_subset_size", "3", "--output_dir", str(output_dir), "--device", "cpu"]
    assert cli.main(argv) == 0
    row = json.loads(capsys.readouterr().out)["fid"]
    samples = seen[-1]  # the 5 samples, after the 14 dataset images
    assert len(samples) == 5 and row["num_reference"] == 7
    expected = inception_score(pixel_logits(samples).double().numpy(), splits=5)
    assert (row["inception_score_mean"], row["inception_score_std"]) == pytest.approx(expected)
    assert row["inception_score_splits"] == 5 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    assert 0 <= row["precision_floor"] <= 1 and 0 <= row["recall_floor"] <= 1
    assert json.loads((output_dir / "fid.json").read_text())["recall"] == row["recall"]
    saved = json.loads((output_dir / METRICS_FILE).read_text())
    assert set(saved) == {"fid", "kid", "is", "precision", "recall"}
    assert saved["is"]["value"] == row["inception_score_mean"] and saved["is"]["std"] == row["inception_score_std"]
    assert saved["precision"] == {**saved["precision"], "value": row["precision"], "floor": row["precision_floor"]}
    assert saved["recall"]["value"] == row["recall"] and saved["recall"]["num_images"] == 5
    card = render_model_card(output_dir, "alice/model")
    assert "| Inception score |" in card.text and "| Precision (Kynkäänniemi et al. 2019" in card.text
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert results["recall"] == round(row["recall"], 6) and results["is"] == round(row["inception_score_mean"], 6)


def test_cli_offline_is_a_message_not_a_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    argv = ["eval", "no/such-model", "--fid", "--features", "inception", "--output_dir", str(tmp_path)]
    assert cli.main(argv) == 2  # fails before loading
    error = capsys.readouterr().err
    assert error.startswith("ddpm-hub eval: error: FID and KID use torch-fidelity") and "Traceback" not in error
    assert cli.main(["eval", "ddpm-tiny-8"]) == 2
    assert "pass --bpd, --fid, --sweep, --class_accuracy, --text_accuracy and/or" in capsys.readouterr().err
    assert cli.main(["eval", "ddpm-tiny-8", "--sweep", "--samplers", "euler-5"]) == 2
    assert "NAME-STEPS" in capsys.readouterr().err
    assert cli.main(["eval", "ddpm-tiny-8", "--bpd", "--dataset_name", "cifar10", "--train_data_dir", "x"]) == 2
    assert "Give exactly one image source" in capsys.readouterr().err


@pytest.mark.slow
def test_offline_sweep_on_digits_uses_the_repos_classifier_and_caches_the_reference(tmp_path, monkeypatch, capsys):
    """builtin:digits: the Frechet distance in the digit classifier's features, the class balance; no download."""
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # Inception is not needed
    folder = tmp_path / "digits"
    narrow = {"block_out_channels": [8, 8, 8]}  # ddpm-digits-16's layout, a quarter of its widths: the plumbing only
    Source.of("ddpm-digits-16").build(seed=0, unet_overrides=narrow).save_pretrained(folder)
    argv = ["eval", str(folder), "--sweep", "--samplers", "ddpm-3,ddim-2", "--num_images", "8", "--max_images", "40"]
    argv += ["--kid_subset_size", "8", "--output_dir", str(tmp_path / "eval")]
    assert cli.main(argv) == 0
    table = (tmp_path / "eval" / "sweep.md").read_text()
    assert table.startswith(
        "| sampler | steps | NFE | FD (digit features) ↓ | ÷ floor ↓ | KD × 10³ (standardized) ↓ | classes (TV) ↓ |"
        " images/s |"
    )
    rows = json.loads((tmp_path / "eval" / "sweep.json").read_text())["rows"]
    assert len(rows) == 2 and all(0 <= row["class_balance_tv"] <= 0.9 and row["fid"] > 0 for row in rows)
    assert "digit classifier" in table
    monkeypatch.setattr(metrics, "extract_features", lambda *args: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert cli.main([*argv[:3], "--fid", *argv[5:], "--steps", "2"]) == 0  # the reference comes from the cache
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(saved) == {"fd_digits", "kd_digits", "is_digits", "precision_digits", "recall_digits"}
    assert "digit classifier" in saved["fd_digits"]["method"] and 1 <= saved["is_digits"]["value"] <= 10


def test_sample_quality_of_a_text_model_or_of_digit_pairs_with_the_digit_classifier_is_refused(tmp_path, capsys):
    # issue 28: eval --features digits scored two-digit canvases with a one-digit classifier, sampled with prompt ""
    from helpers import text_config

    text = tmp_path / "text"
    Source.of(text_config(tmp_path)).build(seed=0).save_pretrained(text)
    output_dir = tmp_path / "eval"
    argv = ["--features", "digits", "--num_images", "2", "--steps", "1", "--output_dir", str(output_dir)]
    assert cli.main(["eval", str(text), "--fid", *argv]) == 2
    error = capsys.readouterr().err
    assert f"{text} is a text-to-image model, and ddpm-hub eval --fid would measure images drawn without" in error
    assert "--bpd" in error and not output_dir.exists()
    pairs = tmp_path / "pairs"  # an unconditional model of 8 x 16 canvases
    Source.of("ddpm-tiny-8x16").build(seed=0).save_pretrained(pairs)
    assert cli.main(["eval", str(pairs), "--sweep", *argv]) == 2
    error = capsys.readouterr().err
    assert "the digit classifier reads one digit in a square image" in error and "8×16 images" in error
    assert "--features inception" in error and not output_dir.exists()


# ----------------------------------------------------------------------------------------------------------------
# No non-finite metric is written or published (the second reliability probe)


def test_a_non_finite_metric_is_neither_written_nor_published(tmp_path):
    folder = tmp_path / "model"
    Source.of("ddpm-tiny-8").build().save_pretrained(folder)
    update_metrics(folder, {"bpd": {"bits_per_dim": 2.5, "standard_error": 0.1}})
    for bad in ({"fid": {"value": math.nan}}, {"kid": {"value": 0.1, "std": math.inf}}, {"fid": -math.inf}):
        with pytest.raises(UsageError, match="is not a finite number"):
            update_metrics(folder, bad)
    assert json.loads((folder / METRICS_FILE).read_text()) == {"bpd": {"bits_per_dim": 2.5, "standard_error": 0.1}}
    # written by hand (or by an older version): the card refuses it instead of leaving it out silently
    (folder / METRICS_FILE).write_text('{"bpd": {"bits_per_dim": 2.5}, "fid": {"value": NaN}}')
    with pytest.raises(UsageError, match=r"metrics.json: the metric 'fid' is not a finite number \(value = nan\)"):
        read_metrics(folder)
    with pytest.raises(UsageError, match="not a finite number"):
        render_model_card(folder, "alice/model")


# ----------------------------------------------------------------------------------------------------------------
# ddpm-hub eval --class_accuracy, --text_accuracy, --sr_quality: the card's task tables from the installed package


def tiny_class_model(tmp_path):
    from helpers import conditional_config

    folder = tmp_path / "cond"
    pipeline = Source.of(conditional_config(tmp_path)).build(seed=0)
    pipeline.register_to_config(id2label={i: str(i) for i in range(10)}, null_class_label=10, num_classes=10)
    pipeline.save_pretrained(folder)
    return folder


def test_eval_class_accuracy_writes_the_table_and_its_numbers_are_the_classifiers_reading(tmp_path, capsys):
    from ddpm_hub.evaluation.digit_classifier import classify, load_digit_classifier
    from ddpm_hub.pictures import to_uint8

    folder, output_dir = tiny_class_model(tmp_path), tmp_path / "eval"
    argv = ["eval", str(folder), "--class_accuracy", "--guidance_scales", "0,2", "--num_per_class", "2"]
    assert cli.main([*argv, "--steps", "2", "--seed", "3", "--batch_size", "7", "--output_dir", str(output_dir)]) == 0
    saved = json.loads((output_dir / "class_accuracy.json").read_text())
    assert [row["guidance_scale"] for row in saved["rows"]] == [0.0, 2.0]
    settings = saved["settings"]
    assert settings["num_per_class"] == 2 and settings["steps"] == 2 and settings["seed"] == 3
    assert settings["command"] == (
        f"ddpm-hub eval {folder} --class_accuracy --guidance_scales 0,2 --num_per_class 2 --steps 2 --seed 3"
    )
    table = (output_dir / "class_accuracy.md").read_text()
    assert table.startswith("| guidance w | accuracy | 0 | 1 |") and "| 2 | **" in table
    assert f"Produced by `{settings['command']}`" in table
    # independently: image i of class i // 2 drawn alone from seed 3 + i, read by the same classifier
    pipeline, (classifier, _) = Source.of(folder).load(), load_digit_classifier()
    pipeline.set_progress_bar_config(disable=True)
    labels = [c for c in range(10) for _ in range(2)]
    for row in saved["rows"]:
        images = [
            pipeline(
                class_labels=[label],
                guidance_scale=row["guidance_scale"],
                num_inference_steps=2,
                generator=torch.Generator().manual_seed(3 + i),
                output_type="pt",
            ).images
            for i, label in enumerate(labels)
        ]
        predicted, _ = classify(classifier, to_uint8(torch.cat(images)))
        correct = (predicted == torch.tensor(labels)).float()
        assert row["accuracy"] == pytest.approx(float(correct.mean()))
        assert row["per_class"] == pytest.approx(correct.view(10, 2).mean(dim=1).tolist())
    assert json.loads(capsys.readouterr().out)["class_accuracy"]["json"] == str(output_dir / "class_accuracy.json")


def test_eval_text_accuracy_asks_every_pair_in_both_forms_and_writes_the_table(tmp_path):
    from helpers import text_config

    from ddpm_hub.evaluation.accuracy import SEEN_PAIRS, text_requests

    asked = text_requests(2)
    assert len(asked) == (20 + 10) * 2 * 2 and [row["prompt"] for row in asked[:3]] == [
        "0 left of 1", "zero left of one", "1 right of 0",
    ]  # fmt: skip
    assert {row["seen"] for row in asked[-4:]} == {False}
    text = tmp_path / "text"
    Source.of(text_config(tmp_path)).build(seed=0).save_pretrained(text)
    argv = ["eval", str(text), "--text_accuracy", "--guidance_scales", "1", "--num_per_prompt", "1", "--steps", "1"]
    assert cli.main([*argv, "--sampler", "ddim", "--output_dir", str(tmp_path / "eval")]) == 0
    saved = json.loads((tmp_path / "eval" / "text_accuracy.json").read_text())
    (row,) = saved["rows"]
    shares = [row[key] for key in ("seen", "seen_left", "seen_right", "unseen", "unseen_left", "unseen_right")]
    assert all(0 <= share <= 1 for share in shares) and 0 <= row["left_half"] <= 1
    assert row["seen"] == pytest.approx((row["seen_left"] + row["seen_right"]) / 2)
    assert saved["settings"]["sampler"] == "ddim" and saved["settings"]["seen_pairs"] == [list(p) for p in SEEN_PAIRS]
    assert "| 1 | **" in (tmp_path / "eval" / "text_accuracy.md").read_text()


def synthetic_photos() -> dict:
    """Two smooth 'photographs' (scikit-image's are not a test dependency)."""
    y, x = np.mgrid[0:128, 0:192] / 64.0
    first = np.stack([np.sin(x), np.cos(y), np.sin(x + y)], axis=-1)
    second = np.stack([np.cos(2 * x), np.sin(y * 3), np.cos(x - y)], axis=-1)
    return {name: ((image + 1) * 127.5).round().astype(np.uint8) for name, image in (("a", first), ("b", second))}


def test_eval_sr_quality_writes_the_table_and_measures_bicubic_upsampling_like_pil(tmp_path, monkeypatch):
    from PIL import Image
    from test_superres import tiny_sr

    import ddpm_hub.cli.eval_tasks as eval_tasks

    monkeypatch.setattr(eval_tasks, "photographs", synthetic_photos)
    tiny_sr(tmp_path).save_pretrained(tmp_path / "sr")
    argv = ["eval", str(tmp_path / "sr"), "--sr_quality", "--noise_levels", "0,25", "--steps", "1,2"]
    argv += ["--samples_per_input", "2", "--crops_per_photo", "2", "--output_dir", str(tmp_path / "eval")]
    assert cli.main(argv) == 0
    saved = json.loads((tmp_path / "eval" / "sr_quality.json").read_text())
    assert [(row["steps"], row["noise_level"]) for row in saved["rows"]] == [(1, 0), (1, 25), (2, 0), (2, 25)]
    assert saved["settings"]["num_inputs"] == 4 and saved["settings"]["crops"][0] == "a[0:64, 0:64]"
    # bicubic PSNR, independently: each crop, box-averaged by 4 and rounded, PIL-bicubic upsampled, against the crop
    photos, psnrs, ssims = synthetic_photos(), [], []
    for name, top, left in (("a", 0, 0), ("a", 64, 128), ("b", 0, 0), ("b", 64, 128)):
        crop = (photos[name][top : top + 64, left : left + 64] / np.float32(255)).astype(np.float64)
        low = np.round(crop.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)) * 255).astype(np.uint8)
        bicubic = np.asarray(Image.fromarray(low).resize((64, 64), Image.BICUBIC)) / 255
        psnrs.append(10 * np.log10(1 / np.mean((bicubic - crop) ** 2)))
        ssims.append(skimage_ssim(bicubic, crop, data_range=1.0, channel_axis=-1) if skimage_ssim else None)
    assert saved["rows"][0]["psnr_bicubic"] == pytest.approx(np.mean(psnrs))
    if skimage_ssim is not None:
        assert saved["rows"][0]["ssim_bicubic"] == pytest.approx(np.mean(ssims), abs=1e-8)
    assert all(-1 <= row[key] <= 1 for row in saved["rows"] for key in ("ssim_single", "ssim_mean", "ssim_bicubic"))
    table = (tmp_path / "eval" / "sr_quality.md").read_text()
    assert "PSNR, mean of 2" in table and "box-downsampled to 16x16" in table and "--steps 1,2" in table
    assert "| PSNR, bicubic | SSIM, one sample | SSIM, mean of 2 | SSIM, bicubic |" in table


def skimage_ssim_or_none():
    """scikit-image's SSIM with Wang et al.'s settings (Gaussian window, sigma 1.5, population covariances), or None
    where scikit-image (the optional `bench` extra) is not installed."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return None
    options = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return lambda x, y, **kwargs: structural_similarity(x, y, **options, **kwargs)


skimage_ssim = skimage_ssim_or_none()


def test_ssim_of_identical_images_is_1_and_a_changed_image_less():
    from ddpm_hub.evaluation.sr_quality import ssim

    images = torch.from_numpy(np.stack([p[:64, :80] for p in synthetic_photos().values()])).permute(0, 3, 1, 2) / 255
    assert ssim(images, images).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    darker = ssim(images, images * 0.5)
    assert darker.shape == (2,) and (darker < 0.9).all()
    with pytest.raises(UsageError, match="window is 11 pixels wide"):
        ssim(images[..., :10, :], images[..., :10, :])


def as_batch(image: np.ndarray) -> torch.Tensor:
    """[H x W x C] or [H x W] -> [1 x C x H x W]."""
    return torch.from_numpy(image if image.ndim == 3 else image[..., None]).permute(2, 0, 1)[None]


@pytest.mark.skipif(skimage_ssim is None, reason="scikit-image (the bench extra) is not installed")
def test_ssim_equals_scikit_images_structural_similarity():
    from ddpm_hub.evaluation.sr_quality import ssim

    rng = np.random.default_rng(0)
    photos = list(synthetic_photos().values())
    cases = [  # (x, y, data_range): colour [H x W x 3] and grey [H x W], in [0, 1] and in [0, 255]
        (photos[0][:64, :64] / 255, np.clip(photos[0][:64, :64] / 255 + rng.normal(0, 0.1, (64, 64, 3)), 0, 1), 1.0),
        (photos[0][:48, 16:80] / 255, photos[1][:48, 16:80] / 255, 1.0),
        (photos[1][:, :, 0].astype(np.float64), np.roll(photos[1][:, :, 0], 3, axis=1).astype(np.float64), 255.0),
        (rng.uniform(0, 1, (23, 31, 3)), rng.uniform(0, 1, (23, 31, 3)), 1.0),  # odd, non-square, uncorrelated
    ]
    for x, y, data_range in cases:
        expected = skimage_ssim(x, y, data_range=data_range, channel_axis=-1 if x.ndim == 3 else None)
        ours = ssim(as_batch(x), as_batch(y), data_range=data_range)
        assert ours.item() == pytest.approx(expected, abs=1e-4), (x.shape, data_range)


def test_eval_task_options_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import ddpm_hub.cli.eval_tasks as eval_tasks

    def no_photographs():
        raise UsageError("--sr_quality measures on scikit-image's ... photographs: pip install 'ddpm-hub[bench]'.")

    monkeypatch.setattr(eval_tasks, "photographs", no_photographs)
    monkeypatch.setattr(Source, "load", lambda *args, **kwargs: pytest.fail("a refusal loads no weights"))
    from test_superres import sr_config

    output_dir = tmp_path / "eval"
    cases = [
        (["ddpm-tiny-8", "--class_accuracy"], "--class_accuracy measures a class-conditional model"),
        (["ddpm-tiny-8", "--text_accuracy"], "--text_accuracy measures a text-to-image model of digit pairs"),
        (["ddpm-tiny-8", "--sr_quality"], "--sr_quality measures a super-resolution model"),
        ([str(sr_config(tmp_path)), "--sr_quality", "--noise_levels", "0,400"], "--noise_levels 400:"),
        ([str(sr_config(tmp_path)), "--sr_quality"], "pip install 'ddpm-hub[bench]'"),
        (["ddpm-tiny-8x16", "--text_accuracy"], "takes no prompt"),
        (["ddpm-tiny-8", "--fid", "--steps", "2,3"], "--steps 2,3: --fid take one number of steps"),
        (["ddpm-tiny-8", "--class_accuracy", "--guidance_scales", "0,x"], "--guidance_scales: 'x'"),
        (["ddpm-tiny-8", "--sr_quality", "--steps", "0"], "--steps: '0': must be at least 1"),
    ]
    for argv, message in cases:
        assert cli.main(["eval", *argv, "--output_dir", str(output_dir)]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not output_dir.exists()
