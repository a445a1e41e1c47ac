# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""The call arguments diffusers' pipelines share, as every ddpm_hub pipeline takes them, and the state their callbacks
read: `num_images_per_prompt` (`repeat_per_prompt`, `number_of_images`), `latents` (x_T; `noise` is its older name:
`start_latents`), `callback_on_step_end` with `callback_on_step_end_tensor_inputs` (`StepCallback`: a function, or
diffusers' `PipelineCallback` / `MultiPipelineCallbacks`, which name their own tensors), and the properties a
callback reads or sets (`CallState`: `guidance_scale`, `do_classifier_free_guidance`, `num_timesteps`, `interrupt`),
as `StableDiffusionPipeline.__call__` handles them.

Shipped next to `pipeline_ddpm_hub.py` in every published repo (plain diffusers loads it with
`trust_remote_code=True`), so it stays self-contained: torch, diffusers and the files of this folder.
"""

import dataclasses

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from .condition_batch_ddpm_hub import Guided, check_guidance_scale

# What a callback_on_step_end may ask to see (and replace) after each step: "latents" is x_{t-1} (diffusers' name),
# "image" the same tensor (this package's name before 0.2), "pred_original_sample" the step's predicted x_0 in
# [-1, 1] (None for a scheduler that does not report it), "prompt_embeds" the text states of the UNet call.
CALLBACK_TENSOR_INPUTS = ("latents", "image", "pred_original_sample", "prompt_embeds")
DEFAULT_CALLBACK_TENSOR_INPUTS = ("latents", "image")  # diffusers' default, and what a callback got before 0.2


def check_generator(generator) -> None:
    """`generator` is None, a `torch.Generator`, or a list of them (one per image)."""
    items = generator if isinstance(generator, list) else [generator]
    if generator is not None and not all(isinstance(item, torch.Generator) for item in items):
        raise ValueError(
            f"generator must be a torch.Generator or a list of them (one per image), e.g. "
            f"torch.Generator().manual_seed(42), got {generator!r}."
        )


def start_latents(latents, noise) -> tuple[torch.Tensor | None, str]:
    """The x_T a call starts from, and the name it was given by: `latents` (diffusers'), or `noise` (the older one)."""
    if latents is not None and noise is not None:
        raise ValueError("Give latents or noise (its older name), not both: they are the same x_T.")
    return (noise, "noise") if noise is not None else (latents, "latents")


def check_noise(noise, shape: tuple[int, ...], name: str = "noise") -> None:
    """The `noise` (or `latents`) a call is given (x_T, or the eps of q(x_t | x_0)): None, or a finite float tensor
    of `shape`."""
    if noise is None:
        return
    if not (isinstance(noise, torch.Tensor) and noise.is_floating_point() and tuple(noise.shape) == tuple(shape)):
        given = f"{tuple(noise.shape)} {noise.dtype}" if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(
            f"{name} must have shape {tuple(shape)} (batch, channels, height, width), a float tensor of N(0, I) "
            f"draws, got {given}."
        )
    if not bool(torch.isfinite(noise).all()):
        raise ValueError(f"{name} holds NaN or infinite values; pass N(0, I) draws (or leave it out).")


def check_num_images_per_prompt(num_images_per_prompt) -> int:
    valid = isinstance(num_images_per_prompt, int) and not isinstance(num_images_per_prompt, bool)
    if not (valid and num_images_per_prompt >= 1):
        raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}.")
    return num_images_per_prompt


def repeat_each(value, times: int):
    """
    A per-image argument (a list, or a tensor `[N x ...]`, of N > 1 items) with each item repeated `times` times in
    place (p0, p0, p1, p1, as diffusers' `num_images_per_prompt`); a value for all images (a string, a label, one row)
    as it is: it serves every image.
    """
    if times == 1:
        return value
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and len(value) > 1:
        return value.repeat_interleave(times, dim=0)
    if isinstance(value, (list, tuple)) and len(value) > 1:
        return [item for item in value for _ in range(times)]
    return value


def repeat_per_prompt(inputs: dict, num_images_per_prompt) -> dict:
    """The condition arguments of a call (by name) for `num_images_per_prompt` images of each (`repeat_each`)."""
    times = check_num_images_per_prompt(num_images_per_prompt)
    return {name: repeat_each(value, times) for name, value in inputs.items()}


def number_of_images(batch_size, num_images_per_prompt: int, described: int, generator=None) -> int:
    """
    The images a call makes: `batch_size` x `num_images_per_prompt`; without a batch size, one per generator of a
    list, else the number the (repeated) conditions describe (`described`; 0 when they fit any), else
    `num_images_per_prompt`.
    """
    if batch_size is not None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        return batch_size * num_images_per_prompt
    if isinstance(generator, list):
        return len(generator)
    return described or num_images_per_prompt


def prompt_embeds_of(guided: Guided) -> torch.Tensor:
    """The text states of a step's UNet call as diffusers' pipelines lay them out: [negative; positive] `[2N x L x D]`
    under guidance, else `[N x L x D]`."""
    states = guided.condition.kwargs["encoder_hidden_states"]
    return states if guided.null is None else torch.cat([guided.null.kwargs["encoder_hidden_states"], states])


def with_prompt_embeds(guided: Guided, embeds) -> Guided:
    """
    `guided` with the text states a callback returned: `[2N x L x D]` ([negative; positive]) under guidance, or
    `[N x L x D]`, the conditional states alone, which end guidance (diffusers' CFG cut-off callbacks keep the last
    half of the embeds).
    """
    states = guided.condition.kwargs["encoder_hidden_states"]
    counts = (len(states), 2 * len(states)) if guided.null is not None else (len(states),)
    if not (isinstance(embeds, torch.Tensor) and embeds.shape[1:] == states.shape[1:] and len(embeds) in counts):
        given = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(
            f"callback_on_step_end returned prompt_embeds {given}; they must be "
            f"{' or '.join(str((n, *states.shape[1:])) for n in counts)}: [negative; positive] under guidance as "
            "diffusers lays them out, or the conditional states alone, which end guidance."
        )
    embeds = embeds.to(states)

    def replaced(batch, part):
        return dataclasses.replace(batch, kwargs={**batch.kwargs, "encoder_hidden_states": part})

    condition = replaced(guided.condition, embeds[len(embeds) - len(states) :])
    null = None if len(embeds) == len(states) else replaced(guided.null, embeds[: len(states)])
    return dataclasses.replace(guided, condition=condition, null=null)


class StepCallback:
    """
    A call's `callback_on_step_end`, run after every reverse step as diffusers' pipelines run it:
    `callback(pipeline, i, t, callback_kwargs)` with the tensors named in `callback_on_step_end_tensor_inputs`
    (`CALLBACK_TENSOR_INPUTS`; a `PipelineCallback` or `MultiPipelineCallbacks` gets its own `tensor_inputs`). The
    dict it returns may replace x_{t-1} ("latents", or "image") and the text states ("prompt_embeds",
    `with_prompt_embeds`); setting `pipeline._guidance_scale` changes w for the next steps, `pipeline._interrupt`
    stops the chain (`CallState`).
    """

    def __init__(self, callback=None, tensor_inputs=DEFAULT_CALLBACK_TENSOR_INPUTS, allowed=CALLBACK_TENSOR_INPUTS):
        if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback.tensor_inputs
        if callback is not None and not callable(callback):
            raise ValueError(f"callback_on_step_end must be a function or a PipelineCallback, got {callback!r}.")
        if isinstance(tensor_inputs, str) or not all(isinstance(name, str) for name in tensor_inputs):
            raise ValueError(f"callback_on_step_end_tensor_inputs must be a list of names, got {tensor_inputs!r}.")
        unknown = [name for name in tensor_inputs if name not in allowed]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs: {unknown} not in {list(allowed)}.")
        self.callback, self.names = callback, list(dict.fromkeys(tensor_inputs))

    def __bool__(self) -> bool:
        return self.callback is not None

    def __call__(self, pipeline, i: int, t, x: torch.Tensor, step) -> torch.Tensor:
        """Show the named tensors after step `i`; returns x_{t-1}, as given or replaced (`pipeline._guided` too)."""
        if self.callback is None:
            return x
        tensors = {"latents": x, "image": x, "pred_original_sample": getattr(step, "pred_original_sample", None)}
        if "prompt_embeds" in self.names:
            tensors["prompt_embeds"] = prompt_embeds_of(pipeline._guided)
        scale, guided = pipeline._guidance_scale, pipeline._guided
        returned = self.callback(pipeline, i, t, {name: tensors[name] for name in self.names})
        returned = {} if returned is None else returned
        if not isinstance(returned, dict):
            raise ValueError(f"callback_on_step_end must return a dict of tensors, got {type(returned).__name__}.")
        if returned.get("prompt_embeds", tensors.get("prompt_embeds")) is not tensors.get("prompt_embeds"):
            guided = with_prompt_embeds(guided, returned["prompt_embeds"])
        pipeline._guided = follow_guidance_scale(pipeline._guided, guided, scale, pipeline._guidance_scale)
        changed = [returned[name] for name in ("latents", "image") if returned.get(name, x) is not x]
        if len(changed) == 2 and changed[0] is not changed[1]:
            raise ValueError("callback_on_step_end returned two different x_{t-1}, as latents and as image: give one.")
        if changed and (not isinstance(changed[0], torch.Tensor) or changed[0].shape != x.shape):
            raise ValueError(f"callback_on_step_end returned latents that are not a tensor of shape {tuple(x.shape)}.")
        return changed[0] if changed else x


def follow_guidance_scale(before: Guided, guided: Guided, old_scale: float, new_scale) -> Guided:
    """`guided` at the guidance scale a callback set (`pipeline._guidance_scale`), for the steps to come."""
    if new_scale == old_scale:
        return guided
    if guided.null is not None:
        return dataclasses.replace(guided, scale=check_guidance_scale(new_scale))
    if before.null is not None:  # the callback ended guidance (prompt_embeds without their null half)
        return guided
    raise ValueError(
        f"callback_on_step_end set guidance_scale={new_scale!r}, but this call has no null branch to guide with (it "
        "started with guidance_scale=1, or its model has guidance distilled in): start it with the guidance you need."
    )


class CallState:
    """
    The state of a call that diffusers' callbacks read or set, as properties (diffusers' names): `guidance_scale`
    (w; a callback may set `pipeline._guidance_scale`), `do_classifier_free_guidance` (whether a step makes two UNet
    passes, a conditional and a null one), `num_timesteps` (the reverse steps of the chain) and `interrupt` (set
    `pipeline._interrupt = True` in a callback: the remaining steps are skipped and the current x_t is the result).
    """

    _guidance_scale: float = 1.0
    _guided: Guided | None = None
    _num_timesteps: int | None = None
    _interrupt: bool = False

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        guided = self._guided
        return guided is not None and guided.null is not None and guided.scale != 1

    @property
    def num_timesteps(self) -> int | None:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def start_chain(self, guided: Guided, num_timesteps: int) -> None:
        """Before the first step: the condition the steps use, the chain's length, no interrupt."""
        self._guided, self._num_timesteps, self._interrupt = guided, int(num_timesteps), False
