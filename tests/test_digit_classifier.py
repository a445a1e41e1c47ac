import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from ddpm_hub.evaluation import digit_classifier as dc
from ddpm_hub.evaluation.metrics import extract_features, frechet_distance


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train once into a fresh cache folder; the digits and labels come along."""
    torch.set_num_threads(1)
    cache_dir = tmp_path_factory.mktemp("digit_cache")
    model, report = dc.load_digit_classifier(cache_dir)
    images, labels = dc.load_digits_dataset()
    return model, report, cache_dir, images, labels


def _forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("train_digit_classifier must not be called when the cache is valid")

    monkeypatch.setattr(dc, "train_digit_classifier", fail)


@pytest.mark.slow
def test_heldout_accuracy_is_reported_and_reproducible(trained):
    model, report, cache_dir, images, labels = trained
    assert not model.training
    assert report["heldout_accuracy"] >= 0.97
    assert report["num_heldout"] == 400 and report["num_train"] == len(images) - 400 == 1397
    assert report["seconds"] < 60 and report["version"] == dc.CLASSIFIER_VERSION
    train_idx, heldout_idx = dc.digit_split(len(images), report["num_heldout"], report["seed"])
    assert set(train_idx.tolist()).isdisjoint(heldout_idx.tolist())
    assert len(train_idx) + len(heldout_idx) == len(images)
    predicted, probabilities = dc.classify(model, images[heldout_idx])
    assert predicted.dtype == torch.int64 and probabilities.shape == (400, 10)
    assert torch.allclose(probabilities.sum(1), torch.ones(400), atol=1e-5)
    recomputed = (predicted == labels[heldout_idx]).float().mean().item()
    assert recomputed == pytest.approx(report["heldout_accuracy"], abs=1e-6)
    assert json.loads((cache_dir / dc.REPORT_FILE).read_text()) == report


def test_cache_returns_identical_weights_without_training(trained, monkeypatch):
    model, report, cache_dir, _, _ = trained
    _forbid_training(monkeypatch)
    loaded, loaded_report = dc.load_digit_classifier(cache_dir)
    assert loaded_report == report and not loaded.training
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([dc.WEIGHTS_FILE, dc.REPORT_FILE])


def test_stale_version_or_retrain_flag_retrains(trained, tmp_path, monkeypatch):
    _, _, cache_dir, _, _ = trained
    for name in (dc.WEIGHTS_FILE, dc.REPORT_FILE):
        shutil.copy(cache_dir / name, tmp_path / name)
    stored = json.loads((tmp_path / dc.REPORT_FILE).read_text())
    (tmp_path / dc.REPORT_FILE).write_text(json.dumps({**stored, "version": dc.CLASSIFIER_VERSION + "-old"}))
    calls = []

    def fake_train():
        calls.append(1)
        torch.manual_seed(len(calls))
        return dc.DigitClassifier().eval(), {"heldout_accuracy": 0.5, "seed": 0}

    monkeypatch.setattr(dc, "train_digit_classifier", fake_train)
    model, report = dc.load_digit_classifier(tmp_path)
    assert calls == [1] and report["heldout_accuracy"] == 0.5
    assert json.loads((tmp_path / dc.REPORT_FILE).read_text())["version"] == dc.CLASSIFIER_VERSION
    for name, tensor in dc.load_digit_classifier(tmp_path)[0].state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert calls == [1]  # now valid: loaded, not retrained
    dc.load_digit_classifier(tmp_path, retrain=True)
    assert calls == [1, 1]
    (tmp_path / dc.WEIGHTS_FILE).write_bytes(b"not safetensors")  # does not match the stored hash
    dc.load_digit_classifier(tmp_path)
    assert calls == [1, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dc.WEIGHTS_FILE, dc.REPORT_FILE])


def test_rgb_upsampled_digits_classify_like_grayscale(trained):
    model, _, _, images, labels = trained
    gray, _ = dc.classify(model, images)
    upsampled = F.interpolate(images.float(), size=(32, 32), mode="bilinear", align_corners=False)
    rgb = upsampled.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)
    colour, _ = dc.classify(model, rgb, batch_size=100)
    assert (gray == colour).float().mean() >= 0.95
    assert (gray == labels).float().mean() >= 0.97


def test_prepare_luma_resize_and_range():
    gray = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 16, 16)
    assert torch.equal(dc.prepare(gray)[:, 0, 0, 0], torch.tensor([-1.0, 1.0]))
    red = torch.zeros(1, 3, 20, 12, dtype=torch.uint8)
    red[:, 0] = 255
    out = dc.prepare(red)
    assert out.shape == (1, 1, 16, 16)
    assert torch.allclose(out, torch.full_like(out, 0.299 * 255 / 127.5 - 1), atol=1e-5)
    rgb = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert torch.allclose(dc.prepare(rgb.repeat(1, 3, 1, 1)), dc.prepare(rgb), atol=1e-4)
    with pytest.raises(ValueError):
        dc.prepare(torch.zeros(1, 2, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError):
        dc.prepare(torch.zeros(1, 1, 16, 16))


def test_frechet_distance_separates_real_from_noise_and_blur(trained):
    model, _, _, images, _ = trained
    extractor = dc.digit_feature_extractor(model)
    assert extractor(images[:5].repeat(1, 3, 1, 1)).shape == (5, dc.DigitClassifier.feature_dim)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    first, second = order[: len(order) // 2], order[len(order) // 2 :]
    real = extract_features(images[first], extractor)
    halves = frechet_distance(real, extract_features(images[second], extractor))
    noise = torch.randint(0, 256, images[second].shape, generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    box = torch.ones(1, 1, 7, 7) / 49
    blurred = F.conv2d(F.conv2d(images[second].float(), box, padding=3), box, padding=3).round().to(torch.uint8)
    to_noise = frechet_distance(real, extract_features(noise, extractor))
    to_blurred = frechet_distance(real, extract_features(blurred, extractor))
    assert halves < to_noise / 5
    assert halves < to_blurred / 5


def test_class_balance():
    uniform = dc.class_balance(torch.arange(100) % 10)
    assert uniform["total_variation_from_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert uniform["shares"] == pytest.approx([0.1] * 10) and uniform["num_samples"] == 100
    ones = dc.class_balance(torch.ones(50, dtype=torch.int64))
    assert ones["total_variation_from_uniform"] == pytest.approx(0.9)
    assert ones["shares"] == pytest.approx([0.0, 1.0] + [0.0] * 8)
    half = dc.class_balance(torch.tensor([0, 0, 1, 1]))
    assert half["total_variation_from_uniform"] == pytest.approx(0.8)
    for bad in (torch.tensor([0, 10]), torch.tensor([-1]), torch.tensor([], dtype=torch.int64), torch.tensor([0.0])):
        with pytest.raises(ValueError):
            dc.class_balance(bad)


def test_cli_prints_report_from_cache(trained, monkeypatch, capsys):
    _, report, cache_dir, _, _ = trained
    _forbid_training(monkeypatch)
    dc.main(["--cache_dir", str(cache_dir)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    printed = json.loads(lines[0])
    assert printed["heldout_accuracy"] == report["heldout_accuracy"]
    assert printed["weights"] == str(cache_dir / dc.WEIGHTS_FILE)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DDPM_HUB_CACHE", str(tmp_path))
    assert dc.default_cache_dir() == tmp_path
    monkeypatch.delenv("DDPM_HUB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dc.default_cache_dir() == tmp_path / ".cache" / "ddpm_hub"


def test_training_is_deterministic():
    torch.set_num_threads(1)
    (first, report), (second, _) = dc.train_digit_classifier(epochs=1), dc.train_digit_classifier(epochs=1)
    assert report["epochs"] == 1 and report["seed"] == 0 and not first.training
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    other, _ = dc.train_digit_classifier(seed=1, epochs=1)
    assert not torch.equal(other.head.weight, first.head.weight)
