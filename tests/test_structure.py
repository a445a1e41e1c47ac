"""The package's shape, as docs/internals.md writes it: layers whose imports go one way, a small root, short modules,
shipped files that import nothing of ddpm_hub, and the module paths of 059b148 still importable."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ddpm_hub"

# Bottom to top: a module may import its own layer and those below, never above (docs/internals.md, "Layers").
LAYERS = (
    ("shipped",),
    ("errors", "version", "resources", "runtime", "options", "public", "run_folder", "losses", "pictures"),
    ("loading", "data"),
    ("pipelines",),
    ("evaluation",),
    ("hub",),
    ("training",),
    ("cli", "train", "__init__"),
)
# The user's handles on evaluation and publishing, imported when called: DDPMHubPipeline.likelihood / .push_to_hub.
UPWARD_AT_CALL_TIME = {
    ("ddpm_hub.pipelines.library", "ddpm_hub.evaluation.likelihood"),
    ("ddpm_hub.pipelines.library", "ddpm_hub.hub.publishing"),
}
ROOT_MODULES_AT_MOST = 11
LINES_AT_MOST = 500
LONGER_ALLOWED = {"ddpm_hub/shipped/scheduling_ddpm_hub.py"}  # the scheduler: one self-contained shipped file


def package_modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
        if "_bundled" not in path.parts
    }


def imports_of(name: str, path: Path) -> list[tuple[str, ast.stmt]]:
    """(module, statement) of every import of a ddpm_hub module in `path`, top-level or in a function."""
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "ddpm_hub" or (target.startswith("ddpm_hub.") and target.count(".") == 1 and not node.module):
                found += [(f"{target}.{alias.name}", node) for alias in node.names]
            elif target.startswith("ddpm_hub"):
                found.append((target, node))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names if alias.name.startswith("ddpm_hub")]
    return found


def layer_of(module: str) -> int:
    key = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if key in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS here and to docs/internals.md")


def test_imports_go_one_way_down_the_layers():
    upward, modules = [], package_modules()
    for name, path in modules.items():
        for target, node in imports_of(name, path):
            if target not in modules:  # `from ddpm_hub.x import name`: the module is ddpm_hub.x
                target = target.rpartition(".")[0]
            if layer_of(target) > layer_of(name) and (name, target) not in UPWARD_AT_CALL_TIME:
                upward.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_the_call_time_exceptions_stay_inside_functions():
    """The two upward imports are made when the method is called, so that importing the pipelines loads neither."""
    for name, target in UPWARD_AT_CALL_TIME:
        path = package_modules()[name]
        top_level = {node for node in ast.parse(path.read_text()).body if isinstance(node, ast.ImportFrom)}
        assert all(node not in top_level for found, node in imports_of(name, path) if found == target)


def test_a_small_root_and_short_modules():
    root = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(root) <= ROOT_MODULES_AT_MOST, root
    long = {
        str(path.relative_to(ROOT)): count
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text().splitlines())) > LINES_AT_MOST
        and str(path.relative_to(ROOT)) not in LONGER_ALLOWED
    }
    assert not long, f"modules over {LINES_AT_MOST} lines: {long}"


def test_the_shipped_files_import_nothing_of_ddpm_hub():
    """Plain diffusers runs these files from a repo: the standard library, torch, numpy, PIL, diffusers, each other."""
    allowed = {"torch", "numpy", "PIL", "diffusers"}
    for path in (PACKAGE / "shipped").glob("*_ddpm_hub*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and (PACKAGE / "shipped" / f"{node.module}.py").is_file(), path.name
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for top in (name.split(".")[0] for name in names):
                    assert top in allowed or top in sys.stdlib_module_names, f"{path.name} imports {top}"


@pytest.mark.parametrize(
    "old, new",
    [
        ("ddpm_hub.scheduling_ddpm_hub", "ddpm_hub.shipped.scheduling_ddpm_hub"),
        ("ddpm_hub.pipeline_ddpm_hub", "ddpm_hub.shipped.pipeline_ddpm_hub"),
        ("ddpm_hub.pipeline", "ddpm_hub.pipelines.library"),
        ("ddpm_hub.likelihood", "ddpm_hub.evaluation.likelihood"),
        ("ddpm_hub.model_card", "ddpm_hub.hub.model_card"),
    ],
)
def test_a_module_path_of_059b148_imports_the_moved_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    from ddpm_hub import MOVED_MODULES

    assert MOVED_MODULES[old] == new


def test_every_moved_module_exists():
    from ddpm_hub import MOVED_MODULES

    missing = [new for new in MOVED_MODULES.values() if importlib.util.find_spec(new) is None]
    assert not missing
