"""Publishing (ddpm_hub.hub.publishing, the model card, `ddpm-hub push`) and loading by repo id, against the loopback
Hub.

    pytest tests/test_hub.py -q --durations=0

The Hub is tests/hub_server.py driven by the real huggingface_hub client (see tests/conftest.py). Loading without
ddpm_hub and offline loading run in subprocesses: the first cannot import ddpm_hub, the second has HF_HUB_OFFLINE=1
(huggingface_hub reads it once, at import).
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UniPCMultistepScheduler
from helpers import WEIGHTS, error_of, trained_folder
from hub_server import HubServer
from huggingface_hub import HfApi, ModelCard, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from processes import run_process_group
from safetensors.torch import load_file, save_file

import ddpm_hub.hub.retries
import ddpm_hub.hub.staging
from ddpm_hub import DDPMHubPipeline, DDPMHubScheduler, cli
from ddpm_hub.errors import UsageError
from ddpm_hub.hub.model_card import PIPELINE_TAG, render_model_card
from ddpm_hub.hub.publishing import PublishError, check_can_publish, publish
from ddpm_hub.pictures import make_grid
from ddpm_hub.pipelines import Source
from ddpm_hub.run_folder import METRICS_FILE
from ddpm_hub.training.options import parse_options

ROOT = Path(__file__).resolve().parent.parent
ALICE, ALICE_READ, BOB = "hf_alice_write", "hf_alice_read", "hf_bob_write"
# What a published repo holds (besides .gitattributes): the pipeline, its shipped code, the card and the run's files.
PIPELINE_FILES = {
    "model_index.json",
    "call_arguments_ddpm_hub.py",
    "condition_batch_ddpm_hub.py",
    "conditioning_ddpm_hub.py",
    "image_embeds_ddpm_hub.py",
    "image_processing_ddpm_hub.py",
    "latents_ddpm_hub.py",
    "pipeline_ddpm_hub.py",
    "pipeline_ddpm_hub_img2img.py",
    "pipeline_ddpm_hub_inpaint.py",
    "pipeline_ddpm_hub_unclip_variation.py",
    "samplers_ddpm_hub.py",
    "scheduler/scheduler_config.json",
    "scheduler/scheduling_ddpm_hub.py",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "README.md",
}
RUN_FILES = {"samples.png", "training_options.json", "training_summary.json"}
# A trained pixel model is saved with diffusers' UniPC (its fast default sampler): no scheduler code to ship.
TRAINED_FILES = PIPELINE_FILES - {"scheduler/scheduling_ddpm_hub.py"}


# The tests that measure the publish deadline against the real retry delays (1, 2, 4, 8 s); the others retry at once.
REAL_RETRY_DELAYS = {"test_a_failing_hub_is_reported_within_the_publish_deadline"}


@pytest.fixture(autouse=True)
def no_retry_delays(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.originalname not in REAL_RETRY_DELAYS:
        monkeypatch.setattr(ddpm_hub.hub.retries, "RETRY_DELAYS", (0.0, 0.0, 0.0, 0.0))


@pytest.fixture
def repo_id(hub_server: HubServer) -> str:
    return f"alice/ddpm-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def lfs(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    monkeypatch.setattr(hub_server, "lfs_threshold", 2048)  # the ~200 kB weights take the LFS path
    return hub_server


def tiny(seed: int = 0) -> DDPMHubPipeline:
    pipeline = Source.of("ddpm-tiny-8").build(seed=seed)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sample(pipeline, seed: int = 0) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(batch_size=2, num_inference_steps=4, generator=torch.manual_seed(seed), output_type="np").images


def make_output_dir(folder: Path, pipeline: DDPMHubPipeline | None = None) -> Path:
    """A training output folder built by hand: the pipeline, samples, the run's JSON files, and files never to push."""
    pipeline = pipeline or tiny()
    pipeline.save_pretrained(folder)
    images = pipeline(batch_size=4, num_inference_steps=2, generator=torch.manual_seed(0)).images
    make_grid(images).save(folder / "samples.png")
    summary = {"steps": 7, "images_seen": 28, "global_batch_size": 4, "num_processes": 1, "device": "cpu"}
    summary.update(mixed_precision="no", ema=False, samples={"file": "samples.png", "num_images": 4, "steps": 2})
    (folder / "training_summary.json").write_text(json.dumps(summary))
    options = {"dataset_name": "builtin:digits", "train_batch_size": 4, "learning_rate": 1e-3, "hub_token": ALICE}
    (folder / "training_options.json").write_text(json.dumps(options))
    for junk in (
        "checkpoints/checkpoint-7/optimizer.bin",
        "checkpoints/checkpoint-7/model.safetensors",
        "logs/x.tfevents",
    ):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_bytes(b"not for the Hub")
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def repo_files(repo_id: str, revision: str | None = None) -> set[str]:
    return set(HfApi(token=ALICE).list_repo_files(repo_id, revision=revision)) - {".gitattributes"}


def requests_for(server: HubServer, repo_id: str, since: int) -> list[tuple[str, str]]:
    return [(m, p) for m, p in server.requests[since:] if repo_id in p or p.startswith("/lfs-upload/")]


def run_python(script: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
    # One thread, as conftest sets for this process: samples are compared bit for bit across the two processes (with
    # two threads, MKL may drop to one under load and round differently, by ~1e-6).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


# Plain diffusers, in a process where ddpm_hub cannot be imported: the repo's shipped code does the work.
REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["ddpm_hub"] = None
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    repo_id, out, card_code = sys.argv[1:]
    try:
        DiffusionPipeline.from_pretrained(repo_id)
        print("LOADED WITHOUT trust_remote_code")
    except Exception as error:
        print("REFUSED", type(error).__name__, error)
    namespace = {}
    exec(card_code, namespace)  # the model card's own "diffusers alone" code
    pipeline = namespace["pipeline"]
    pipeline.set_progress_bar_config(disable=True)
    print("LOADED", type(pipeline).__name__, type(pipeline.scheduler).__name__)
    images = pipeline(batch_size=2, num_inference_steps=4, generator=torch.manual_seed(0), output_type="np").images
    np.save(out, images)
    """
)

# DDPMHubPipeline with HF_HUB_OFFLINE=1: from the cache, and a clear error for a repo that is not in it.
OFFLINE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from huggingface_hub import constants
    from ddpm_hub import DDPMHubPipeline
    assert constants.HF_HUB_OFFLINE
    repo_id, cache_dir, out = sys.argv[1:]
    pipeline = DDPMHubPipeline.from_pretrained(repo_id, cache_dir=cache_dir)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=2, num_inference_steps=4, generator=torch.manual_seed(0), output_type="np").images
    np.save(out, images)
    try:
        DDPMHubPipeline.from_pretrained("alice/never-downloaded", cache_dir=cache_dir)
    except OSError as error:
        print("NOT CACHED:", type(error).__name__, error)
    """
)


# ----------------------------------------------------------------------------------------------------------------
# The whole path: train -> push -> load both ways, and offline


@pytest.mark.slow
def test_train_push_and_load_both_ways(
    hub_server: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    output_dir = tmp_path / "run"
    since = len(hub_server.requests)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1"]
    launch += ["--num_processes", "2", "--main_process_port", str(_free_port()), "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", str(ROOT / "training" / "train.py")]
    train_args = [
        "--pipeline", "ddpm-tiny-8", "--max_train_samples", "64", "--train_batch_size", "4", "--lr_warmup_steps", "2",
        "--max_train_steps", "3", "--use_ema", "--num_validation_images", "4", "--ddpm_num_inference_steps", "5",
        "--validation_steps", "0", "--output_dir", str(output_dir), "--push_to_hub", "--hub_model_id", repo_id,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_TOKEN": ALICE}
    result = run_process_group([*launch, *train_args], 300, cwd=ROOT, env=env)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert (output_dir / "checkpoints").is_dir() and (output_dir / "logs").is_dir()

    # Two processes, one upload: one commit, and the repo holds the pipeline and the run's files, nothing else.
    commits = [p for m, p in requests_for(hub_server, repo_id, since) if m == "POST" and "/commit/" in p]
    assert len(commits) == 1
    assert repo_files(repo_id) == TRAINED_FILES | RUN_FILES
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["steps"] == 3 and summary["num_processes"] == 2

    # The card: parses, its metadata validates, it states the real step count and shows the sample grid.
    readme = Path(snapshot_download(repo_id, cache_dir=hub_cache / "card", allow_patterns=["README.md"]))
    card = ModelCard.load(readme / "README.md")
    card.validate()
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert {"pytorch", "diffusers", "unconditional-image-generation", "ddpm"} <= set(card.data.tags)
    assert card.data.license == "apache-2.0" and card.data.eval_results is None  # nothing measured, nothing claimed
    assert "| optimizer steps | 3 (stopped by max_train_steps) |" in card.text
    assert "| hardware | 2 processes on cpu |" in card.text and "exponential moving average" in card.text
    assert "![Samples from" in card.text and "(samples.png)" in card.text
    assert "Nothing was measured" in card.text
    assert f'DDPMHubPipeline.from_pretrained("{repo_id}")' in card.text
    assert f'DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)' in card.text

    # 1. With ddpm_hub: the installed classes, a fresh cache; the card's own code runs too.
    loaded = DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache)
    assert type(loaded.scheduler) is UniPCMultistepScheduler  # a trained pixel model's fast default sampler
    expected = sample(loaded)
    np.testing.assert_array_equal(expected, sample(DDPMHubPipeline.from_pretrained(output_dir)))
    with_ddpm_hub, tasks, diffusers_alone = re.findall(r"```python\n(.*?)```", card.text, flags=re.DOTALL)
    assert "DDPMHubInpaintPipeline.from_pipe(pipeline)" in tasks
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(with_ddpm_hub, namespace)
    assert (tmp_path / "sample.png").is_file()
    np.testing.assert_array_equal(sample(namespace["pipeline"]), expected)

    # 2. Plain diffusers without ddpm_hub, in a fresh HF_HOME: refused without the flag, same images with it.
    stdout = run_python(
        REMOTE_CODE_SCRIPT,
        repo_id,
        str(tmp_path / "remote.npy"),
        diffusers_alone,
        env={"HF_HOME": str(tmp_path / "home")},
        cwd=tmp_path,
    )
    assert "REFUSED" in stdout and "trust_remote_code" in stdout
    assert "LOADED DDPMHubPipeline UniPCMultistepScheduler" in stdout
    np.testing.assert_array_equal(np.load(tmp_path / "remote.npy"), expected)

    # 3. Offline from the cache of 1.
    stdout = run_python(
        OFFLINE_SCRIPT, repo_id, str(hub_cache), str(tmp_path / "offline.npy"), env={"HF_HUB_OFFLINE": "1"}
    )
    np.testing.assert_array_equal(np.load(tmp_path / "offline.npy"), expected)
    assert "NOT CACHED: LocalEntryNotFoundError alice/never-downloaded" in stdout and "HF_HUB_OFFLINE=1" in stdout


# ----------------------------------------------------------------------------------------------------------------
# What goes up


@pytest.mark.parametrize("path", ["inline", "lfs"])
def test_inline_and_lfs_publish_load_and_repush_uploads_nothing(
    request: pytest.FixtureRequest, hub_server: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path, path: str
):
    if path == "lfs":
        request.getfixturevalue("lfs")
    output_dir = make_output_dir(tmp_path / "run")
    before = folder_digest(output_dir)
    since = len(hub_server.requests)
    url = publish(output_dir, repo_id, token=ALICE)
    sent = requests_for(hub_server, repo_id, since)
    lfs_puts = [p for m, p in sent if m == "PUT"]
    assert (len(lfs_puts) > 0) == (path == "lfs")
    head = HfApi().repo_info(repo_id).sha
    assert url.endswith(f"/{repo_id}/commit/{head}")
    assert repo_files(repo_id) == PIPELINE_FILES | RUN_FILES
    assert folder_digest(output_dir) == before  # the output folder is only read

    # Secrets never go up: the options lose their token.
    options = json.loads(
        Path(HfApi().hf_hub_download(repo_id, "training_options.json", cache_dir=hub_cache)).read_text()
    )
    assert "hub_token" not in options and options["learning_rate"] == 1e-3

    loaded = DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache)
    np.testing.assert_array_equal(sample(loaded), sample(tiny()))

    # Pushing the same output again: no upload, no commit, the same head.
    since = len(hub_server.requests)
    assert publish(output_dir, repo_id, token=ALICE) == url
    again = requests_for(hub_server, repo_id, since)
    # (the client may still ask the LFS batch endpoint, which answers that every object is stored)
    assert not [p for m, p in again if m == "PUT" or "/commit/" in p or p.endswith("/verify")]
    assert HfApi().repo_info(repo_id).sha == head


def test_repush_replaces_stale_files_and_keeps_foreign_ones(repo_id: str, tmp_path: Path):
    output_dir = make_output_dir(tmp_path / "run")
    (output_dir / "metrics.json").write_text(json.dumps({"bpd": {"value": 5.1, "stderr": 0.1, "num_images": 10}}))
    publish(output_dir, repo_id, token=ALICE)
    HfApi(token=ALICE).upload_file(path_or_fileobj=b"mine", path_in_repo="notes/extra.txt", repo_id=repo_id)
    (output_dir / "metrics.json").unlink()  # an evaluation of older weights must not stay next to new ones
    tiny(seed=1).save_pretrained(output_dir)
    publish(output_dir, repo_id, token=ALICE)
    assert repo_files(repo_id) == PIPELINE_FILES | RUN_FILES | {"notes/extra.txt"}


def test_push_to_hub_and_the_cli_produce_the_same_repo(repo_id: str, tmp_path: Path, monkeypatch):
    pipeline = tiny()
    url = pipeline.push_to_hub(repo_id, token=ALICE)
    assert "/commit/" in url
    folder = tmp_path / "saved"
    pipeline.save_pretrained(folder)
    other = f"{repo_id}-cli"
    monkeypatch.setenv("HF_TOKEN", ALICE)  # the CLI's token: HF_TOKEN
    assert cli.main(["push", str(folder), "--repo-id", other]) == 0
    assert repo_files(repo_id) == repo_files(other) == PIPELINE_FILES
    first = Path(snapshot_download(repo_id, cache_dir=tmp_path / "a"))
    second = Path(snapshot_download(other, cache_dir=tmp_path / "b"))
    for name in PIPELINE_FILES - {"README.md"}:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    card = (second / "README.md").read_text().replace(other, repo_id).replace(other[6:], repo_id[6:])  # alice/...
    assert (first / "README.md").read_text() == card
    assert "No training record" in card and "## Samples" not in card


def test_cli_push_to_a_branch_with_the_login_cache(repo_id: str, tmp_path: Path, monkeypatch, capsys):
    import huggingface_hub.constants

    output_dir = make_output_dir(tmp_path / "run")
    (tmp_path / "token").write_text(ALICE)  # what `hf auth login` stores
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    argv = ["push", str(output_dir), "--repo-id", repo_id, "--revision", "v1", "--commit-message", "first model"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["repo_id"] == repo_id and "/commit/" in printed["commit_url"]
    assert repo_files(repo_id, revision="v1") == PIPELINE_FILES | RUN_FILES
    assert repo_files(repo_id) == set()  # main keeps only the initial commit
    card = ModelCard.load(Path(HfApi().hf_hub_download(repo_id, "README.md", revision="v1", cache_dir=tmp_path)))
    assert f"from_pretrained(\"{repo_id}\", revision='v1')" in card.text
    loaded = DDPMHubPipeline.from_pretrained(repo_id, revision="v1", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(sample(loaded), sample(tiny()))
    half = DDPMHubPipeline.from_pretrained(
        repo_id, revision="v1", cache_dir=tmp_path / "cache", torch_dtype=torch.bfloat16
    )
    assert half.unet.dtype == torch.bfloat16


def test_only_the_main_process_publishes(hub_server: HubServer, repo_id: str, tmp_path: Path, monkeypatch):
    output_dir = make_output_dir(tmp_path / "run")
    monkeypatch.setenv("RANK", "1")
    since = len(hub_server.requests)
    assert publish(output_dir, repo_id, token=ALICE) is None
    assert hub_server.requests[since:] == []


# ----------------------------------------------------------------------------------------------------------------
# The model card


def test_card_with_evaluation_results_has_a_model_index(tmp_path: Path, hub_server: HubServer):
    """The metrics files `ddpm-hub eval` leaves in the output folder: a real (tiny) --bpd run, FID/KID and a sweep
    written with evaluation's own functions (FID needs the Inception weights, which this machine cannot download)."""
    from ddpm_hub.evaluation.sweep import write_sweep
    from ddpm_hub.run_folder import update_metrics

    output_dir = make_output_dir(tmp_path / "run")
    assert cli.main(["eval", str(output_dir), "--bpd", "--bpd_steps", "4", "--max_images", "8"]) == 0
    bpd = json.loads((output_dir / "metrics.json").read_text())["bpd"]
    method = "DDPM, 250 steps; 1000 samples against 1797 dataset images; inception-v3-compat features (torch-fidelity)"
    common = {"num_images": 1000, "method": method, "dataset": "builtin:digits", "split": None, "seed": 0}
    update_metrics(output_dir, {"fid": {"value": 41.3, **common}, "kid": {"value": 0.0123, "std": 0.0011, **common}})
    row = {"label": "DDPM", "steps": 250, "nfe": 250, "fid": 41.3, "kid_mean": 0.0123, "kid_std": 0.0011}
    settings = {
        "num_images": 1000,
        "num_reference": 1797,
        "dataset": "builtin:digits",
        "features": "x",
        "device": "cpu",
    }
    write_sweep([{**row, "images_per_second": 12.5}], settings, output_dir)

    assert {"metrics.json", "sweep.md", "bits_per_timestep.png"} <= set(
        ddpm_hub.hub.staging.files_to_upload(output_dir)
    )
    assert not {"bpd.json", "sweep.json"} & set(ddpm_hub.hub.staging.files_to_upload(output_dir))  # details stay local
    card = render_model_card(output_dir, "alice/digits", license="mit")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    loaded.validate()
    assert loaded.data.license == "mit" and loaded.data.model_name == "digits"
    results = {r.metric_type: r for r in loaded.data.eval_results}
    assert set(results) == {"bpd", "fid", "kid"}
    assert results["bpd"].metric_value == round(bpd["bits_per_dim"], 6) and results["fid"].metric_value == 41.3
    assert results["bpd"].dataset_type == "builtin:digits" and results["bpd"].task_type == PIPELINE_TAG
    value, error = f"{bpd['bits_per_dim']:.4g}", f"{bpd['standard_error']:.2g}"
    assert f"| {value} | {error} (s.e.) | 8 | strided bound (4 of 1000 steps) on builtin:digits |" in card.text
    assert "| KID | 0.0123 | 0.0011 (s.d.) | 1,000 | DDPM, 250 steps;" in card.text
    assert "![Bits per dimension contributed by each timestep of the bound](bits_per_timestep.png)" in card.text
    assert "| DDPM | 250 | 250 | 41.30 |" in card.text and "Nothing was measured" not in card.text
    assert (
        "| optimizer steps | 7 |" in card.text
        and "| global batch | 4 images (4 per process × 1 process) |" in card.text
    )


def test_card_of_a_bare_pipeline_leaves_out_what_it_does_not_know(tmp_path: Path):
    tiny().save_pretrained(tmp_path)
    text = render_model_card(tmp_path, "alice/bare").text
    assert "## Samples" not in text and "No training record" in text and "Nothing was measured" in text
    assert "45,259 parameters" in text  # counted from the safetensors header
    assert "None" not in text and "{{" not in text


HOSTILE_PROMPTS = [
    "<script>alert(1)</script>",
    "x<img src=x onerror=alert(1)>y",
    "[link](http://evil) **bold** | cell",
    "```\n<b>out of the fence</b>",
]


def test_hostile_prompts_are_shown_literally_in_the_card_and_its_usage_code(tmp_path: Path):
    # issue 28: --validation_prompts went into the published card raw (HTML, links and Markdown live)
    import html

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import text_config

    folder = tmp_path / "text"
    Source.of(text_config(tmp_path)).build(seed=0).save_pretrained(folder)
    evil_encoder = "enc<i>oder</i>`x"
    (folder / "training_options.json").write_text(json.dumps({"text_encoder": evil_encoder}))
    samples = {"num_images": 4, "steps": 2, "prompts": HOSTILE_PROMPTS, "guidance_scale": 3.0}
    (folder / "training_summary.json").write_text(json.dumps({"steps": 3, "samples": samples}))
    (folder / "samples.png").write_bytes(b"")
    card = render_model_card(folder, "alice/hostile-text").text
    markdown_it = pytest.importorskip("markdown_it")
    page = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(card)
    for tag in ("<script", "<img src=x", "<b>", "<i>", "<strong>", 'href="http://evil"'):
        assert tag not in page, tag
    text = html.unescape(re.sub(r"</?code[^>]*>", "", page))  # what a reader sees
    for prompt in HOSTILE_PROMPTS[:3]:
        assert prompt in text  # shown, literally
    assert evil_encoder in text
    usage = [code for code in re.findall(r"```python\n(.*?)```", card, re.S) if "images = pipeline(" in code]
    assert len(usage) == 2 and all("prompt='<script>alert(1)</script>'" in code for code in usage)
    fenced = "```\n<b>out of the fence</b>"
    assert fenced not in card  # its line break and backticks never reach the card raw
    blocks = re.findall(r'<pre><code class="language-python">(.*?)</code></pre>', page, re.S)
    assert len(blocks) == card.count("```python") == 3  # no fence was closed or opened by a prompt


def test_a_bare_url_in_user_text_is_shown_but_never_linked():
    # issue 28 (links live in the card): GFM links `https://...` and `www....` with no markup at all
    from ddpm_hub.public import escape_markdown

    for value in ["see https://evil.example/x", "www.evil.example", "WWW.Evil.example", "[a](ftp://evil.example)"]:
        shown = escape_markdown(value)
        assert not re.search(r"[A-Za-z0-9]://", shown) and not re.search(r"(?i)(?<![\w.])www\.", shown), shown
        assert re.sub(r"\\(.)", r"\1", shown) == value  # without the escapes, the same text
    assert escape_markdown("a:b c0 user/dataset x.www.y") == "a:b c0 user/dataset x.www.y"  # nothing else changes


def test_the_card_says_what_a_text_or_super_resolution_model_is_from_the_pipelines_own_description(tmp_path: Path):
    # issue 28: the text model's card said "16x32 RGB images", the SR model's "32x32 6-channel images, unconditionally"
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import text_config

    text = Source.of(text_config(tmp_path)).build(seed=0)
    text.save_pretrained(tmp_path / "text")
    card = " ".join(render_model_card(tmp_path / "text", "alice/text").text.split())  # one line
    assert text.image_channels == 1 and "generates 8×16 grayscale images from a text prompt" in card
    assert "two coordinate channels (y and x, from -1 to 1 across the image)" in card and "RGB" not in card
    sr_unet = {"block_out_channels": [8, 16], "down_block_types": ["DownBlock2D"] * 2, "norm_num_groups": 4}
    sr_unet.update(up_block_types=["UpBlock2D"] * 2, sample_size=32)
    sr = Source.of("ddpm-sr-16-to-64").build(seed=0, unet_overrides=sr_unet)
    sr.save_pretrained(tmp_path / "sr")
    card = " ".join(render_model_card(tmp_path / "sr", "alice/sr").text.split())  # one line
    assert sr.image_channels == 3 and "generates 32×32 RGB images from 8×8 RGB images (super-resolution, 4×" in card
    assert "the residual over the bicubic upsampling of the input, scaled by 4.0" in card
    assert "6-channel" not in card and "unconditionally" not in card and "Unconditional" not in card
    assert "DDPMHubSuperResolutionPipeline.from_pretrained" in card and "image=" in card and "inpaint" not in card
    plain = Source.of("ddpm-tiny-8").build(seed=0)
    plain.save_pretrained(tmp_path / "plain")
    card = " ".join(render_model_card(tmp_path / "plain", "alice/plain").text.split())  # one line
    assert "generates 8×8 RGB images unconditionally" in card and "coordinate" not in card


# ----------------------------------------------------------------------------------------------------------------
# Failures: credentials, transient errors, bad folders


def test_private_repo_and_credentials(hub_server: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path, capsys):
    output_dir = make_output_dir(tmp_path / "run")
    before = len(hub_server.requests)

    # No token anywhere (conftest unsets HF_TOKEN; HF_HOME has no login): a message naming the fix, nothing sent.
    with pytest.raises(PublishError, match="No Hugging Face token: set HF_TOKEN, run `hf auth login`"):
        publish(output_dir, repo_id, private=True)
    assert cli.main(["push", str(output_dir), "--repo-id", repo_id, "--private"]) == 1
    assert "ddpm-hub push: error: No Hugging Face token" in capsys.readouterr().err
    assert len(hub_server.requests) == before
    with pytest.raises(PublishError, match="is a read token: publishing .* needs a write token"):
        publish(output_dir, repo_id, private=True, token=ALICE_READ)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_TOKEN", ALICE_READ)
        assert cli.main(["push", str(output_dir), "--repo-id", repo_id]) == 1
    assert "The token of alice is a read token" in capsys.readouterr().err
    with pytest.raises(PublishError, match="rejected the token"):
        publish(output_dir, repo_id, private=True, token="hf_not_a_token")
    with pytest.raises(PublishError, match="The token of bob cannot write to alice/"):
        publish(output_dir, repo_id, private=True, token=BOB)
    with pytest.raises(PublishError, match="is a read token"):  # what training checks before it starts
        check_can_publish(repo_id, token=ALICE_READ)
    assert check_can_publish(repo_id.split("/")[1], token=ALICE) == repo_id
    assert not HfApi(token=ALICE).repo_exists(repo_id)  # nothing half-published

    publish(output_dir, repo_id, private=True, token=ALICE)
    assert HfApi(token=ALICE).repo_info(repo_id).private
    with pytest.raises(RepositoryNotFoundError, match=f"Repository '{repo_id}' not found .* private and no token"):
        DDPMHubPipeline.from_pretrained(repo_id, token=False, cache_dir=hub_cache)
    with pytest.raises(RepositoryNotFoundError, match="private and the token given has no access"):
        DDPMHubPipeline.from_pretrained(repo_id, token=BOB, cache_dir=hub_cache)
    loaded = DDPMHubPipeline.from_pretrained(repo_id, token=ALICE_READ, cache_dir=hub_cache)
    np.testing.assert_array_equal(sample(loaded), sample(tiny()))
    card = ModelCard.load(Path(HfApi(token=ALICE).hf_hub_download(repo_id, "README.md", cache_dir=hub_cache)))
    assert "This repo is private" in card.text

    public = f"{repo_id}-public"
    publish(output_dir, public, token=ALICE)
    with pytest.raises(PublishError, match="already exists and is public, but a private repo was asked for"):
        publish(output_dir, public, private=True, token=ALICE)


def test_transient_failures_are_retried(hub_server: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path):
    output_dir = make_output_dir(tmp_path / "run")
    since = len(hub_server.requests)
    hub_server.fail_next(2, status=500, path_contains="/api/repos/create")
    hub_server.fail_next(2, status=500, path_contains=f"/{repo_id}/commit/")
    publish(output_dir, repo_id, token=ALICE)
    assert hub_server.failures_left == 0
    commits = [p for m, p in requests_for(hub_server, repo_id, since) if m == "POST" and "/commit/" in p]
    assert len(commits) == 3  # two 500s, then the commit
    assert repo_files(repo_id) == PIPELINE_FILES | RUN_FILES
    np.testing.assert_array_equal(
        sample(DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache)), sample(tiny())
    )


def test_a_hub_that_keeps_failing_gives_a_clear_error(hub_server: HubServer, repo_id: str, tmp_path: Path):
    output_dir = make_output_dir(tmp_path / "run")
    before = folder_digest(output_dir)
    hub_server.fail_next(100, status=503, path_contains=f"/{repo_id}/commit/")
    try:
        with pytest.raises(PublishError, match=r"kept failing \(HTTP 503.*after 5 attempts.*untouched"):
            publish(output_dir, repo_id, token=ALICE)
    finally:
        hub_server.clear_failures()
    assert folder_digest(output_dir) == before
    assert repo_files(repo_id) == set()  # the repo exists, with no commit of this push


def test_an_unreachable_hub_gives_a_clear_error(tmp_path: Path, monkeypatch):
    import huggingface_hub.constants

    output_dir = make_output_dir(tmp_path / "run")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{_free_port()}")  # nothing listens
    with pytest.raises(PublishError, match=r"kept failing \(ConnectError.*after 5 attempts"):
        publish(output_dir, "alice/unreachable", token=ALICE)


def test_folders_that_cannot_be_published(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        publish(tmp_path / "missing", "alice/x", token=ALICE)
    with pytest.raises(FileNotFoundError, match="has no model_index.json"):
        publish(tmp_path, "alice/x", token=ALICE)
    pickled = tmp_path / "pickled"
    DDPMPipeline(unet=tiny().unet, scheduler=DDPMScheduler()).save_pretrained(pickled, safe_serialization=False)
    with pytest.raises(ValueError, match="no safetensors UNet weights"):
        publish(pickled, "alice/x", token=ALICE)
    output_dir = make_output_dir(tmp_path / "run")
    (output_dir / "scheduler" / "scheduling_ddpm_hub.py").unlink()
    with pytest.raises(
        FileNotFoundError, match="names code files that are not there: scheduler/scheduling_ddpm_hub.py"
    ):
        publish(output_dir, "alice/x", token=ALICE)
    output_dir = make_output_dir(tmp_path / "run2")
    (output_dir / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json is not valid JSON"):
        publish(output_dir, "alice/x", token=ALICE)
    with pytest.raises(ValueError, match="Repo id must"):
        publish(make_output_dir(tmp_path / "run3"), "alice/bad name!", token=ALICE)


def test_a_file_holding_the_token_is_not_published(repo_id: str, tmp_path: Path):
    output_dir = make_output_dir(tmp_path / "run")
    (output_dir / "sweep.md").write_text(f"| run | token |\n| --- | --- |\n| 1 | {ALICE} |\n")
    with pytest.raises(PublishError, match="sweep.md contains the Hub token in use"):
        publish(output_dir, repo_id, token=ALICE)
    assert not HfApi(token=ALICE).repo_exists(repo_id)


# ----------------------------------------------------------------------------------------------------------------
# Loading by repo id: diffusers layouts, pickles, and what goes wrong


def test_diffusers_ddpm_pipeline_repo_loads_by_repo_id(repo_id: str, hub_cache: Path):
    unet = tiny().unet
    reference = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(variance_type="fixed_large"))
    reference.push_to_hub(repo_id, token=ALICE)  # diffusers' own push: DDPMPipeline + DDPMScheduler
    loaded = DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache)
    assert type(loaded.scheduler) is DDPMHubScheduler
    np.testing.assert_array_equal(sample(loaded), sample(reference))


def test_pickle_only_repo_is_refused_unless_allowed(repo_id: str, tmp_path: Path, hub_cache: Path):
    reference = DDPMPipeline(unet=tiny().unet, scheduler=DDPMScheduler())
    reference.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    HfApi(token=ALICE).create_repo(repo_id)
    HfApi(token=ALICE).upload_folder(folder_path=tmp_path / "pickled", repo_id=repo_id)
    with pytest.raises(
        ValueError, match=r"only pickle weights \(unet/diffusion_pytorch_model.bin\).*allow_pickle=True"
    ):
        DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache)
    assert not list(hub_cache.rglob("*.bin"))  # refused before downloading it
    loaded = DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache, allow_pickle=True)
    np.testing.assert_array_equal(sample(loaded), sample(reference))


def test_loading_errors_name_the_repo_and_the_cause(repo_id: str, tmp_path: Path, hub_cache: Path):
    with pytest.raises(RepositoryNotFoundError, match="Repository 'alice/no-such-repo' not found at http://127.0.0.1"):
        DDPMHubPipeline.from_pretrained("alice/no-such-repo", cache_dir=hub_cache)
    publish(make_output_dir(tmp_path / "run"), repo_id, token=ALICE)
    with pytest.raises(RevisionNotFoundError, match=f"{repo_id} has no revision 'v9'"):
        DDPMHubPipeline.from_pretrained(repo_id, revision="v9", cache_dir=hub_cache)
    with pytest.raises(ValueError, match="neither a local folder nor a valid Hub repo id"):
        DDPMHubPipeline.from_pretrained("no/such/folder", cache_dir=hub_cache)

    api = HfApi(token=ALICE)
    not_a_pipeline, other_pipeline = f"{repo_id}-model", f"{repo_id}-other"
    api.create_repo(not_a_pipeline)
    api.upload_file(path_or_fileobj=b'{"model_type": "bert"}', path_in_repo="config.json", repo_id=not_a_pipeline)
    with pytest.raises(FileNotFoundError, match=f"{not_a_pipeline} has no model_index.json"):
        DDPMHubPipeline.from_pretrained(not_a_pipeline, cache_dir=hub_cache)
    api.create_repo(other_pipeline)
    index = {"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}
    api.upload_file(
        path_or_fileobj=json.dumps(index).encode(), path_in_repo="model_index.json", repo_id=other_pipeline
    )
    with pytest.raises(ValueError, match=f"{other_pipeline} is not a DDPM pipeline"):
        DDPMHubPipeline.from_pretrained(other_pipeline, cache_dir=hub_cache)


# ----------------------------------------------------------------------------------------------------------------
# Secrets, non-finite weights, cached private repos, a deadline (the reliability probe): a token never travels in
# argv (refused, with the way to pass it: HF_TOKEN); non-finite weights are never published; a private repo in the
# cache is not served to a token the Hub refuses; a failing Hub is reported within the publish deadline.


def test_a_token_on_the_command_line_or_in_a_config_file_is_refused_without_echoing_it(tmp_path, capsys):
    secret = "hf_SecretValueThatMustNotShow1234"
    with pytest.raises(UsageError) as refused:
        parse_options(["--hub_token", secret])
    assert "HF_TOKEN" in str(refused.value) and secret not in str(refused.value)
    config = tmp_path / "run.yaml"
    config.write_text(f"hub_token: {secret}\n")
    with pytest.raises(UsageError, match="hub_token is refused") as refused:
        parse_options(["--config", str(config)])
    assert secret not in str(refused.value)
    assert cli.main(["push", str(trained_folder(tmp_path / "run")), "--repo-id", "alice/x", "--token", secret]) == 2
    error = capsys.readouterr().err
    assert "--token is refused" in error and "HF_TOKEN" in error and secret not in error


def test_publish_refuses_non_finite_weights(hub_server, tmp_path):
    folder = trained_folder(tmp_path / "run")
    weights = load_file(folder / WEIGHTS)
    weights["conv_in.weight"][0, 0, 0, 0] = float("inf")
    save_file(weights, folder / WEIGHTS)
    before = len(hub_server.requests)
    with pytest.raises(UsageError, match="non-finite weights"):
        publish(folder, "alice/diverged", token=ALICE)
    assert len(hub_server.requests) == before


def test_a_cached_private_repo_is_not_served_to_a_token_the_hub_refuses(hub_server, tmp_path, hub_cache, monkeypatch):
    import huggingface_hub.constants

    repo_id = f"alice/private-cache-{time.monotonic_ns()}"
    folder = trained_folder(tmp_path / "run")
    HfApi(token=ALICE).create_repo(repo_id, private=True)
    HfApi(token=ALICE).upload_folder(folder_path=folder, repo_id=repo_id)
    DDPMHubPipeline.from_pretrained(repo_id, token=ALICE_READ, cache_dir=hub_cache)  # now in the cache
    with pytest.raises(RepositoryNotFoundError, match="private and no token was sent"):
        DDPMHubPipeline.from_pretrained(repo_id, token=False, cache_dir=hub_cache)
    with pytest.raises(RepositoryNotFoundError, match="private and the token given has no access"):
        DDPMHubPipeline.from_pretrained(repo_id, token=BOB, cache_dir=hub_cache)
    # Offline, the cache is what there is (the documented promise): it loads.
    assert DDPMHubPipeline.from_pretrained(repo_id, token=False, cache_dir=hub_cache, local_files_only=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert DDPMHubPipeline.from_pretrained(repo_id, token=False, cache_dir=hub_cache)


def test_a_failing_hub_is_reported_within_the_publish_deadline(hub_server, tmp_path, monkeypatch):
    folder = trained_folder(tmp_path / "run")
    monkeypatch.setattr(ddpm_hub.hub.retries, "PUBLISH_TIMEOUT", 2.5)  # retry delays stay 1, 2, 4, 8 s
    hub_server.fail_next(1000, status=503, path_contains="/api/whoami")
    started = time.monotonic()
    try:
        with pytest.raises(PublishError, match=r"kept failing \(HTTP 503.* after 2 attempts over 1 s"):
            publish(folder, "alice/deadline", token=ALICE)
    finally:
        hub_server.clear_failures()
    assert time.monotonic() - started < 2.5


def test_loading_from_the_environment_token(hub_server, tmp_path, hub_cache, monkeypatch):
    """The way a token is passed instead of argv: HF_TOKEN, read when a repo is loaded or published."""
    repo_id = f"alice/env-token-{time.monotonic_ns()}"
    monkeypatch.setenv("HF_TOKEN", ALICE)
    publish(trained_folder(tmp_path / "run"), repo_id, private=True)
    monkeypatch.setenv("HF_TOKEN", ALICE_READ)
    assert DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache).unet.config.sample_size == 8
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RepositoryNotFoundError):
        DDPMHubPipeline.from_pretrained(repo_id, cache_dir=hub_cache)
    assert os.environ.get("HF_TOKEN") is None


# ----------------------------------------------------------------------------------------------------------------
# Markup injection into the model card; local paths and code files in published files (the second reliability
# probe): everything user-supplied in the model card is escaped for Markdown and HTML; published files carry no
# local paths; the shipped code files published are the installed package's, and a tampered copy is named; push
# refuses a repo id the Hub would refuse.


HOSTILE = ["x`<img src=x onerror=alert(1)>`y", "a|b", "new\nline", "**bold** [link](http://evil) ~~s~~ $x$ &amp;"]


def rendered_html(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def test_hostile_class_and_dataset_names_are_shown_literally_in_the_card(tmp_path):
    import html

    folder = tmp_path / "model"
    base = Source.of("ddpm-tiny-8").build(seed=0, unet_overrides={"num_class_embeds": 5})
    DDPMHubPipeline(base.unet, base.scheduler, id2label=dict(enumerate(HOSTILE)), null_class_label=4).save_pretrained(
        folder
    )
    evil = "evil|set<script>alert(1)</script>"
    (folder / "training_options.json").write_text(
        json.dumps({"dataset_name": evil, "dataset_split": "tr|ain\n<b>x</b>", "pipeline": "p`<i>q"})
    )
    (folder / "training_summary.json").write_text(json.dumps({"steps": 3, "dataset": {"source": evil}}))
    metric = {"value": 1.5, "dataset": evil, "split": "a|b", "method": "<u>m</u>|x", "command": "eval `x` | <b>"}
    (folder / METRICS_FILE).write_text(json.dumps({"fid": metric}))
    card = str(render_model_card(folder, "alice/hostile"))
    page = rendered_html(card.split("---", 2)[2])
    for tag in ("<img", "<script", "<b>", "<i>", "<u>", "<strong>", "<del>", 'href="http://evil"'):
        assert tag not in page, tag
    text = html.unescape(re.sub(r"</?code>", "", page))  # the text a reader sees
    for name in (
        "x`<img src=x onerror=alert(1)>`y",
        "a|b",
        "new line",
        "**bold** [link](http://evil) ~~s~~ $x$ &amp;",
    ):
        assert name in text  # shown, literally
    classes = next(line for line in card.splitlines() if line.startswith("| classes |"))
    cells = [cell for cell in re.split(r"(?<!\\)\|", classes)][1:-1]
    assert len(cells) == 2  # one row, two cells: no name split the table
    assert "a dataset (evil|set<script>alert(1)</script>), split tr|ain <b>x</b>." in text.replace("local ", "")


def test_published_files_carry_no_local_paths(tmp_path):
    from ddpm_hub.hub.staging import files_to_upload, stage

    run, data = tmp_path / "runs" / "digits", tmp_path / "my data" / "photos"
    data.mkdir(parents=True)
    Source.of("ddpm-tiny-8").build().save_pretrained(run)
    options = {
        "output_dir": str(run),
        "train_data_dir": str(data),
        "cache_dir": str(tmp_path / "cache"),
        "pipeline": str(tmp_path / "pipelines" / "ddpm-tiny-8"),
        "resume_from_checkpoint": str(run / "checkpoints" / "checkpoint-30"),
        "logging_dir": "logs",
        "seed": 0,
    }
    (run / "training_options.json").write_text(json.dumps(options))
    skipped = [["cat/broken.png", f"cannot identify image file '{data}/cat/broken.png'"]]
    summary = {"steps": 3, "pipeline": options["pipeline"], "dataset": {"source": str(data), "skipped": skipped}}
    (run / "training_summary.json").write_text(json.dumps(summary))
    (run / METRICS_FILE).write_text(json.dumps({"fid": {"value": 3.0, "dataset": str(data), "method": "m"}}))
    (run / "sweep.md").write_text(
        f"| a |\n| --- |\n| 1 |\n\nProduced by `ddpm-hub eval {run} --train_data_dir {data}`.\n"
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    stage(run, files_to_upload(run), staging, "alice/digits")
    published = {
        path.relative_to(staging).as_posix(): path.read_bytes() for path in staging.rglob("*") if path.is_file()
    }
    leaks = [name for name, content in published.items() if str(tmp_path).encode() in content]
    assert not leaks
    staged = json.loads(published["training_options.json"])
    assert staged["output_dir"] == "." and staged["train_data_dir"] == "photos" and staged["cache_dir"] == "cache"
    assert staged["pipeline"] == "ddpm-tiny-8" and staged["resume_from_checkpoint"] == "checkpoints/checkpoint-30"
    assert staged["logging_dir"] == "logs" and staged["seed"] == 0
    record = json.loads(published["training_summary.json"])
    assert record["dataset"]["skipped"] == [["cat/broken.png", "cannot identify image file 'photos/cat/broken.png'"]]
    assert b"Produced by `ddpm-hub eval . --train_data_dir photos`" in published["sweep.md"]
    assert b"a local image folder (`photos`)" in published["README.md"]


def test_a_tampered_code_file_is_never_published_and_is_named(tmp_path, hub_server, hub_cache, caplog):
    import logging
    from pathlib import Path

    from huggingface_hub import hf_hub_download

    import ddpm_hub
    from ddpm_hub.hub.publishing import publish

    folder = tmp_path / "model"
    Source.of("ddpm-tiny-8").build().save_pretrained(folder)
    pipeline_file, scheduler_file = folder / "pipeline_ddpm_hub.py", folder / "scheduler" / "scheduling_ddpm_hub.py"
    pipeline_file.write_text(pipeline_file.read_text() + "\nimport os\nos.system('echo pwned')\n")
    scheduler_file.write_text("raise SystemExit('tampered')\n")
    (folder / "helper_of_mine.py").write_text("x = 1\n")
    repo_id = f"alice/tampered-{tmp_path.name[-8:]}"
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.hub.staging"):
        publish(folder, repo_id, token="hf_alice_write")
    installed = Path(ddpm_hub.__file__).parent / "shipped"
    for name, source in (("pipeline_ddpm_hub.py", "pipeline_ddpm_hub.py"), ("scheduler/scheduling_ddpm_hub.py", None)):
        remote = Path(hf_hub_download(repo_id, name, cache_dir=hub_cache))
        assert remote.read_bytes() == (installed / (source or "scheduling_ddpm_hub.py")).read_bytes()
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert "differ from ddpm_hub" in warning and "pipeline_ddpm_hub.py, scheduler/scheduling_ddpm_hub.py" in warning
    assert "are not files of ddpm_hub: helper_of_mine.py" in warning


@pytest.mark.parametrize(
    "repo_id", ["probe/bad name", "../../etc", "probe/x/y", "-probe/x", "probe/", "p" * 120, "probe/" + "x" * 100]
)
def test_push_refuses_an_invalid_repo_id_in_one_line_before_any_work(tmp_path, capsys, repo_id, monkeypatch):
    import ddpm_hub.hub.publishing

    folder = tmp_path / "model"
    Source.of("ddpm-tiny-8").build().save_pretrained(folder)
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    monkeypatch.setattr(ddpm_hub.hub.publishing, "files_to_upload", lambda folder: pytest.fail("the folder was read"))
    assert cli.main(["push", str(folder), f"--repo-id={repo_id}"]) == 2
    message = error_of(capsys)
    assert f"The repo id {repo_id!r} is not one the Hub accepts (" in message
    assert "Accepted: NAME or NAMESPACE/NAME, each made of letters, digits" in message
