"""
Issue 20's probe list ("Reliability, part 2"), rerun by hand: each case as a user meets it, on tiny untrained models
in a temporary folder, offline, and what came of it.

    # the ddpm_hub tree first on PYTHONPATH is the one measured: the issue's main ("before") and today's ("after")
    git worktree add --detach /tmp/before 3e9f4ac
    PYTHONPATH=/tmp/before python benchmarks/reliability_probe.py --output /tmp/probe_before.json
    PYTHONPATH=/work/main python benchmarks/reliability_probe.py --output /tmp/probe_after.json --markdown after.md
    python benchmarks/reliability_probe.py --compare /tmp/probe_before.json /tmp/probe_after.json --markdown table.md
    # one case, or a few (a regular expression on the case ids)
    python benchmarks/reliability_probe.py --only 'guidance|push' --output /tmp/some.json

Every case runs in a subprocess of its own, with the working directory in the temporary folder (so that only
PYTHONPATH decides which ddpm_hub is imported): `python -m ddpm_hub.cli ...`, `accelerate launch training/train.py
...` (the measured tree's script), or a `python -c` snippet of the Python API. Hub cases never reach a network:
HF_HUB_OFFLINE=1, HF_ENDPOINT on a closed local port, HF_HOME in the temporary folder, a dummy HF_TOKEN.

Each record has `rc`, `traceback`, `error` (its first line) and a `verdict`:
- command lines: `traceback` is "Traceback (most recent call last)" in stderr; `error` the traceback's exception
  line, else the `...: error: ...` line, else the last line of stderr that is not a progress bar (none for a run that
  ended well: rc 0 without a traceback);
- Python API: the snippet catches what the call raises; `traceback` means it escaped from outside ddpm_hub's own
  code (torch, numpy, json, PIL ...) or is not a ValueError/TypeError/FileNotFoundError; `error` is `Type: message
  (where)`;
- verdict: `ok` (a clear one-line refusal naming the value, or the correct result), `FAIL` (a traceback, a silent
  wrong result, rc 0 where it should refuse, a misleading message), `not set up` (the case cannot even be built on
  this tree: an API or option it lacks), `skipped` (this machine cannot make the situation, e.g. a read-only folder),
  `probe error` (a bug of this script, never counted against the tree).

Cases run in groups (a group in order, as its cases share prerequisites: a trained run, a sampled folder), --jobs
groups side by side, each subprocess with OMP_NUM_THREADS=1: 48 records in 134 s on 2 CPU cores (249 s with a
training run busy on one of them).

Not probed here: the upload itself (the tampered code and the NaN metric reaching the loopback Hub need the test
suite's server: tests/test_reliability_part2.py); this probes the part before the network (staging, the card).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRACEBACK = "Traceback (most recent call last)"
HOSTILE = ["x`<img src=x onerror=alert(1)>`y", "a|b", "new\nline", "**bold** [link](http://evil) ~~s~~ $x$ &amp;"]
RAMP_MEAN = float(sum((i / 63) ** 2 for i in range(64)) / 64)  # the 16-bit test image's true mean in [0, 1]
REPO_ID_WORDS = re.compile(r"(?i)repo.?id")
# --quiet: a failed run's exit status without accelerate's own traceback of the launcher
TRAIN_LAUNCH = ["accelerate", "launch", "--quiet", "--num_processes", "1", "--num_machines", "1"]
TRAIN_LAUNCH += ["--mixed_precision", "no", "--dynamo_backend", "no"]


class NotSetUp(Exception):
    """The case cannot be built on this tree (an API, option or file it lacks)."""


class Skipped(Exception):
    """This machine cannot make the situation the case needs."""


# ----------------------------------------------------------------------------------------------------------------
# Running things the way a user does


@dataclass
class Result:
    argv: list[str]
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.stderr

    @property
    def error(self) -> str:
        """The first line of the error; none for a run that ended well (its stderr is progress and warnings)."""
        return first_error_line(self.stderr) if self.rc != 0 or self.traceback else ""


def first_error_line(stderr: str) -> str:
    progress = re.compile(r"\d+%\|| \d+/\d+ \[|it/s\]|s/it\]")
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not progress.search(line)]
    if TRACEBACK in stderr:
        exception = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b:?")
        found = [line for line in lines if exception.match(line)]
        return found[-1] if found else lines[-1]
    errors = [line for line in lines if re.search(r"(^|: )error: ", line)]
    return errors[0] if errors else (lines[-1] if lines else "")


# A snippet's prelude: `attempt(call)` is what a user's call returned or raised, told apart as the records need.
PRELUDE = r"""
import json, sys, traceback
from pathlib import Path
import numpy as np
import torch
import ddpm_hub
TREE = Path(ddpm_hub.__file__).resolve().parent
WORK = Path(sys.argv[1])
MODELS = WORK / "models"

def attempt(call):
    try:
        value = call()
    except Exception as error:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        path = Path(frame.filename).resolve()
        inside = path.is_relative_to(TREE)
        where = ("ddpm_hub/" + path.relative_to(TREE).as_posix()) if inside else "/".join(path.parts[-3:])
        text = str(error).strip()
        return {
            "raised": type(error).__name__, "message": text.splitlines()[0] if text else "",
            "where": f"{where}:{frame.lineno}", "in_ddpm_hub": inside,
            "clear_type": isinstance(error, (ValueError, TypeError, FileNotFoundError))
            and type(error).__name__ != "JSONDecodeError",
        }
    return {"returned": value}

def quiet(pipeline):
    pipeline.set_progress_bar_config(disable=True)
    return pipeline

result = {}
"""


class Probe:
    """The temporary folder, the environment every subprocess gets, and the prerequisites cases share."""

    def __init__(self, work: Path, env: dict[str, str], tree: Path):
        self.work, self.env, self.tree = work, env, tree
        self.train_script = tree / "training" / "train.py"
        self._done: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.read_only_folders: list[Path] = []
        self.setup: dict[str, str] = {}

    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    def model(self, name: str) -> Path:
        if self.setup.get(name, "missing") != "ok":
            raise NotSetUp(f"the {name!r} model could not be built: {self.setup.get(name, 'missing')}")
        return self.path("models", name)

    def run(self, argv: list, timeout: float = 150, env: dict | None = None) -> Result:
        argv = [str(a) for a in argv]
        started = time.monotonic()
        try:
            done = subprocess.run(
                argv, cwd=self.work, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as expired:
            out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
            err = expired.stderr.decode() if isinstance(expired.stderr, bytes) else expired.stderr or ""
            return Result(argv, None, out, err, time.monotonic() - started, timed_out=True)
        return Result(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def cli(self, *args, env: dict | None = None, timeout: float = 150) -> Result:
        return self.run([sys.executable, "-m", "ddpm_hub.cli", *args], timeout, env)

    def train(self, *args, timeout: float = 300) -> Result:
        launch = [sys.executable, "-m", "accelerate.commands.launch", *TRAIN_LAUNCH[2:]]
        script = [str(self.train_script)] if self.train_script.is_file() else ["-m", "ddpm_hub.train"]
        return self.run([*launch, *script, *args], timeout)

    def python(self, body: str, timeout: float = 150) -> tuple[Result, dict | None]:
        """A snippet of the Python API (after PRELUDE); what it left in `result`, or None if it did not finish."""
        code = PRELUDE + body + '\nprint("PROBE_RESULT " + json.dumps(result, default=str))\n'
        done = self.run([sys.executable, "-c", code, str(self.work)], timeout)
        done.argv = ["python", "-c", "..."]
        lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE_RESULT ")]
        return done, json.loads(lines[-1][len("PROBE_RESULT ") :]) if lines else None

    def once(self, key: str, make: Callable[[], object]):
        """A prerequisite several cases share (a trained run, a sampled folder), made by the first that needs it."""
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._done:
                try:
                    self._done[key] = make()
                except Exception as error:
                    self._done[key] = error
            value = self._done[key]
        if isinstance(value, Exception):
            raise value
        return value

    def copy(self, source: Path, *parts: str) -> Path:
        target = self.path(*parts)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock", ".*.lock"))
        return target

    def read_only(self, folder: Path) -> Path:
        """`folder` made read-only for this process (chmod; as root, which ignores modes, `chattr +i`)."""
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o555)
        self.read_only_folders.append(folder)
        if not writable(folder):
            return folder
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0 and not writable(folder):
            return folder
        raise Skipped(f"no way to make {folder.name} read-only for this user here")

    def release(self) -> None:
        for folder in self.read_only_folders:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
            os.chmod(folder, 0o755)

    def how(self, result: Result) -> str:
        argv = list(result.argv)
        if argv[:3] == [sys.executable, "-m", "ddpm_hub.cli"]:
            argv = ["ddpm-hub", *argv[3:]]
        elif argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]:
            argv = ["accelerate", "launch", *argv[3:]]
        elif argv[:1] == [sys.executable]:
            argv = ["python", *argv[1:]]
        text = shlex.join(argv).replace(str(self.work), "$WORK").replace(str(self.tree), "$TREE")
        text = text.replace(shlex.join(TRAIN_LAUNCH), "accelerate launch --num_processes 1")
        text = text.replace(shlex.join(TINY), "$TINY").replace(shlex.join(TINY_NO_SAMPLES), "$TINY")
        return text if len(text) < 300 else text[:297] + "..."


def writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# ----------------------------------------------------------------------------------------------------------------
# Verdicts


def record(result: Result, verdict: str, note: str = "", **observed) -> dict:
    return {
        "kind": "command", "rc": result.rc, "traceback": result.traceback, "error": result.error[:300],
        "verdict": verdict,
        "note": note, "seconds": round(result.seconds, 1), "argv": result.argv, **observed,
    }  # fmt: skip


def refused(result: Result, *mentions: str | re.Pattern, note: str = "") -> dict:
    """ok: a non-zero exit with a one-line error (no traceback) that names each of `mentions`; `note` adds to why."""
    also = f"; {note}" if note else ""
    if result.timed_out:
        return record(result, "FAIL", f"timed out after {result.seconds:.0f} s{also}")
    if result.traceback:
        return record(result, "FAIL", f"a traceback instead of a one-line error{also}")
    if result.rc == 0:
        return record(result, "FAIL", f"rc 0: accepted where it should refuse{also}")
    if re.search(r"unrecognized arguments|invalid choice|the following arguments are required", result.error):
        raise NotSetUp(f"an option this tree lacks: {result.error[:200]}")
    missing = [m if isinstance(m, str) else m.pattern for m in mentions if not _mentions(result.error, m)]
    if missing:
        return record(result, "FAIL", f"the error does not name {', '.join(map(repr, missing))}{also}")
    return record(result, "ok", note)


def _mentions(text: str, mention: str | re.Pattern) -> bool:
    return bool(mention.search(text)) if isinstance(mention, re.Pattern) else mention.lower() in text.lower()


def api_record(result: Result, outcome: dict, verdict: str, note: str = "") -> dict:
    """A Python API call's record: what it raised (and where) or returned."""
    raised = "raised" in outcome
    deep = raised and not (outcome["in_ddpm_hub"] and outcome["clear_type"])
    error = f"{outcome['raised']}: {outcome['message']} ({outcome['where']})" if raised else ""
    return {
        "kind": "Python API", "rc": None, "traceback": deep, "error": error[:300], "verdict": verdict, "note": note,
        "seconds": round(result.seconds, 1), "argv": result.argv, "outcome": outcome,
    }  # fmt: skip


def api_refused(result: Result, outcome: dict, *mentions: str, note_if_returned: str = "") -> dict:
    """ok: the call raised a ValueError (or TypeError) from ddpm_hub's own checks, naming each of `mentions`."""
    if "raised" not in outcome:
        return api_record(result, outcome, "FAIL", note_if_returned or f"accepted: returned {outcome['returned']}")
    if not (outcome["in_ddpm_hub"] and outcome["clear_type"]):
        return api_record(result, outcome, "FAIL", "raised from deep inside, not a check of ddpm_hub's")
    missing = [m for m in mentions if m.lower() not in outcome["message"].lower()]
    if missing:
        return api_record(result, outcome, "FAIL", f"the error does not name {', '.join(map(repr, missing))}")
    return api_record(result, outcome, "ok")


def snippet(probe: Probe, body: str, timeout: float = 150) -> tuple[Result, dict]:
    result, values = probe.python(body, timeout)
    if values is None:
        if result.timed_out:
            raise NotSetUp(f"the snippet timed out after {result.seconds:.0f} s")
        raise NotSetUp(f"the snippet did not run on this tree: {result.error[:200]}")
    return result, values


# ----------------------------------------------------------------------------------------------------------------
# The cases


@dataclass
class Case:
    id: str
    group: str
    item: str
    title: str
    run: Callable[[Probe], dict | list[dict]]
    records: list[dict] = field(default_factory=list)


CASES: list[Case] = []


def case(id: str, group: str, item: str, title: str):
    def register(run):
        CASES.append(Case(id, group, item, title, run))
        return run

    return register


# The models, data and files the cases share, built by the measured tree itself (each step on its own: a step the
# old tree cannot do only fails the cases that need it).
SETUP = r"""
import io, shutil
from PIL import Image
from ddpm_hub import DDPMHubPipeline
from ddpm_hub.configs import build_pipeline
HOSTILE = __HOSTILE__

def conditional(num_embeds, names, null):
    base = build_pipeline("ddpm-tiny-8", seed=0, unet_overrides={"num_class_embeds": num_embeds})
    with torch.no_grad():
        base.unet.class_embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    return DDPMHubPipeline(base.unet, base.scheduler, id2label=names, null_class_label=null)

def tiny():
    build_pipeline("ddpm-tiny-8", seed=1).save_pretrained(MODELS / "tiny")

def tiny_seed2():
    build_pipeline("ddpm-tiny-8", seed=2).save_pretrained(MODELS / "tiny-seed2")

def cond6():  # 11 embeddings: 6 named classes trained, the null label 10, rows 6..9 never trained
    conditional(11, {i: f"c{i}" for i in range(6)}, 10).save_pretrained(MODELS / "cond6")

def digits_cond():
    base = build_pipeline("ddpm-digits-16-cond", seed=0)
    names = {i: str(i) for i in range(10)}
    DDPMHubPipeline(base.unet, base.scheduler, id2label=names, null_class_label=10).save_pretrained(
        MODELS / "digits-cond"
    )

def hostile():
    folder = MODELS / "hostile"
    conditional(5, dict(enumerate(HOSTILE)), 4).save_pretrained(folder)
    evil = "evil|set<script>alert(1)</script>"
    options = {"dataset_name": evil, "dataset_split": "tr|ain\n<b>x</b>", "pipeline": "p`<i>q"}
    (folder / "training_options.json").write_text(json.dumps(options))
    (folder / "training_summary.json").write_text(json.dumps({"steps": 3, "dataset": {"source": evil}}))

def nan_metrics():
    folder = MODELS / "nan-metrics"
    build_pipeline("ddpm-tiny-8").save_pretrained(folder)
    (folder / "metrics.json").write_text('{"bpd": {"bits_per_dim": 2.5}, "fid": {"value": NaN, "method": "m"}}')

def tampered():
    folder = MODELS / "tampered"
    build_pipeline("ddpm-tiny-8").save_pretrained(folder)
    pipeline_file = folder / "pipeline_ddpm_hub.py"
    pipeline_file.write_text(pipeline_file.read_text() + "\nimport os\nos.system('echo pwned')\n")
    (folder / "scheduler" / "scheduling_ddpm_hub.py").write_text("raise SystemExit('tampered')\n")
    (folder / "helper_of_mine.py").write_text("x = 1\n")

def cond_config():
    from ddpm_hub.configs import resolve_pipeline_config
    target = WORK / "configs" / "tiny-cond-11"
    shutil.copytree(resolve_pipeline_config("ddpm-tiny-8"), target)
    unet = json.loads((target / "unet" / "config.json").read_text())
    (target / "unet" / "config.json").write_text(json.dumps({**unet, "num_class_embeds": 11}))

def pets():
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (WORK / "data" / "pets" / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(WORK / "data" / "pets" / name / f"{i}.png")

def shards():  # one parquet shard whose ClassLabel column holds -1 in row 2
    import datasets
    def png(value):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (value * 10, 0, 0)).save(buffer, format="PNG")
        return buffer.getvalue()
    labels = [0, 1, -1, 1, 0, 1, 0, 1, 0, 1]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["even", "odd"])})
    rows = {"image": [{"bytes": png(i), "path": f"row{i}.png"} for i in range(len(labels))], "label": labels}
    folder = WORK / "data" / "shards"
    folder.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))

def inputs():
    folder = WORK / "inputs"
    folder.mkdir()
    ramp = (np.linspace(0, 1, 64).reshape(8, 8) ** 2 * 65535).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "sixteen.png")  # a 16-bit grayscale PNG (mode I;16), mean 0.336
    Image.new("RGB", (16, 16)).save(folder / "foreign-16.png", format="PNG")
    Image.new("RGB", (8, 8)).save(folder / "foreign.jpg", format="JPEG")
    (folder / "a-file").write_text("x")

steps = [tiny, tiny_seed2, cond6, digits_cond, hostile, nan_metrics, tampered, cond_config, pets, shards, inputs]
for step in steps:
    outcome = attempt(step)
    name = step.__name__.replace("_", "-")
    result[name] = "ok" if "returned" in outcome else f"{outcome['raised']}: {outcome['message']}"
"""


def run_setup(probe: Probe) -> None:
    result, values = probe.python(SETUP.replace("__HOSTILE__", repr(HOSTILE)), timeout=300)
    if values is None:
        raise SystemExit(f"The probe's setup did not run on this tree ({result.error}):\n{result.stderr[-3000:]}")
    probe.setup = values


# 1. A streamed label outside the classes


@case("stream-minus-one", "stream", "1", "training --streaming on parquet whose ClassLabel column holds -1 in a row")
def stream_minus_one(p: Probe):
    if p.setup.get("shards") != "ok" or p.setup.get("cond-config") != "ok":
        raise NotSetUp(f"shards: {p.setup.get('shards')}; config: {p.setup.get('cond-config')}")
    args = ["--pipeline", p.path("configs", "tiny-cond-11"), "--dataset_name", p.path("data", "shards")]
    args += ["--streaming", "--max_train_steps", "3", "--output_dir", p.path("run-stream")]
    args += ["--cache_dir", p.path("cache-stream"), *TINY_NO_SAMPLES]
    result = p.train(*args)
    skipped = "Skipped a streamed example" in result.stderr
    if result.rc == 0 and not result.traceback:
        return record(result, "ok", "trained; the row was skipped and counted" if skipped else "trained")
    return refused(result, "label")


# 2. sample --output_dir


def sample_into(model: Path, out: Path, *extra) -> list:
    return ["sample", model, "--num_images", "3", "--steps", "1", "--output_dir", out, *extra]


def base_samples(p: Probe) -> Path:
    def make():
        out = p.path("samples-base")
        result = p.cli(*sample_into(p.model("tiny"), out))
        if result.rc != 0:
            raise NotSetUp(f"the first `ddpm-hub sample --output_dir` failed: {result.error}")
        return out

    return p.once("base-samples", make)


@case("export-replaced-weights", "export", "2", "sample --output_dir again after the weights at the same path changed")
def export_replaced_weights(p: Probe):
    model, out = p.copy(p.model("tiny"), "models", "tiny-replaced"), p.path("samples-replaced")
    first = p.cli(*sample_into(model, out))
    if first.rc != 0:
        raise NotSetUp(f"the first export failed: {first.error}")
    seed2 = p.model("tiny-seed2")
    shutil.rmtree(model)
    shutil.copytree(seed2, model)
    result = p.cli(*sample_into(model, out, "--num_images", "6", "--format", "npz"))
    counts = last_json(result.stdout) or {}
    if result.rc == 0 and counts.get("already_there"):
        note = f"two models mixed: written {counts.get('written')}, already_there {counts.get('already_there')}"
        return record(result, "FAIL", note)
    if result.rc == 0:
        return record(result, "ok", f"restarted: written {counts.get('written')}")
    return refused(result, "weights", "tiny-replaced")  # what differs, and of which model


def foreign_file(p: Probe, source: str, name: str):
    out = p.copy(base_samples(p), name)
    shutil.copyfile(p.path("inputs", source), out / "000001.png")
    result = p.cli(*sample_into(p.model("tiny"), out, "--num_images", "5", "--format", "npz"))
    sampled = (out / "000003.png").exists() or any(out.glob("*.npz"))
    if result.rc == 0:
        return record(result, "FAIL", "the foreign file was adopted into the samples (rc 0)")
    if sampled and not result.traceback:
        return record(result, "FAIL", "refused only after sampling")
    return refused(result, "000001.png", note="after sampling" if sampled else "")


@case("export-foreign-size", "export", "2", "sample --output_dir over a folder holding a 16x16 PNG of another model")
def export_foreign_size(p: Probe):
    return foreign_file(p, "foreign-16.png", "samples-foreign-size")


@case("export-foreign-jpeg", "export", "2", "sample --output_dir over a folder holding a JPEG named 000001.png")
def export_foreign_jpeg(p: Probe):
    return foreign_file(p, "foreign.jpg", "samples-foreign-jpeg")


@case("export-truncated-manifest", "export", "2", "sample --output_dir over a folder whose samples.json is truncated")
def export_truncated_manifest(p: Probe):
    out = p.copy(base_samples(p), "samples-truncated")
    (out / "samples.json").write_text('{"model": "x", "sampler"')
    return refused(p.cli(*sample_into(p.model("tiny"), out)), "samples.json")


# 3. Guidance: one range wherever it enters


GUIDANCE = ["nan", "inf", "1e308", "-1"]


def guidance_cli_case(value: str):
    @case(f"guidance-sample-{value}", "guidance", "3", f"sample --guidance_scale {value}")
    def run(p: Probe):
        output = p.path(f"guided-{value}.png")
        args = ["sample", p.model("cond6"), "--class_labels", "1", f"--guidance_scale={value}", "--steps", "1"]
        result = p.cli(*args, "--num_images", "2", "--output", output)
        return refused(result, "guidance", note="the grid was sampled and written" if output.exists() else "")


for _value in GUIDANCE:
    guidance_cli_case(_value)


@case("guidance-api", "guidance", "3", "DDPMHubPipeline(class_labels=1, guidance_scale=...)")
def guidance_api(p: Probe):
    body = f"""
from ddpm_hub import DDPMHubPipeline
pipeline = quiet(DDPMHubPipeline.from_pretrained(MODELS / "cond6"))
def images(scale):
    x = pipeline(class_labels=1, guidance_scale=scale, num_inference_steps=2, output_type="np").images
    return {{"finite": bool(np.isfinite(x).all()), "mean": float(np.nan_to_num(x).mean())}}
for value in {GUIDANCE!r}:
    result[value] = attempt(lambda: images(float(value)))
"""
    p.model("cond6")
    result, values = snippet(p, body)
    return [
        {"id": f"guidance-api-{value}", "title": f"Python API: pipeline(class_labels=1, guidance_scale={value})",
         **api_refused(result, values[value], "guidance")}
        for value in GUIDANCE
    ]  # fmt: skip


@case("guidance-eval-fid-nan", "guidance", "3", "eval --fid --guidance_scale nan (digit features, 4 images)")
def guidance_eval_fid(p: Probe):
    out = p.path("eval-nan")
    args = ["eval", p.model("digits-cond"), "--fid", "--guidance_scale", "nan", "--features", "digits"]
    args += ["--num_images", "4", "--steps", "2", "--kid_subset_size", "2", "--max_images", "40"]
    result = p.cli(*args, "--batch_size", "4", "--output_dir", out, "--cache_dir", p.path("cache-eval"))
    metrics = out / "metrics.json"
    if result.rc == 0:
        text = metrics.read_text() if metrics.is_file() else ""
        values = re.findall(r'"value": ([-\w.]+)', text)
        nan = re.search(r"(?i)\bnan\b", text)
        note = "metrics.json holds NaN" if nan else f"rc 0: measured with nan guidance, metrics.json values {values}"
        return record(result, "FAIL", note, metrics=text[:300])
    return refused(result, "guidance")


@case("guidance-training-nan", "stream", "3", "train.py --validation_guidance_scale nan --dry-run")
def guidance_training(p: Probe):
    if not p.train_script.is_file():
        raise NotSetUp("no training/train.py in this tree")
    args = [sys.executable, p.train_script, "--pipeline", "ddpm-tiny-8", "--validation_guidance_scale", "nan"]
    return refused(p.run([*args, "--dry-run"]), "guidance")


@case("card-nan-metric", "card", "3", "the model card of a folder whose metrics.json holds NaN (what push publishes)")
def card_nan_metric(p: Probe):
    body = """
from ddpm_hub.model_card import render_model_card
result["card"] = attempt(lambda: str(render_model_card(MODELS / "nan-metrics", "alice/nan")))
"""
    p.model("nan-metrics")
    result, values = snippet(p, body)
    outcome = values["card"]
    if "raised" in outcome:
        return api_refused(result, outcome, "finite")
    card = outcome.pop("returned")
    outcome["returned"] = "a card"
    if re.search(r"(?i)value: \.?nan\b|\bnan\b", card):
        return api_record(result, outcome, "FAIL", "the card states the NaN metric")
    return api_record(result, outcome, "ok", "rendered without the NaN metric")


# 4. Markup injection into the model card


@case("card-hostile-names", "card", "4", "the model card of classes and a dataset with Markdown/HTML in their names")
def card_hostile_names(p: Probe):
    body = r"""
import re
from ddpm_hub.model_card import render_model_card
try:
    import markdown_it
except ImportError:
    markdown_it = None
def observe():
    card = str(render_model_card(MODELS / "hostile", "alice/hostile"))
    page = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(card.split("---", 2)[2])
    tags = ("<img", "<script", "<b>", "<i>", "<u>", "<strong>", "<del>", 'href="http://evil"')
    tags = [t for t in tags if t in page]
    rows = [line for line in card.splitlines() if line.startswith("| classes |")]
    cells = len(re.split(r"(?<!\\)\|", rows[0])) - 2 if rows else None
    return {"tags": tags, "classes_row_cells": cells}
result["card"] = attempt(observe) if markdown_it else {"raised": "ImportError", "message": "markdown_it"}
"""
    p.model("hostile")
    result, values = snippet(p, body)
    outcome = values["card"]
    if outcome.get("raised") == "ImportError":
        raise Skipped("markdown_it is not installed here: the card cannot be rendered to see its HTML")
    if "raised" in outcome:
        return api_record(result, outcome, "FAIL", "the card could not be rendered")
    seen = outcome["returned"]
    problems = [f"raw {', '.join(seen['tags'])} in the rendered card"] if seen["tags"] else []
    if seen["classes_row_cells"] not in (None, 2):
        problems.append(f"the classes row has {seen['classes_row_cells']} cells, not 2")
    note = "; ".join(problems) or "every name shown literally"
    return api_record(result, outcome, "FAIL" if problems else "ok", note)


# 5. A tampered shipped code file


@case("publish-tampered-code", "card", "5", "staging a push of a folder whose shipped code files were edited")
def publish_tampered_code(p: Probe):
    body = """
import logging
from ddpm_hub.hub import files_to_upload, stage
warnings = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("ddpm_hub").addHandler(handler)
def observe():
    folder, staging = MODELS / "tampered", WORK / "staging-tampered"
    staging.mkdir()
    stage(folder, files_to_upload(folder), staging, "alice/tampered")
    same = lambda staged, installed: (staging / staged).read_bytes() == (TREE / installed).read_bytes()
    return {
        "pipeline_is_installed": same("pipeline_ddpm_hub.py", "pipeline_ddpm_hub.py"),
        "scheduler_is_installed": same("scheduler/scheduling_ddpm_hub.py", "scheduling_ddpm_hub.py"),
        "foreign_staged": (staging / "helper_of_mine.py").exists(),
        "warned": " ".join(warnings)[:300],
    }
result["stage"] = attempt(observe)
"""
    p.model("tampered")
    result, values = snippet(p, body)
    outcome = values["stage"]
    if "raised" in outcome:
        return api_refused(result, outcome, "pipeline_ddpm_hub.py")
    seen = outcome["returned"]
    problems = [name for name, bad in (
        ("the edited pipeline_ddpm_hub.py is staged", not seen["pipeline_is_installed"]),
        ("the edited scheduling_ddpm_hub.py is staged", not seen["scheduler_is_installed"]),
        ("helper_of_mine.py is staged", seen["foreign_staged"]),
    ) if bad]  # fmt: skip
    note = "; ".join(problems) or ("the installed files staged; warned: " + seen["warned"][:150])
    return api_record(result, outcome, "FAIL" if problems else "ok", note)


@case("publish-local-paths", "card", "also", "staging a push of a run whose records name local paths")
def publish_local_paths(p: Probe):
    body = """
from ddpm_hub.configs import build_pipeline
from ddpm_hub.hub import files_to_upload, stage
run, data = WORK / "runs" / "digits", WORK / "my data" / "photos"
data.mkdir(parents=True)
build_pipeline("ddpm-tiny-8").save_pretrained(run)
options = {"output_dir": str(run), "train_data_dir": str(data), "cache_dir": str(WORK / "cache"), "seed": 0}
(run / "training_options.json").write_text(json.dumps(options))
summary = {"steps": 3, "dataset": {"source": str(data)}}
(run / "training_summary.json").write_text(json.dumps(summary))
def observe():
    staging = WORK / "staging-paths"
    staging.mkdir()
    stage(run, files_to_upload(run), staging, "alice/digits")
    files = [f for f in staging.rglob("*") if f.is_file()]
    return sorted(f.relative_to(staging).as_posix() for f in files if str(WORK).encode() in f.read_bytes())
result["stage"] = attempt(observe)
"""
    result, values = snippet(p, body)
    outcome = values["stage"]
    if "raised" in outcome:
        return api_record(result, outcome, "FAIL", "could not stage")
    leaks = outcome["returned"]
    note = f"the local path is published in {', '.join(leaks)}" if leaks else "no local path staged"
    return api_record(result, outcome, "FAIL" if leaks else "ok", note)


# 6. Resume with another configuration or objective


# tests/helpers.py's TINY, the pipeline apart: a run of seconds
TINY = [
    "--max_train_samples", "64", "--train_batch_size", "4", "--lr_warmup_steps", "2", "--num_validation_images", "4",
    "--ddpm_num_inference_steps", "5", "--validation_steps", "0", "--logger", "none",
]  # fmt: skip
TINY_NO_SAMPLES = TINY[2:]


def base_run(p: Probe) -> Path:
    def make():
        out = p.path("run-base")
        result = p.train(*resume_args(p, out)[:-4], "--max_train_steps", "2", "--checkpointing_steps", "2")
        if result.rc != 0 or not any(out.glob("checkpoints/checkpoint-2")):
            raise NotSetUp(f"the 2-step run with a checkpoint failed: {result.error}")
        return out

    return p.once("base-run", make)


def resume_args(p: Probe, out: Path) -> list:
    common = ["--pipeline", "ddpm-tiny-8", *TINY, "--output_dir", out, "--cache_dir", p.path("cache-train")]
    return [*common, "--max_train_steps", "4", "--resume_from_checkpoint", "latest"]


def resume_case(p: Probe, name: str, extra: list, mention: str) -> dict:
    out = p.copy(base_run(p), name)
    checkpoint = out / "checkpoints" / "checkpoint-2"
    result = p.train(*resume_args(p, out), "--checkpointing_steps", "2", *extra)
    if result.rc == 0:
        return record(result, "FAIL", f"resumed with {' '.join(map(str, extra))}: continued silently (rc 0)")
    if re.search(r"(?i)damaged|delete", result.stderr):
        return record(result, "FAIL", "calls an intact checkpoint damaged / advises deleting it")
    if not checkpoint.is_dir():
        return record(result, "FAIL", "the checkpoint is gone")
    return refused(result, mention)


@case("resume-other-config", "train", "6", "resume an unconditional checkpoint with a class-conditional --pipeline")
def resume_other_config(p: Probe):
    if p.setup.get("cond-config") != "ok":
        raise NotSetUp(f"config: {p.setup.get('cond-config')}")
    return resume_case(p, "run-other-config", ["--pipeline", p.path("configs", "tiny-cond-11")], "num_class_embeds")


@case("resume-prediction-type", "train", "6", "resume an epsilon checkpoint with --prediction_type v_prediction")
def resume_prediction_type(p: Probe):
    return resume_case(p, "run-prediction", ["--prediction_type", "v_prediction"], "prediction_type")


@case("resume-beta-schedule", "train", "6", "resume a linear-schedule checkpoint with --ddpm_beta_schedule cosine")
def resume_beta_schedule(p: Probe):
    return resume_case(p, "run-beta", ["--ddpm_beta_schedule", "cosine"], "beta_schedule")


# 7. Images of other bit depths; masks


@case("decode-16-bit", "images", "7", "a 16-bit PNG (mean 0.336) given to img2img (strength 0) and inpaint (keep all)")
def decode_sixteen_bit(p: Probe):
    body = """
from PIL import Image
from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubPipeline
base = DDPMHubPipeline.from_pretrained(MODELS / "tiny")
image = Image.open(WORK / "inputs" / "sixteen.png")
result["mode"] = image.mode
img2img, inpaint = quiet(DDPMHubImg2ImgPipeline.from_pipe(base)), quiet(DDPMHubInpaintPipeline.from_pipe(base))
keep_all = Image.new("L", (8, 8), 0)
result["img2img"] = attempt(
    lambda: float(img2img(image, strength=0.0, num_inference_steps=2, output_type="np").images.mean())
)
result["inpaint"] = attempt(lambda: float(inpaint(
    image, keep_all, num_inference_steps=1, jump_n_sample=1, output_type="np", generator=torch.manual_seed(0)
).images.mean()))
"""
    p.model("tiny")
    if p.setup.get("inputs") != "ok":
        raise NotSetUp(f"inputs: {p.setup.get('inputs')}")
    result, values = snippet(p, body)
    records = []
    for which in ("img2img", "inpaint"):
        outcome = values[which]
        if "raised" in outcome:
            verdict = api_record(result, outcome, "FAIL", f"a {values['mode']} PNG is refused")
        else:
            mean = outcome["returned"]
            good = abs(mean - RAMP_MEAN) < 0.01
            note = f"mean {mean:.3f} (true {RAMP_MEAN:.3f})" + ("" if good else ": clipped or mis-scaled")
            verdict = api_record(result, outcome, "ok" if good else "FAIL", note)
        records.append({"id": f"decode-16-bit-{which}", "title": f"a 16-bit PNG to {which}: its mean", **verdict})
    return records


@case("masks", "images", "7", "inpaint masks: RGBA whose left half is transparent; a uint8 numpy mask of 0/1")
def masks(p: Probe):
    body = """
from PIL import Image
from ddpm_hub import DDPMHubInpaintPipeline, DDPMHubPipeline
pipeline = quiet(DDPMHubInpaintPipeline.from_pipe(DDPMHubPipeline.from_pretrained(MODELS / "tiny")))
image = np.full((8, 8, 3), 0.25, np.float32)
rgba = np.full((8, 8, 4), 255, np.uint8)  # white everywhere; only the right half opaque
rgba[:, :4, 3] = 0
ones = np.zeros((8, 8), np.uint8)  # 1 on the right half: generate it
ones[:, 4:] = 1
def halves(mask):
    call = {"num_inference_steps": 2, "jump_n_sample": 1, "output_type": "np", "generator": torch.manual_seed(0)}
    x = pipeline(image=image, mask_image=mask, **call).images[0]
    return {"left_change": float(np.abs(x[:, :4] - 0.25).max()), "right_change": float(np.abs(x[:, 4:] - 0.25).max())}
result["rgba"] = attempt(lambda: halves(Image.fromarray(rgba, "RGBA")))
result["uint8-0-1"] = attempt(lambda: halves(ones))
"""
    p.model("tiny")
    result, values = snippet(p, body)
    records = []
    for which, title in (("rgba", "an RGBA mask, left half transparent"), ("uint8-0-1", "a uint8 numpy mask of 0/1")):
        outcome = values[which]
        if "raised" in outcome:
            verdict = api_record(result, outcome, "FAIL", "refused a mask diffusers accepts")
        else:
            seen = outcome["returned"]
            kept, generated = seen["left_change"] < 1e-5, seen["right_change"] > 0.05
            wrong = [] if kept else ["the left half (to keep) was generated"]
            wrong += [] if generated else ["the right half (to generate) was kept"]
            note = "; ".join(wrong) or "the left half kept, the right half generated"
            verdict = api_record(result, outcome, "FAIL" if wrong else "ok", note)
        records.append({"id": f"mask-{which}", "title": f"inpaint with {title}", **verdict})
    return records


@case("api-shapes", "images", "tracebacks", "inpaint a list of an 8x8 and a 16x16 image; img2img noise of (1,3,4,4)")
def api_shapes(p: Probe):
    body = """
from PIL import Image
from ddpm_hub import DDPMHubImg2ImgPipeline, DDPMHubInpaintPipeline, DDPMHubPipeline
base = DDPMHubPipeline.from_pretrained(MODELS / "tiny")
inpaint, img2img = quiet(DDPMHubInpaintPipeline.from_pipe(base)), quiet(DDPMHubImg2ImgPipeline.from_pipe(base))
small, large = Image.new("RGB", (8, 8), (200, 0, 0)), Image.new("RGB", (16, 16), (200, 0, 0))
call = {"num_inference_steps": 1, "jump_n_sample": 1, "output_type": "np"}
result["two-sizes"] = attempt(lambda: list(inpaint([small, large], Image.new("L", (8, 8), 255), **call).images.shape))
result["noise"] = attempt(lambda: list(img2img(
    small, strength=0.5, num_inference_steps=2, noise=torch.randn(1, 3, 4, 4), output_type="np"
).images.shape))
"""
    p.model("tiny")
    result, values = snippet(p, body)
    two = values["two-sizes"]
    if "raised" in two:
        sizes = api_refused(result, two, "size")
    else:
        good = two["returned"] == [2, 8, 8, 3]
        sizes = api_record(result, two, "ok" if good else "FAIL", f"images of shape {two['returned']}")
    noise = api_refused(result, values["noise"], "noise", note_if_returned="a noise of the wrong shape was used")
    return [
        {"id": "inpaint-two-sizes", "title": "Python API: inpaint a list of images of two sizes", **sizes},
        {"id": "img2img-noise-shape", "title": "Python API: img2img with a noise of the wrong shape", **noise},
    ]


# 8. Untrained class ids; --class_labels that are neither ids nor names


def labels_case(id: str, given: str, mention: str, title: str):
    @case(id, "labels", "tracebacks" if id.startswith("class-labels") else "8", title)
    def run(p: Probe):
        output = p.path(f"{id}.png")
        args = ["sample", p.model("cond6"), f"--class_labels={given}", "--steps", "1", "--num_images", "2"]
        result = p.cli(*args, "--output", output)
        verdict = refused(result, mention, note="sampled and written" if output.exists() else "")
        if verdict["verdict"] == "ok" and re.search(r"\b0 ?\.\. ?(9|10)\b|num_class_embeds", result.error):
            verdict.update(verdict="FAIL", note="the message offers ids beyond the 6 trained classes")
        return verdict


labels_case("class-untrained-7", "7", "7", "sample --class_labels 7 on a model trained on 6 classes (11 embeddings)")
labels_case("class-untrained-12", "12", "12", "sample --class_labels 12 there: does the message offer the null id?")
labels_case("class-null-10", "10", "10", "sample --class_labels 10 there (10 is the null label)")
labels_case("class-labels-dashes", "--3", "--3", "sample --class_labels=--3")
labels_case("class-labels-superscript", "²", "²", "sample --class_labels ²")


# 9. The decoded cache


@case("cache-edited", "cache", "9", "a decoded cache hand-edited: the manifest's label_names, its shape; labels.npy")
def cache_edited(p: Probe):
    body = """
from ddpm_hub.data import DataOptions
cache = WORK / "cache-edited"
def load():
    return DataOptions(train_data_dir=str(WORK / "data" / "pets"), cache_dir=str(cache), resolution=8).load(channels=3)
first = load()
built = next((cache / "ddpm_hub_decoded").glob("pets-*"))
def edit(change):
    manifest = json.loads((built / "manifest.json").read_text())
    (built / "manifest.json").write_text(json.dumps(change(manifest)))
edit(lambda m: {**m, "label_names": ["cat", "x`<img src=x onerror=alert(1)>`"]})
result["names"] = attempt(lambda: load().label_names)
edit(lambda m: {**m, "shape": [m["shape"][0], 1, 8, 24]})
result["shape"] = attempt(lambda: list(load().images.shape))
labels = np.load(built / "labels.npy")
labels[3] = 57
np.save(built / "labels.npy", labels)
result["labels"] = attempt(lambda: sorted(set(np.asarray(load().labels).tolist())))
"""
    if p.setup.get("pets") != "ok":
        raise NotSetUp(f"pets: {p.setup.get('pets')}")
    result, values = snippet(p, body)
    expected = {"names": ["cat", "dog"], "shape": [8, 3, 8, 8], "labels": [0, 1]}
    shown = {"names": "label_names", "shape": "images of shape", "labels": "labels"}
    titles = {
        "names": "decoded cache: manifest label_names edited to markup",
        "shape": "decoded cache: manifest shape edited (the same bytes)",
        "labels": "decoded cache: labels.npy edited (a label 57 among classes 0..1)",
    }
    records = []
    for key, title in titles.items():
        outcome = values[key]
        if "raised" in outcome:
            verdict = api_refused(result, outcome, "cache")
        else:
            good = outcome["returned"] == expected[key]
            verdict = api_record(result, outcome, "ok" if good else "FAIL", f"{shown[key]} {outcome['returned']}")
        records.append({"id": f"cache-edited-{key}", "title": title, **verdict})
    return records


@case("cache-read-only", "cache", "9", "a complete decoded cache in a read-only folder (copied without lock files)")
def cache_read_only(p: Probe):
    if p.setup.get("pets") != "ok":
        raise NotSetUp(f"pets: {p.setup.get('pets')}")
    load = """
from ddpm_hub.data import DataOptions
options = DataOptions(train_data_dir=str(WORK / "data" / "pets"), cache_dir=str(WORK / "__CACHE__"), resolution=8)
result["load"] = attempt(lambda: list(options.load(channels=3).images.shape))
"""
    built, values = snippet(p, load.replace("__CACHE__", "cache-ro-source"))
    if "raised" in values["load"]:
        raise NotSetUp(f"the cache could not be built: {values['load']['message']}")
    shipped = p.copy(p.path("cache-ro-source"), "cache-ro")
    p.read_only(shipped / "ddpm_hub_decoded")
    result, values = snippet(p, load.replace("__CACHE__", "cache-ro"))
    outcome = values["load"]
    if "raised" in outcome:
        return api_record(result, outcome, "FAIL", "a complete cache needs write access")
    return api_record(result, outcome, "ok", f"read: {outcome['returned']}")


# Tracebacks instead of clear errors: output paths, repo ids


@case("output-extension", "outputs", "tracebacks", "sample --output x.jpgx")
def output_extension(p: Probe):
    result = p.cli("sample", p.model("tiny"), "--steps", "2", "--num_images", "2", "--output", p.path("x.jpgx"))
    return refused(result, ".jpgx")


@case("output-dir-is-a-file", "outputs", "tracebacks", "sample --output_dir that is a file")
def output_dir_file(p: Probe):
    if p.setup.get("inputs") != "ok":
        raise NotSetUp(f"inputs: {p.setup.get('inputs')}")
    return refused(p.cli(*sample_into(p.model("tiny"), p.path("inputs", "a-file"))), "a-file")


@case("output-read-only", "outputs", "tracebacks", "sample --output into a read-only folder")
def output_read_only(p: Probe):
    locked = p.read_only(p.path("locked-grid"))
    result = p.cli("sample", p.model("tiny"), "--steps", "2", "--num_images", "2", "--output", locked / "grid.png")
    return refused(result, "locked-grid")


@case("output-dir-read-only", "outputs", "tracebacks", "sample --output_dir under a read-only folder")
def output_dir_read_only(p: Probe):
    locked = p.read_only(p.path("locked-export"))
    return refused(p.cli(*sample_into(p.model("tiny"), locked / "samples")), "locked-export")


BAD_REPO_IDS = {
    "space": "probe/bad name", "dots": "../../etc", "three-parts": "probe/x/y", "leading-dash": "-probe/x",
    "empty-name": "probe/", "120-chars": "p" * 120,
}  # fmt: skip


def push_case(key: str, repo_id: str):
    shown = repr(repo_id) if len(repo_id) <= 30 else f"'{repo_id[:12]}...' ({len(repo_id)} characters)"

    @case(f"push-repo-id-{key}", "push", "tracebacks", f"push --repo-id {shown}")
    def run(p: Probe):
        result = p.cli("push", p.model("tiny"), f"--repo-id={repo_id}", env={"HF_TOKEN": "hf_probe_not_a_token"})
        hub = re.search(r"(?i)offline|could not check the token", result.error)
        return refused(result, repo_id, REPO_ID_WORDS, note="the id went to the Hub unchecked" if hub else "")


for _key, _repo_id in BAD_REPO_IDS.items():
    push_case(_key, _repo_id)


# Also: noise a user cannot act on


@case("load-warnings", "card", "also", "load with ddpm_hub and with plain diffusers (trust_remote_code), cast dtypes")
def load_warnings(p: Probe):
    body = """
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from ddpm_hub import DDPMHubPipeline
diffusers_logging.set_verbosity_warning()
def load():
    plain = DiffusionPipeline.from_pretrained(MODELS / "cond6", trust_remote_code=True)
    ours = DDPMHubPipeline.from_pretrained(MODELS / "cond6")
    ours.to(torch.bfloat16)
    plain.to("cpu", torch.float32)
    return "loaded"
result["load"] = attempt(load)
"""
    p.model("cond6")
    result, values = snippet(p, body)
    outcome = values["load"]
    if "raised" in outcome:
        return api_record(result, outcome, "FAIL", "could not load")
    noise = [m for m in ("kept in float32: []", "Expected types for id2label") if m in result.stderr]
    return api_record(result, outcome, "FAIL" if noise else "ok", f"warned: {noise}" if noise else "no such warning")


# ----------------------------------------------------------------------------------------------------------------
# Running the cases, writing the records


def run_case(probe: Probe, one: Case) -> list[dict]:
    base = {"id": one.id, "item": one.item, "title": one.title}
    try:
        produced = one.run(probe)
    except NotSetUp as error:
        produced = {"verdict": "not set up", "note": str(error)[:300]}
    except Skipped as error:
        produced = {"verdict": "skipped", "note": str(error)[:300]}
    except Exception as error:  # the probe's own bug: shown as such, never as the tree's failure
        produced = {"verdict": "probe error", "note": f"{type(error).__name__}: {error}"[:300]}
    records = []
    for one in produced if isinstance(produced, list) else [produced]:
        one = {**base, **one}
        if "argv" in one:
            one["how"] = probe.how(Result(one.pop("argv"), None, "", "", 0))
        for key in ("error", "note"):
            one[key] = str(one.get(key, "")).replace(str(probe.work), "$WORK")
        records.append({"rc": None, "traceback": None, **one})
    return records


def run_group(probe: Probe, cases: list[Case]) -> None:
    for one in cases:
        started = time.monotonic()
        one.records = run_case(probe, one)
        for r in one.records:
            seconds = time.monotonic() - started
            print(f"  {r['verdict']:>11}  {r['id']}  ({seconds:.0f} s)  {r['note'][:90]}", flush=True)


def find_tree(env: dict[str, str], work: Path) -> tuple[dict[str, str], Path, str]:
    """The ddpm_hub that PYTHONPATH gives (this checkout's when none does), its tree root and git commit."""
    ask = [sys.executable, "-c", "import ddpm_hub; print(ddpm_hub.__file__)"]
    found = subprocess.run(ask, cwd=work, env=env, capture_output=True, text=True)
    if found.returncode != 0:
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
        found = subprocess.run(ask, cwd=work, env=env, capture_output=True, text=True, check=True)
    tree = Path(found.stdout.strip()).resolve().parent.parent
    head = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "ddpm_hub"], capture_output=True, text=True)
    commit = head.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "") if head.returncode == 0 else "?"
    return env, tree, commit


def probe_environment(work: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    return {
        **env,
        "HF_HOME": str(work / "hf_home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip


def run_probe(only: str | None, jobs: int, keep: bool) -> dict:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="reliability_probe_"))
    env, tree, commit = find_tree(probe_environment(work), work)
    probe = Probe(work, env, tree)
    print(f"Probing ddpm_hub of {tree} ({commit}) in {work}", flush=True)
    selected = [c for c in CASES if not only or re.search(only, c.id)]
    try:
        run_setup(probe)
        print(f"  setup: {json.dumps(probe.setup)}", flush=True)
        groups: dict[str, list[Case]] = {"train": [], "stream": []}  # the longest first
        for c in selected:
            groups.setdefault(c.group, []).append(c)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for future in [pool.submit(run_group, probe, cases) for cases in groups.values() if cases]:
                future.result()
    finally:
        probe.release()
        if keep:
            print(f"Kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    versions = subprocess.run(
        [sys.executable, "-c", "import torch, diffusers; print(torch.__version__, diffusers.__version__)"],
        env=env, capture_output=True, text=True, cwd=tempfile.gettempdir(),
    ).stdout.split()  # fmt: skip
    records = [r for c in selected for r in c.records]
    return {
        "tree": str(tree), "commit": commit, "python": sys.version.split()[0], "torch_diffusers": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.monotonic() - started, 1),
        "setup": probe.setup, "counts": count(records), "cases": records,
    }  # fmt: skip


def count(records: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts


def cell(text, width: int = 110) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[: width - 3] + "..."
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def summary_cell(r: dict | None) -> str:
    if r is None:
        return "not probed"
    status = r["verdict"] if r["verdict"] != "FAIL" else "**FAIL**"
    how = "Python API" if r.get("kind") == "Python API" else f"rc {r.get('rc')}"
    rc = "" if "kind" not in r else f" ({how}{', traceback' if r.get('traceback') else ''})"
    detail = r.get("note") or r.get("error") or ""
    if r.get("error") and r.get("note") and r["verdict"] != "ok":
        detail = f"{r['note']}: {r['error']}"
    return f"{status}{rc}: {cell(detail, 140)}" if detail else status + rc


def markdown(report: dict) -> str:
    lines = [
        f"Reliability probe (issue 20) of `{report['tree']}` at {report['commit']}, {report['date']}, "
        f"{report['seconds']:.0f} s: {json.dumps(report['counts'])}",
        "",
        "| case | item | how | rc | traceback | error (first line) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["cases"]:
        tb = "" if r.get("traceback") is None else ("yes" if r["traceback"] else "no")
        rc = "API" if r.get("kind") == "Python API" else ("" if r.get("rc") is None else r["rc"])
        verdict = f"{r['verdict']}{': ' + r['note'] if r.get('note') else ''}"
        row = [cell(r["title"], 90), r["item"], cell(r.get("how", ""), 160), rc, tb, cell(r.get("error", ""))]
        lines.append(f"| {' | '.join(map(str, row))} | {cell(verdict)} |")
    return "\n".join(lines) + "\n"


def compare(before: dict, after: dict) -> str:
    old = {r["id"]: r for r in before["cases"]}
    new = {r["id"]: r for r in after["cases"]}
    ids = [r["id"] for r in after["cases"]] + [i for i in old if i not in new]
    titles = {**{i: r["title"] for i, r in old.items()}, **{i: r["title"] for i, r in new.items()}}
    items = {**{i: r["item"] for i, r in old.items()}, **{i: r["item"] for i, r in new.items()}}
    lines = [
        f"Issue 20's probe list rerun by hand (`benchmarks/reliability_probe.py`). Before: `{before['tree']}` at "
        f"{before['commit']} ({json.dumps(before['counts'])}); after: `{after['tree']}` at {after['commit']} "
        f"({json.dumps(after['counts'])}).",
        "",
        "| case | item | before | after |",
        "| --- | --- | --- | --- |",
    ]
    for i in ids:
        row = [cell(titles[i], 90), items[i], summary_cell(old.get(i)), summary_cell(new.get(i))]
        lines.append(f"| {' | '.join(row)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="the JSON of the records (default: print it)")
    parser.add_argument("--markdown", default=None, help="also write a Markdown table there")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="two JSON files: a before/after table")
    parser.add_argument("--only", default=None, help="a regular expression on the case ids (default: every case)")
    parser.add_argument("--jobs", type=int, default=2, help="groups of cases run side by side (default: 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args()
    if args.list:
        for c in CASES:
            print(f"{c.id:32} {c.item:>10}  {c.title}")
        return 0
    if args.compare:
        before, after = (json.loads(Path(path).read_text()) for path in args.compare)
        table = compare(before, after)
        if args.markdown:
            Path(args.markdown).write_text(table)
        print(table)
        return 0
    report = run_probe(args.only, max(1, args.jobs), args.keep)
    text = json.dumps(report, indent=2, default=str)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))
    print(f"{json.dumps(report['counts'])} in {report['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
