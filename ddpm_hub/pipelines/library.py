"""The pipelines that `import ddpm_hub` gives: the sampling code of the shipped files (`pipeline_ddpm_hub.py`,
`pipeline_ddpm_hub_inpaint.py`, `_img2img.py`, `_superres.py`, `_unclip_variation.py`) plus what only the installed
package does, loading with the installed classes (`ddpm_hub.loading.components`), saving the code files next to the
weights, publishing (`ddpm_hub.hub`), the likelihood (`ddpm_hub.evaluation.likelihood`) and the library side of the
conditioning carrier (`ddpm_hub.pipelines.conditioning`).

Each class has the name of its shipped class, so that a saved folder's `model_index.json` names the same class
whether it is loaded with this package or, through the shipped file, with plain diffusers and `trust_remote_code`.
The task pipelines are `DDPMHubPipeline`s (subclasses: `isinstance`, the likelihood, loading and publishing), they
load from the same folders and repos, and `from_pipe` moves between them without copying weights.
"""

import os
import tempfile

from ..errors import UsageError
from ..loading import components
from ..shipped import pipeline_ddpm_hub as shipped
from ..shipped import pipeline_ddpm_hub_img2img as shipped_img2img
from ..shipped import pipeline_ddpm_hub_inpaint as shipped_inpaint
from ..shipped import pipeline_ddpm_hub_superres as shipped_superres
from ..shipped import pipeline_ddpm_hub_unclip as shipped_unclip
from ..shipped import pipeline_ddpm_hub_unclip_variation as shipped_variation
from . import conditioning


def check_same_task(cls: type, pipeline) -> None:
    """
    `cls.from_pipe(pipeline)` moves between pipelines of one kind of model: a super-resolution model's UNet takes a
    low-resolution image besides x_t, so it makes no image from noise alone (base, inpainting, img2img), and a model
    that samples from noise upsamples nothing.
    """
    upsampler = shipped_superres.DDPMHubSuperResolutionPipeline
    makes, given = issubclass(cls, upsampler), isinstance(pipeline, upsampler)
    if makes == given:
        return
    what = (
        f"{type(pipeline).__name__} samples images from noise and {cls.__name__} upsamples with a super-resolution "
        "model (its UNet takes the low-resolution image): load one with DDPMHubSuperResolutionPipeline.from_pretrained"
        if makes
        else f"{type(pipeline).__name__} holds a super-resolution model, which needs a low-resolution image, and "
        f"{cls.__name__} samples from noise: call the super-resolution pipeline itself (image=...)"
    )
    raise UsageError(f"{cls.__name__}.from_pipe({type(pipeline).__name__}): {what}.")


class HubPipelineMixin:
    """Loading, saving and publishing for the library's pipeline classes (sampling lives in the shipped files)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """
        Load a pipeline folder or Hub repo saved by `DDPMHubPipeline.save_pretrained` or by diffusers' `DDPMPipeline`.

        Keyword arguments: `torch_dtype`, `revision`, `token`, `cache_dir`, `local_files_only`, a component by its
        name (`unet=...`, `scheduler=...`: used instead of loading it), `allow_pickle` (default `False`: safetensors
        weights only; pickle weights can run code when unpickled).

        From the Hub only `model_index.json` and the components' folders are downloaded, without code files (the
        installed classes are used) or pickles; with `HF_HUB_OFFLINE=1` the cached snapshot is used. A missing repo,
        a private repo without access, a missing revision, or an uncached repo offline raise huggingface_hub's
        exception types with a message naming the repo, the cause and the fix. When the Hub can be reached it
        decides: a private repo it refuses to this token raises even if an earlier download is in the cache, which is
        used offline or when the Hub cannot be reached.
        """
        choose = pipeline_class if cls is DDPMHubPipeline else None  # the base class loads every DDPM folder
        klass, loaded = components.load_components(pretrained_model_name_or_path, cls, choose=choose, **kwargs)
        return klass(**loaded)

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """
        diffusers' `from_pipe` (a pipeline of this class sharing `pipeline`'s components, some replaced by
        `kwargs`), keeping the components' dtype: diffusers casts every shared component to float32 by default, which
        would change a bfloat16 pipeline in place. (Its vacuous warning about float32 modules is filtered where the
        shipped pipeline is defined.)
        """
        check_same_task(cls, pipeline)
        if "torch_dtype" not in kwargs:
            kwargs.setdefault("dtype", pipeline.unet.dtype)
        return super().from_pipe(pipeline, **kwargs)

    def save_pretrained(
        self, save_directory: str | os.PathLike, safe_serialization: bool = True, push_to_hub: bool = False, **kwargs
    ) -> None:
        """
        Save weights (safetensors), configs and the pipeline/scheduler code files to `save_directory`.

        The result loads with `DDPMHubPipeline.from_pretrained(save_directory)` and, without ddpm_hub installed, with
        `DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)`.
        """
        if not safe_serialization:
            raise UsageError("DDPMHubPipeline saves safetensors weights only; pickle checkpoints are not written.")
        hub_kwargs = {
            k: kwargs.pop(k) for k in ("repo_id", "token", "private", "commit_message", "revision") if k in kwargs
        }
        with components.quiet_transformers():
            super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        components.save_with_code(self, save_directory)
        if push_to_hub:
            self._publish(save_directory, **hub_kwargs)

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
            raise UsageError(
                "DDPMHubPipeline.push_to_hub commits safetensors weights to a branch; create_pr, variant and "
                "safe_serialization=False are not supported."
            )
        with tempfile.TemporaryDirectory(prefix="ddpm_hub_push_") as folder:
            self.save_pretrained(folder)
            return self._publish(folder, repo_id, token, private, commit_message, revision)

    @staticmethod
    def _publish(folder, repo_id=None, token=None, private=None, commit_message=None, revision=None) -> str:
        from ..hub.publishing import publish  # publishing renders the model card: imported when used

        return publish(
            folder,
            repo_id=repo_id or os.path.basename(os.path.abspath(folder)),
            private=bool(private),
            revision=revision,
            commit_message=commit_message,
            token=token,
        )


class DDPMHubPipeline(HubPipelineMixin, shipped.DDPMHubPipeline):
    __doc__ = shipped.DDPMHubPipeline.__doc__
    conditioning_class = conditioning.TrainingConditioning  # the library kinds: data, dropout, grids, card
    # Pipelines of the same family: they load from every folder of this one, so their shipped files go with it.
    task_pipelines: tuple[type, ...] = ()

    def likelihood(self, images, **kwargs):
        """
        Bits/dim of uint8 images `[N x C x H x W]` by the variational bound (DDPM eq. 5); see
        `ddpm_hub.evaluation.likelihood.bits_per_dim` for the options (full chain, strided bound, sampled estimate).
        """
        from ..evaluation.likelihood import bits_per_dim

        return bits_per_dim(self, images, **kwargs)


class DDPMHubInpaintPipeline(shipped_inpaint.DDPMHubInpaintPipeline, DDPMHubPipeline):
    __doc__ = shipped_inpaint.DDPMHubInpaintPipeline.__doc__


class DDPMHubImg2ImgPipeline(shipped_img2img.DDPMHubImg2ImgPipeline, DDPMHubPipeline):
    __doc__ = shipped_img2img.DDPMHubImg2ImgPipeline.__doc__


class DDPMHubSuperResolutionPipeline(shipped_superres.DDPMHubSuperResolutionPipeline, DDPMHubPipeline):
    __doc__ = shipped_superres.DDPMHubSuperResolutionPipeline.__doc__
    task_pipelines: tuple[type, ...] = ()  # inpainting and img2img are for image models, not upscalers


class DDPMHubUnCLIPImageVariationPipeline(shipped_variation.DDPMHubUnCLIPImageVariationPipeline, DDPMHubPipeline):
    __doc__ = shipped_variation.DDPMHubUnCLIPImageVariationPipeline.__doc__


class DDPMHubUnCLIPPipeline(shipped_unclip.DDPMHubUnCLIPPipeline, DDPMHubUnCLIPImageVariationPipeline):
    __doc__ = shipped_unclip.DDPMHubUnCLIPPipeline.__doc__

    @classmethod
    def from_stages(cls, prior: str | os.PathLike, decoder: str | os.PathLike, **settings) -> "DDPMHubUnCLIPPipeline":
        """
        The text-to-image pipeline of a trained prior's folder (`ddpm_hub.loading.prior`: the prior, its scheduler,
        the CLIP text encoder and tokenizer) and a decoder (a folder or repo that
        `DDPMHubUnCLIPImageVariationPipeline` loads). The call defaults are the runs' (the prior's measured guidance
        scale and steps, the decoder's grids' guidance scale), or `settings` (`prior_guidance_scale`,
        `decoder_guidance_scale`, `prior_num_inference_steps`, `prior_num_candidates`, `default_num_inference_steps`).
        """
        from ..loading.prior import check_same_text_tower, decoder_defaults, load_prior_stage

        stage = load_prior_stage(prior)
        decoding = DDPMHubUnCLIPImageVariationPipeline.from_pretrained(decoder)
        if decoding.conditioning.get("image_embeds") is None:
            raise UsageError(f"--decoder {decoder}: {decoding.conditioning.describe()}; a decoder reads image_embeds.")
        width, dim = decoding.conditioning.get("image_embeds").embed_dim, stage["prior"].config.clip_embed_dim
        if dim is not None and int(dim) != width:
            raise UsageError(f"The prior {prior} makes embeddings of {dim} and the decoder {decoder} reads {width}.")
        if decoding.conditioning.get("prompt") is not None:  # DALL-E 2's decoder, its text pathway kept
            names = f"--prior {prior} and --decoder {decoder}"
            check_same_text_tower(decoding.text_encoder, decoding.tokenizer, stage, names)
        parts = {name: getattr(decoding, name, None) for name in ("unet", "scheduler", "image_encoder")}
        parts.update(feature_extractor=getattr(decoding, "feature_extractor", None), vae=decoding.vae)
        names = ("coordinate_channels", "default_num_inference_steps", "decoder_guidance_scale")  # win over its run's
        kept = {key: decoding.config[key] for key in names if decoding.config.get(key) is not None}
        run = decoder_defaults(decoder) if os.path.isdir(decoder) else {}
        return cls(**parts, **{**run, **kept, **stage, **settings})


# Every folder of a DDPMHubPipeline ships these pipelines' files (the variations pipeline serves decoders only, and
# refuses other models when called).
DDPMHubPipeline.task_pipelines = (DDPMHubInpaintPipeline, DDPMHubImg2ImgPipeline, DDPMHubUnCLIPImageVariationPipeline)


# The installed pipeline classes, by the name a model index gives in `_class_name`.
PIPELINE_CLASSES = {
    klass.__name__: klass
    for klass in (
        DDPMHubPipeline,
        *DDPMHubPipeline.task_pipelines,
        DDPMHubSuperResolutionPipeline,
        DDPMHubUnCLIPPipeline,
    )
}


def is_unclip(model_index: dict) -> bool:
    """A text-to-image unCLIP folder or repo: its model index names `DDPMHubUnCLIPPipeline`."""
    name = model_index.get("_class_name")
    return (name[1] if isinstance(name, list) else name) == DDPMHubUnCLIPPipeline.__name__


def pipeline_class(model_index: dict) -> type:
    """
    The installed class a model index names (`_class_name`), `DDPMHubPipeline` for other DDPM layouts; a folder saved
    by a task pipeline (inpainting, img2img) holds a `DDPMHubPipeline`'s model, which loads as one.
    """
    name = model_index.get("_class_name")
    klass = PIPELINE_CLASSES.get(name[1] if isinstance(name, list) else name, DDPMHubPipeline)
    return klass if klass is DDPMHubSuperResolutionPipeline else DDPMHubPipeline
