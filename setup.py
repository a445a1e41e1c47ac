import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# One place for the version: ddpm_hub/version.py (read as text: the package's dependencies are not installed yet).
VERSION = re.search(
    r'__version__ = "([^"]+)"', Path(__file__).with_name("ddpm_hub").joinpath("version.py").read_text()
).group(1)


class BuildPyWithBundledFiles(build_py):
    """
    Ship the top-level `pipelines/`, `training/` and `model_card.md` inside the package, under `ddpm_hub/_bundled/`,
    where a non-editable install finds them (`ddpm_hub.resources`). The repository keeps one copy of each file.
    """

    BUNDLED = ("pipelines", "training", "model_card.md")

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout's own files
            return
        target = Path(self.build_lib, "ddpm_hub", "_bundled")
        for name in self.BUNDLED:
            source = Path(name)
            files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
            for path in files:
                if "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                self.mkpath(str((target / path).parent))
                self.copy_file(str(path), str(target / path))


setup(
    name="ddpm-hub",
    version=VERSION,
    description="DDPM (Ho et al. 2020) as a Hugging Face diffusers extension: train, evaluate, publish, load.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["ddpm_hub", "ddpm_hub.*"]),
    install_requires=[
        "torch>=2.1",
        "diffusers>=0.42,<0.43",
        "transformers>=4.40",
        "accelerate>=1.0",
        "datasets>=3.0",
        "huggingface-hub>=1.0",
        "safetensors>=0.4",
        "numpy>=1.24",
        "Pillow>=10",
        "scikit-learn>=1.3",  # the built-in digits dataset (ships with the package, works offline)
        "tensorboard>=2.14",  # the default training logger
        "matplotlib>=3.7",  # the bits-per-timestep plot of `ddpm-hub eval --bpd`
        "PyYAML>=6",  # training config files
        "tqdm>=4.60",
        "Jinja2>=3",  # huggingface_hub's ModelCard.from_template renders model_card.md with it
    ],
    extras_require={
        # the wheel test builds a wheel without build isolation: setuptools with its own bdist_wheel (70.1+)
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "psutil>=5.9",
            "ruff>=0.5",
            "setuptools>=70.1",
            "mkdocs>=1.6",
            "mkdocs-material>=9.5",
            "mkdocstrings-python>=1.10",  # tests/test_docs.py builds the site
        ],
        # the documentation site: `mkdocs serve`, `mkdocs build --strict` (CI)
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "mkdocstrings-python>=1.10"],
        # ddpm-hub eval --sr_quality: photographs that builtin:photos does not hold (scikit-image ships them)
        "bench": ["scikit-image>=0.22"],
        "wandb": ["wandb"],
        # FID/KID Inception features (torch-fidelity's port of the TF-FID network); it pulls in torchvision.
        "metrics": ["torch-fidelity>=0.3"],
    },
    cmdclass={"build_py": BuildPyWithBundledFiles},
    entry_points={"console_scripts": ["ddpm-hub=ddpm_hub.cli:main"]},
)
