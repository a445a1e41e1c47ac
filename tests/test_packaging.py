"""The wheel is the whole product: built from the repository's files, installed non-editable into a fresh virtual
environment (reusing this environment's packages, so no download), it has the pipeline configurations, the model card
template and the training entry, and trains from there.

Also: no import cycle between ddpm_hub's modules, and `train.py --dry-run` prints the resolved options.
"""

import ast
import json
import os
import site
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from processes import run_process_group

ROOT = Path(__file__).resolve().parent.parent


def repository_files() -> list[str]:
    """What a clean clone holds (tracked files, plus new ones git does not ignore), without links (a venv's python)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [name for name in listed.stdout.splitlines() if (ROOT / name).is_file() and not (ROOT / name).is_symlink()]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """A venv with the wheel of this checkout installed; returns its python."""
    work = tmp_path_factory.mktemp("wheel")
    source, dist, venv = work / "src", work / "dist", work / "venv"
    with tarfile.open(work / "src.tar", "w") as archive:
        for name in repository_files():
            archive.add(ROOT / name, arcname=name)
    with tarfile.open(work / "src.tar") as archive:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python < 3.10.12 / 3.11.4: no filters
        archive.extractall(source, **safe)  # our own files, written just above
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    reuse_this_environment(python)
    (wheel,) = dist.glob("ddpm_hub-*.whl")
    install = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-index", "--no-deps"]
    subprocess.run([*install, str(wheel)], check=True)
    return python


def reuse_this_environment(python: Path) -> None:
    """Make the venv of `python` see this interpreter's packages after its own.

    `venv --system-site-packages` would expose the *base* interpreter's site-packages: run from inside a virtual
    environment (as a user runs the suite), that is not where torch and diffusers are. A .pth line that adds this
    interpreter's site directories (processing their own .pth files) works from a venv and from a system Python alike.
    """
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    directories = [d for d in (*site.getsitepackages(), site.getusersitepackages()) if Path(d).is_dir()]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in directories)
    (Path(purelib) / "zz_reuse_test_environment.pth").write_text(lines)


def run_installed(python: Path, args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return run_process_group([str(python), *args], timeout, cwd=cwd, env=env)


@pytest.mark.slow
def test_wheel_has_the_configurations_and_trains_from_the_training_entry(installed_wheel, tmp_path):
    python = installed_wheel
    where = run_installed(python, ["-c", "import ddpm_hub; print(ddpm_hub.__file__)"], tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(python.parent.parent) in where.stdout  # the installed copy, not this checkout

    info = run_installed(python, ["-m", "ddpm_hub.cli", "info", "ddpm-cifar10-32"], tmp_path)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["parameters"] == 35_746_307 and "_bundled" in described["pipeline"]

    out = tmp_path / "run"
    args = ["--pipeline", "ddpm-tiny-8", "--max_images", "32", "--train_batch_size", "4", "--max_train_steps", "2"]
    args += ["--num_validation_images", "2", "--ddpm_num_inference_steps", "2", "--logger", "none"]
    args += ["--output_dir", str(out)]
    launch = ["-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ddpm_hub.train"]
    trained = run_installed(python, [*launch, *args], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 2
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file() and (out / "samples.png").is_file()


@pytest.mark.slow
def test_dry_run_prints_the_resolved_options_and_builds_nothing(tmp_path):
    out = tmp_path / "run"
    args = ["--pipeline", "ddpm-digits-16", "--max_train_samples", "64", "--output_dir", str(out), "--dry-run"]
    result = run_process_group([sys.executable, str(ROOT / "training" / "train.py"), *args], 120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["pipeline_source"] == "config"
    options = printed["options"]
    assert options["resolution"] == 16 and options["dataset_name"] == "builtin:digits"  # resolved defaults
    assert options["max_images"] == 64  # diffusers' --max_train_samples is the same option
    assert not out.exists()  # nothing written


def test_no_import_cycle_between_modules():
    """The modules of ddpm_hub form a DAG when every import (top-level or inside a function) counts."""
    package = ROOT / "ddpm_hub"
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in package.rglob("*.py")
        if "_bundled" not in path.parts
    }
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        base = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                parent = base.split(".")
                parent = parent[: len(parent) - node.level + 1] if node.level else []
                stem = ".".join([*parent, node.module] if node.module else parent) if node.level else node.module
                # `from package import module` imports the module; a name that is not a module comes from package
                submodules = [f"{stem}.{alias.name}" for alias in node.names]
                targets = [t for t in submodules if t in modules] or [stem]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}

    visiting, done = set(), set()

    def visit(name: str, path: list[str]) -> None:
        if name in done:
            return
        assert name not in visiting, f"import cycle: {' -> '.join([*path, name])}"
        visiting.add(name)
        for imported in sorted(graph[name]):
            visit(imported, [*path, name])
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
