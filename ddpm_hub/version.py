"""The package version, in one place: `ddpm_hub.__version__`, setup.py and the model card read it."""

__version__ = "0.1.0"
