"""`LoadSettings`: which version of a model to read by name, and in which dtype, as diffusers' `from_pretrained` takes
them: `revision` (a branch, tag or commit of a Hub repo; a local folder has none), `variant` (weights saved as
`diffusion_pytorch_model.<variant>.safetensors`, such as `fp16`) and `torch_dtype`.

One object carries the three from the command line (`ddpm-hub sample --revision ...`, `train.py --revision ...`) to
every place a model is loaded by name: `Source.of(name, settings)` and the autoencoder and text encoder of a run.
"""

from dataclasses import dataclass

import torch

TORCH_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LoadSettings:
    """`revision`, `variant` and `torch_dtype` (a name in `TORCH_DTYPES`) of a load by name; None: the default."""

    revision: str | None = None
    variant: str | None = None
    torch_dtype: str | None = None

    def __post_init__(self):
        if self.torch_dtype is not None and self.torch_dtype not in TORCH_DTYPES:
            raise ValueError(f"torch_dtype {self.torch_dtype!r} is not one of {', '.join(TORCH_DTYPES)}.")
        for name in ("revision", "variant"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string, got {value!r}.")

    @property
    def dtype(self) -> torch.dtype | None:
        return None if self.torch_dtype is None else getattr(torch, self.torch_dtype)

    def download(self) -> dict:
        """The Hub download's arguments: `revision`, when given."""
        return {} if self.revision is None else {"revision": self.revision}

    def from_pretrained(self) -> dict:
        """The arguments of a `from_pretrained` call (diffusers' and transformers' names), the given ones only."""
        given = {**self.download(), "variant": self.variant, "torch_dtype": self.dtype}
        return {key: value for key, value in given.items() if value is not None}

    def without_dtype(self) -> "LoadSettings":
        """The same version in the saved dtype (what a run trains in float32)."""
        return LoadSettings(self.revision, self.variant)

    def described(self) -> str:
        """`" (revision v1, variant fp16)"` for messages; empty when nothing is set."""
        parts = [f"{name} {value}" for name, value in vars(self).items() if value is not None]
        return f" ({', '.join(parts)})" if parts else ""
