# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""DDPMHubPipeline: unconditional pixel-space sampling with a UNet2DModel and a DDPM-family scheduler.

Self-contained on purpose (standard library, numpy, torch, diffusers and huggingface_hub only): this file is shipped
at the root of every published repo (`pipeline_ddpm_hub.py`), which is what lets plain diffusers load the repo with
`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`.
"""

import importlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt")
MODEL_INDEX = "model_index.json"
# Libraries whose classes diffusers imports by name; anything else is shipped as a code file next to its config.
_LIBRARY_COMPONENTS = ("diffusers", "transformers")

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipeline = DDPMHubPipeline.from_pretrained("pipelines/ddpm-digits-16")  # a trained folder or a Hub repo id
        >>> images = pipeline(batch_size=4, num_inference_steps=50, generator=torch.manual_seed(0)).images
        >>> images[0].save("digit.png")
        ```
"""


class DDPMHubPipeline(DiffusionPipeline):
    """
    Pipeline for unconditional image generation with a DDPM (Ho et al. 2020).

    Args:
        unet ([`UNet2DModel`]): the noise (or x_0, or v) prediction network; `out_channels` is twice `in_channels`
            when the scheduler learns the variance (`variance_type="learned_range"`).
        scheduler ([`SchedulerMixin`]): `DDPMHubScheduler`, or any diffusers scheduler built from its config
            (`DDIMScheduler`, `DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`, `DDPMScheduler`, ...).
    """

    model_cpu_offload_seq = "unet"
    # Scheduler classes loadable by name without trust_remote_code; the installed ddpm_hub package registers its own.
    _scheduler_classes: dict[str, type] = {}

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @classmethod
    def register_scheduler_class(cls, scheduler_class: type) -> None:
        """Make `scheduler_class` loadable from a `model_index.json` entry naming its class, without remote code."""
        cls._scheduler_classes[scheduler_class.__name__] = scheduler_class

    # ----------------------------------------------------------------------------------------------------------------
    # Sampling

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        timesteps: list[int] | None = None,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        output_type: Literal["pil", "np", "pt"] = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """
        Generate images with the reverse process (Algorithm 2).

        Args:
            batch_size (`int`, defaults to 1): number of images.
            generator (`torch.Generator` or a list of `batch_size` of them): makes sampling deterministic; a list
                gives each image its own stream, so image i is the same whatever the batch size.
            num_inference_steps (`int`, defaults to 1000): steps of the (respaced) chain; at most the number of
                training timesteps.
            timesteps (`list[int]`, *optional*): an explicit descending chain; overrides `num_inference_steps`.
            eta (`float`, defaults to 0.0): DDIM's noise scale; only for schedulers whose `step` takes `eta`.
            noise (`torch.Tensor` `[batch_size x C x H x W]`, *optional*): x_T to start from instead of fresh noise.
            output_type (`"pil"`, `"np"` or `"pt"`, defaults to `"pil"`): PIL images (mode "L" for one channel),
                a float numpy array `[N x H x W x C]` in [0, 1], or a torch tensor `[N x C x H x W]` in [0, 1].
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] rather than a tuple.
        """
        shape = self._sample_shape(batch_size)
        step_kwargs = self._check_inputs(batch_size, generator, eta, noise, output_type, shape)

        # 1. x_T ~ N(0, I) (Algorithm 2, line 1), scaled for schedulers that parameterise noise by sigma.
        if noise is None:
            noise = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        image = noise.to(device=self.device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma

        # 2. The chain to walk: all training timesteps, or a respaced subset.
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps, device=self.device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)

        # 3. x_t -> x_{t-1} for t = T..1 (Algorithm 2, lines 2-5).
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(image, t)
            model_output = self._scheduler_view(self.unet(model_input, t).sample, image)
            image = self.scheduler.step(model_output, t, image, **step_kwargs).prev_sample

        # 4. [-1, 1] -> [0, 1] and the requested container.
        image = (image / 2 + 0.5).clamp(0, 1).float()
        if output_type == "pt":
            images = image
        else:
            images = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _sample_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return (batch_size, self.unet.config.in_channels, height, width)

    def _check_inputs(self, batch_size, generator, eta, noise, output_type, shape) -> dict[str, Any]:
        """Validate the call before any model work; returns the keyword arguments for `scheduler.step`."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; valid choices are: {', '.join(OUTPUT_TYPES)}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got a list of {len(generator)} generators for batch_size={batch_size}; pass one each.")
        if noise is not None and tuple(noise.shape) != shape:
            raise ValueError(
                f"noise must have shape {shape} (batch, channels, height, width), got {tuple(noise.shape)}."
            )
        step_parameters = inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if "generator" in step_parameters else {}
        if "eta" in step_parameters:
            step_kwargs["eta"] = eta
        elif eta != 0.0:
            raise ValueError(
                f"eta={eta} has no meaning for {type(self.scheduler).__name__}; it applies to schedulers whose step "
                "takes eta (DDIMScheduler). Leave eta at 0 or switch scheduler."
            )
        return step_kwargs

    def _scheduler_view(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """A learned-variance UNet outputs 2C channels; schedulers that cannot use the variance get the first C."""
        channels = sample.shape[1]
        if model_output.shape[1] == channels:
            return model_output
        learns_variance = getattr(self.scheduler.config, "variance_type", None) in ("learned", "learned_range")
        if learns_variance and (
            hasattr(self.scheduler, "p_mean_variance") or isinstance(self.scheduler, DDPMScheduler)
        ):
            return model_output
        return model_output[:, :channels]

    def likelihood(self, images: torch.Tensor, **kwargs):
        """
        Bits/dim of uint8 images `[N x C x H x W]` by the variational bound (DDPM eq. 5). Needs the ddpm_hub package;
        see `ddpm_hub.likelihood.bits_per_dim` for the options (full chain, strided bound, sampled estimate).
        """
        try:  # by name, as in push_to_hub: an import statement makes diffusers warn when it loads this file
            bits_per_dim = importlib.import_module("ddpm_hub.likelihood").bits_per_dim
        except ImportError as error:  # this file was loaded as remote code, without the ddpm_hub package
            raise ImportError(
                "DDPMHubPipeline.likelihood needs the ddpm_hub package (pip install ddpm-hub)."
            ) from error
        return bits_per_dim(self, images, **kwargs)

    # ----------------------------------------------------------------------------------------------------------------
    # Saving: the diffusers layout, plus the code files that make the folder loadable with trust_remote_code.

    def save_pretrained(
        self, save_directory: str | os.PathLike, safe_serialization: bool = True, push_to_hub: bool = False, **kwargs
    ) -> None:
        """
        Save weights (safetensors), configs and the pipeline/scheduler code files to `save_directory`.

        The result loads with `DDPMHubPipeline.from_pretrained(save_directory)` and, without ddpm_hub installed, with
        `DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)`.
        """
        if not safe_serialization:
            raise ValueError("DDPMHubPipeline saves safetensors weights only; pickle checkpoints are not written.")
        hub_kwargs = {
            k: kwargs.pop(k) for k in ("repo_id", "token", "private", "commit_message", "revision") if k in kwargs
        }
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        self._ship_code(Path(save_directory))
        if push_to_hub:
            self._upload(save_directory, **hub_kwargs)

    def _ship_code(self, folder: Path) -> None:
        """Copy this file and every non-library component's module into the folder; name them in model_index."""
        index_path = folder / MODEL_INDEX
        index = json.loads(index_path.read_text())
        pipeline_file = Path(inspect.getsourcefile(type(self)))
        shutil.copyfile(pipeline_file, folder / pipeline_file.name)
        index["_class_name"] = [pipeline_file.stem, type(self).__name__]
        for name, entry in list(index.items()):
            if name.startswith("_") or entry[0] in _LIBRARY_COMPONENTS or entry[0] is None:
                continue
            source = Path(inspect.getsourcefile(type(getattr(self, name))))
            shutil.copyfile(source, folder / name / source.name)
            index[name] = [source.stem, entry[1]]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        revision: str | None = None,
    ) -> str:
        """
        Publish this pipeline exactly as `ddpm-hub push` does: save it to a temporary folder, then
        `ddpm_hub.hub.publish` it (validation, model card, one commit, retries). Returns the commit URL.

        The repo has the layout and card of a pushed training output, without the sample grid, training record and
        metrics that only a training run's output folder has.
        """
        if create_pr or variant is not None or not safe_serialization:
            raise ValueError(
                "DDPMHubPipeline.push_to_hub commits safetensors weights to a branch; create_pr, variant and "
                "safe_serialization=False are not supported."
            )
        with tempfile.TemporaryDirectory(prefix="ddpm_hub_push_") as folder:
            self.save_pretrained(folder)
            return self._upload(
                folder,
                repo_id=repo_id,
                token=token,
                private=private,
                commit_message=commit_message,
                revision=revision,
            )

    @staticmethod
    def _upload(
        folder: str | os.PathLike,
        repo_id: str | None = None,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
    ) -> str:
        """`ddpm_hub.hub.publish(folder, ...)`; the repo name defaults to the folder's name."""
        try:  # by name: an import statement makes diffusers warn, when it loads this file, that ddpm_hub is missing
            publish = importlib.import_module("ddpm_hub.hub").publish
        except ImportError as error:  # this file was loaded as remote code, without the ddpm_hub package
            raise ImportError(
                "Publishing a DDPMHubPipeline needs the ddpm_hub package (pip install ddpm-hub): it renders the "
                "model card and checks the token before uploading. Without it, save_pretrained(folder) and upload "
                "the folder yourself."
            ) from error
        return publish(
            folder,
            repo_id=repo_id or Path(folder).resolve().name,
            private=bool(private),
            revision=revision,
            commit_message=commit_message,
            token=token,
        )

    # ----------------------------------------------------------------------------------------------------------------
    # Loading: a local folder or a Hub repo in this layout or in diffusers' DDPMPipeline layout, using the installed
    # scheduler classes (no remote code is run).

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "DDPMHubPipeline":
        """
        Load a pipeline folder or Hub repo saved by `DDPMHubPipeline.save_pretrained` or by diffusers' `DDPMPipeline`.

        Keyword arguments: `torch_dtype`, `revision`, `token`, `cache_dir`, `local_files_only`, `unet` / `scheduler`
        (use these components instead of loading them), `allow_pickle` (default `False`: safetensors weights only;
        pickle weights can run code when unpickled).

        From the Hub only `model_index.json`, the configs and `unet/*.safetensors` are downloaded (no shipped code: the
        installed classes are used); with `HF_HUB_OFFLINE=1` the cached snapshot is used. A missing repo, a private
        repo without access, a missing revision, or an uncached repo offline raise huggingface_hub's exception types
        with a message naming the repo, the cause and the fix.
        """
        unet = kwargs.pop("unet", None)
        scheduler = kwargs.pop("scheduler", None)
        torch_dtype = kwargs.pop("torch_dtype", None)
        allow_pickle = kwargs.pop("allow_pickle", False)
        download_kwargs = {
            k: kwargs.pop(k) for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs
        }
        if kwargs:
            raise TypeError(f"DDPMHubPipeline.from_pretrained got unexpected arguments: {', '.join(sorted(kwargs))}.")

        folder = _pipeline_folder(pretrained_model_name_or_path, allow_pickle, **download_kwargs)
        index = _read_model_index(folder, pretrained_model_name_or_path)
        if unet is None:
            _check_unet_weights(folder, pretrained_model_name_or_path, allow_pickle, download_kwargs)
            unet = UNet2DModel.from_pretrained(
                folder, subfolder="unet", torch_dtype=torch_dtype, use_safetensors=None if allow_pickle else True
            )
        if scheduler is None:
            scheduler = cls._load_scheduler(folder, index["scheduler"], pretrained_model_name_or_path)
        return cls(unet=unet, scheduler=scheduler)

    @classmethod
    def _load_scheduler(cls, folder: Path, entry: list, source: str | os.PathLike) -> SchedulerMixin:
        library, class_name = entry
        if class_name in cls._scheduler_classes:
            return cls._scheduler_classes[class_name].from_pretrained(folder, subfolder="scheduler")
        import diffusers

        scheduler_class = getattr(diffusers, class_name, None) if library == "diffusers" else None
        if scheduler_class is None or not issubclass(scheduler_class, SchedulerMixin):
            raise ValueError(
                f"{source}: the scheduler is {library}.{class_name}, which is neither a diffusers scheduler nor one "
                f"installed here ({', '.join(cls._scheduler_classes) or 'none registered'}). Install ddpm_hub, or "
                "load with DiffusionPipeline.from_pretrained(..., trust_remote_code=True) to run the shipped code."
            )
        scheduler = scheduler_class.from_pretrained(folder, subfolder="scheduler")
        return cls._upgrade_ddpm_scheduler(scheduler)

    @classmethod
    def _upgrade_ddpm_scheduler(cls, scheduler: SchedulerMixin) -> SchedulerMixin:
        """diffusers' DDPMScheduler becomes DDPMHubScheduler (same chain, bit for bit; adds the likelihood helpers)."""
        ours = cls._scheduler_classes.get("DDPMHubScheduler")
        if ours is None or type(scheduler) is not DDPMScheduler:
            return scheduler
        try:
            return ours.from_config(scheduler.config)
        except ValueError:  # a variance type only diffusers has (fixed_small_log, learned): keep its class
            return scheduler


# Only these files are downloaded for DDPMHubPipeline: no shipped code (the installed classes are used), no pickles.
_LOAD_PATTERNS = [MODEL_INDEX, "scheduler/*.json", "unet/*.json", "unet/*.safetensors"]
_PICKLE_PATTERNS = ["unet/*.bin"]
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _pipeline_folder(name_or_path: str | os.PathLike, allow_pickle: bool, **download_kwargs) -> Path:
    """
    A local folder as is; otherwise a snapshot of the Hub repo with only the files loading needs (from the cache when
    offline). Hub failures are re-raised with their type kept and a message naming the repo, the cause and the fix.
    """
    if os.path.isdir(name_or_path):
        folder = Path(name_or_path)
    else:
        from huggingface_hub import snapshot_download

        repo_id = str(name_or_path)
        patterns = _LOAD_PATTERNS + (_PICKLE_PATTERNS if allow_pickle else [])
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns, **download_kwargs))
        except Exception as error:
            explained = _explain_hub_error(error, repo_id, download_kwargs)
            if explained is None:
                raise
            raise explained from error
    return folder


def _check_unet_weights(folder: Path, source: str | os.PathLike, allow_pickle: bool, download_kwargs: dict) -> None:
    """Safetensors UNet weights, or pickle weights the caller opted in to; otherwise say what exists and what to do."""
    if any(folder.glob("unet/*.safetensors")):
        return
    if os.path.isdir(source):
        files = [path.relative_to(folder).as_posix() for path in folder.glob("unet/*")]
    else:
        files = _remote_files(str(source), download_kwargs)
    pickles = sorted(f for f in files if f.startswith("unet/") and f.endswith(_PICKLE_SUFFIXES))
    if not pickles:
        raise FileNotFoundError(
            f"{source} has no UNet weights: expected unet/diffusion_pytorch_model.safetensors next to "
            f"unet/config.json."
        )
    if not allow_pickle:
        raise ValueError(
            f"{source} has only pickle weights ({', '.join(pickles)}), no safetensors. Unpickling can run arbitrary "
            "code, so they are not loaded by default. If you trust this source, pass allow_pickle=True to "
            "from_pretrained (then save_pretrained writes safetensors)."
        )
    if not any(f.endswith(".bin") for f in pickles):  # allow_pickle: diffusers reads unet/*.bin only
        raise FileNotFoundError(
            f"{source} has UNet weights only as {', '.join(pickles)}; diffusers loads "
            "unet/diffusion_pytorch_model.safetensors or unet/diffusion_pytorch_model.bin."
        )


def _remote_files(repo_id: str, download_kwargs: dict) -> list[str]:
    """The repo's file list, or [] where it cannot be had (offline)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().list_repo_files(
            repo_id, revision=download_kwargs.get("revision"), token=download_kwargs.get("token")
        )
    except Exception:  # noqa: BLE001 - only used to word an error that is raised anyway
        return []


def _explain_hub_error(error: Exception, repo_id: str, download_kwargs: dict) -> Exception | None:
    """The same exception type with a message naming the repo, the cause and the fix; None if not a Hub error."""
    from huggingface_hub import constants, errors

    revision = download_kwargs.get("revision") or "main"
    at = f"{constants.ENDPOINT}/{repo_id}"
    if isinstance(error, errors.HFValidationError):
        message = f"{repo_id!r} is neither a local folder nor a valid Hub repo id ('namespace/name'): {error}"
    elif isinstance(error, errors.GatedRepoError):
        message = (
            f"{repo_id} is a gated repo: accept its conditions at {at} and pass a token of an account with access "
            "(token=..., HF_TOKEN or `hf auth login`)."
        )
    elif isinstance(error, errors.RepositoryNotFoundError):
        message = (
            f"Repository {repo_id!r} not found at {constants.ENDPOINT}: it does not exist, or it is private and "
            f"{_token_phrase(download_kwargs.get('token'))}. Check the repo id; for a private repo pass a token "
            "that can read it (token=..., HF_TOKEN or `hf auth login`). There is no local folder of that name either."
        )
    elif isinstance(error, errors.RevisionNotFoundError):
        message = (
            f"{repo_id} has no revision {revision!r} (branch, tag or commit) at {constants.ENDPOINT}. "
            f"List its branches and tags with huggingface_hub.HfApi().list_repo_refs({repo_id!r})."
        )
    elif isinstance(error, errors.LocalEntryNotFoundError):
        offline = constants.HF_HUB_OFFLINE or download_kwargs.get("local_files_only")
        cache = download_kwargs.get("cache_dir") or constants.HF_HUB_CACHE
        if offline:
            message = (
                f"{repo_id} (revision {revision!r}) is not in the Hub cache {cache}, and downloads are disabled "
                "(HF_HUB_OFFLINE=1 or local_files_only=True). Load it once with network access, or point "
                "cache_dir/HF_HOME at the cache that has it."
            )
        else:
            message = (
                f"Could not download {repo_id} (revision {revision!r}) from {constants.ENDPOINT}, and it is not in "
                f"the Hub cache {cache}: the Hub could not be reached or failed ({error}). Check the network and "
                "HF_ENDPOINT, then try again."
            )
    elif isinstance(error, errors.HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        causes = {
            401: f"the token was rejected (401); {_token_phrase(download_kwargs.get('token'))}",
            403: "the token may not read this repo (403)",
        }
        cause = causes.get(status, f"the Hub answered HTTP {status}: {error.server_message or error}")
        message = f"Could not load {repo_id} (revision {revision!r}) from {constants.ENDPOINT}: {cause}."
    else:
        return None
    return _same_type(error, message)


def _token_phrase(token: str | bool | None) -> str:
    if token is False:
        return "no token was sent (token=False)"
    if token is None:
        from huggingface_hub import get_token

        return (
            "no token was sent (none given, HF_TOKEN unset, not logged in)"
            if get_token() is None
            else ("the token in use (HF_TOKEN or the login cache) has no access to it")
        )
    return "the token given has no access to it"


def _same_type(error: Exception, message: str) -> Exception:
    """`error`'s class with `message`, so that `except RepositoryNotFoundError` and the like keep working."""
    from huggingface_hub import errors

    try:
        if isinstance(error, errors.HfHubHTTPError):
            return type(error)(message, response=error.response, server_message=error.server_message)
        return type(error)(message)
    except Exception:  # noqa: BLE001 - an exception class with another signature: keep the message
        return OSError(message)


def _read_model_index(folder: Path, source: str | os.PathLike) -> dict:
    path = folder / MODEL_INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{source} has no {MODEL_INDEX}; it is not a diffusers pipeline folder or repo.")
    index = json.loads(path.read_text())
    unet_entry = index.get("unet")
    if not unet_entry or unet_entry[1] != "UNet2DModel" or not index.get("scheduler"):
        components = {k: v for k, v in index.items() if not k.startswith("_")}
        raise ValueError(
            f"{source} is not a DDPM pipeline: expected a UNet2DModel 'unet' and a 'scheduler' in {MODEL_INDEX}, "
            f"found {components}."
        )
    return index
