# Copyright 2026 The ddpm_hub authors. Apache License 2.0.
"""The diffusion prior of unCLIP (DALL-E 2, Ramesh et al. 2022, section 2.2): a DDPM over CLIP image embeddings
`[N x D]`, conditioned on the CLIP text embedding and the text's token states, that turns a caption into an image
embedding the decoder draws.

The network is diffusers' `PriorTransformer` (as Kandinsky 2.2's prior and diffusers' `UnCLIPPipeline`): it reads
x_t, t, the text embedding (`proj_embedding`) and the token states (`encoder_hidden_states`, with their mask) as one
sequence and predicts **x_0** (the paper: "we find it better to predict the unnoised z_i directly"), in the space of
embeddings normalised per dimension by the data's mean and std, which the model keeps (`clip_mean`, `clip_std`;
`normalise`, and `PriorTransformer.post_process_latents` to undo it). The chain is `DDPMHubScheduler` with
`prediction_type="sample"` on 1-D samples (its `add_noise` and `step` broadcast over `[N x D]`).

Classifier-free guidance drops the text in training: the null text is the **empty caption**'s embedding and token
states (`encode_prompts(..., [""])`), and guidance mixes the two x_0 predictions, x0_null + w (x0_text - x0_null).
DALL-E 2's prior draws two candidates per sample and keeps the one more similar to the text embedding
(`num_candidates`). Shipped next to the unCLIP pipeline in every published repo: torch and diffusers only.
"""

import dataclasses

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

# The pipeline settings (model_index.json) of a text-to-image unCLIP folder: the defaults of its calls.
UNCLIP_SETTINGS = (
    "prior_guidance_scale",
    "decoder_guidance_scale",
    "prior_num_inference_steps",
    "prior_num_candidates",
)
DEFAULT_PRIOR_GUIDANCE_SCALE = 4.0  # diffusers' UnCLIPPipeline and Kandinsky's prior
DEFAULT_PRIOR_NUM_INFERENCE_STEPS = 25  # diffusers' UnCLIPPipeline
DEFAULT_PRIOR_NUM_CANDIDATES = 2  # DALL-E 2 (lucidrains' DiffusionPrior: num_samples_per_batch=2)


@dataclasses.dataclass
class PriorText:
    """
    Texts as the prior reads them: `text_embeds` `[N x D]` (CLIP's projected text embedding, L2-normalised),
    `hidden_states` `[N x L x W]` (the text tower's last hidden states, padded to the prior's L text positions) and
    `mask` `[N x L]` (bool: True for a token, False for padding).
    """

    text_embeds: torch.Tensor
    hidden_states: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.text_embeds)

    def rows(self, index: torch.Tensor) -> "PriorText":
        return PriorText(self.text_embeds[index], self.hidden_states[index], self.mask[index])

    def repeat_each(self, times: int) -> "PriorText":
        """Each text `times` times in place (t0, t0, t1, t1)."""
        return self.rows(torch.arange(len(self), device=self.text_embeds.device).repeat_interleave(times))

    def where(self, keep: torch.Tensor, other: "PriorText") -> "PriorText":
        """Row i from self where `keep[i]`, else from `other` (one row, or one per row): the text dropout."""
        pick = keep.to(self.text_embeds.device)
        other = other.rows(torch.zeros(len(self), dtype=torch.long)) if len(other) == 1 < len(self) else other

        def mix(a, b):
            return torch.where(pick.view(-1, *([1] * (a.ndim - 1))), a, b.to(a))

        mask = torch.where(pick.view(-1, 1), self.mask, other.mask.to(self.mask.device))
        return PriorText(mix(self.text_embeds, other.text_embeds), mix(self.hidden_states, other.hidden_states), mask)

    def to(self, device=None, dtype=None) -> "PriorText":
        return PriorText(
            self.text_embeds.to(device=device, dtype=dtype),
            self.hidden_states.to(device=device, dtype=dtype),
            self.mask.to(device=device),
        )

    @staticmethod
    def cat(texts: list["PriorText"]) -> "PriorText":
        return PriorText(*(torch.cat([getattr(t, f.name) for t in texts]) for f in dataclasses.fields(PriorText)))


def text_positions(prior) -> int:
    """The text positions L of a `PriorTransformer` (its `num_embeddings`): captions are padded or cut to them."""
    return int(prior.config.num_embeddings)


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: list[str], max_length: int) -> PriorText:
    """
    The prior's text condition of each prompt: a transformers `CLIPTextModelWithProjection`'s `text_embeds`
    (L2-normalised, as CLIP compares them) and `last_hidden_state`, of the prompt padded to `max_length` tokens (cut to
    them with the end token kept, where CLIP pools).
    """
    parameter = next(text_encoder.parameters())
    tokens = tokenizer(
        list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    input_ids, mask = tokens.input_ids.to(parameter.device), tokens.attention_mask.to(parameter.device)
    out = text_encoder(input_ids=input_ids, attention_mask=mask)
    return PriorText(F.normalize(out.text_embeds.float(), dim=-1), out.last_hidden_state.float(), mask.bool())


def normalise(prior, image_embeds: torch.Tensor) -> torch.Tensor:
    """Embeddings `[N x D]` in the prior's space, (z - clip_mean) / clip_std; `post_process_latents` undoes it."""
    return (image_embeds - prior.clip_mean.to(image_embeds)) / prior.clip_std.to(image_embeds)


def predict_x0(prior, x_t: torch.Tensor, t, text: PriorText) -> torch.Tensor:
    """The prior's x_0 prediction `[N x D]` (normalised space) at (x_t, t) for the texts."""
    text = text.to(device=x_t.device)
    return prior(
        hidden_states=x_t,
        timestep=t,
        proj_embedding=text.text_embeds.to(x_t.dtype),
        encoder_hidden_states=text.hidden_states.to(x_t.dtype),
        attention_mask=text.mask,
    ).predicted_image_embedding


def guided_x0(prior, x_t: torch.Tensor, t, text: PriorText, null_text: PriorText | None, guidance_scale: float):
    """
    Classifier-free guidance of the x_0 prediction: x0_null + w (x0_text - x0_null), one call on 2N rows; w = 1 is
    the conditional prediction (one call on N rows), w = 0 the null text's.
    """
    if null_text is None or guidance_scale == 1.0:
        return predict_x0(prior, x_t, t, text)
    null_text = null_text.rows(torch.zeros(len(text), dtype=torch.long)) if len(null_text) == 1 else null_text
    if guidance_scale == 0.0:
        return predict_x0(prior, x_t, t, null_text)
    both = predict_x0(prior, torch.cat([x_t, x_t]), t, PriorText.cat([null_text.to(x_t.device), text.to(x_t.device)]))
    x0_null, x0_text = both.chunk(2)
    return x0_null + guidance_scale * (x0_text - x0_null)


def check_prior_call(guidance_scale, num_inference_steps, num_candidates, scheduler) -> None:
    """The prior's call arguments, before any model work."""
    if not isinstance(guidance_scale, (int, float)) or isinstance(guidance_scale, bool) or not 0 <= guidance_scale:
        raise ValueError(f"prior_guidance_scale must be a number >= 0, got {guidance_scale!r}.")
    num_train = scheduler.config.num_train_timesteps
    if not (isinstance(num_inference_steps, int) and 1 <= num_inference_steps <= num_train):
        raise ValueError(
            f"prior_num_inference_steps must be an integer between 1 and the prior's {num_train} training timesteps, "
            f"got {num_inference_steps!r}."
        )
    if not (isinstance(num_candidates, int) and not isinstance(num_candidates, bool) and num_candidates >= 1):
        raise ValueError(f"prior_num_candidates must be a positive integer, got {num_candidates!r}.")


@torch.no_grad()
def sample_prior(
    prior,
    scheduler,
    text: PriorText,
    null_text: PriorText | None,
    guidance_scale: float = DEFAULT_PRIOR_GUIDANCE_SCALE,
    num_inference_steps: int = DEFAULT_PRIOR_NUM_INFERENCE_STEPS,
    generator: torch.Generator | list[torch.Generator] | None = None,
    num_candidates: int = 1,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    CLIP image embeddings `[N x D]` for the N texts, L2-normalised: the reverse chain of the prior (Algorithm 2 on
    `[N x D]`, x_0 predicted and guided), unnormalised by the model's mean and std; with `num_candidates` k > 1, k
    chains per text and the result the one most similar (cosine) to the text embedding, as DALL-E 2 does. `generator`:
    one, or one per text (its k candidates drawn from it in turn); `latents` `[N k x D]`: x_T of every chain.
    """
    check_prior_call(guidance_scale, num_inference_steps, num_candidates, scheduler)
    device, dtype, k = prior.device, prior.dtype, num_candidates
    shape = (len(text) * k, int(prior.config.clip_embed_dim or prior.config.embedding_dim))
    if isinstance(generator, list):
        if len(generator) != len(text):
            raise ValueError(f"Got {len(generator)} generators for {len(text)} images; pass one per image.")
        generator = [g for g in generator for _ in range(k)]
    if latents is None:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(latents.shape) != shape:
        raise ValueError(
            f"prior_latents must have shape {shape} (images x candidates, D), got {tuple(latents.shape)}."
        )
    x_t = latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    chains = text.repeat_each(k).to(device)

    # x_T -> x_0 on the respaced chain, the x_0 prediction guided (the scheduler's prediction_type is "sample").
    scheduler.set_timesteps(num_inference_steps, device=device)
    for t in scheduler.timesteps:
        x0 = guided_x0(prior, scheduler.scale_model_input(x_t, t), t, chains, null_text, guidance_scale)
        x_t = scheduler.step(x0, t, x_t, generator=generator).prev_sample
    embeds = F.normalize(prior.post_process_latents(x_t).float(), dim=-1)
    if k == 1:
        return embeds
    similarity = (embeds * chains.text_embeds.to(embeds)).sum(-1).view(len(text), k)  # cosine: both unit norm
    best = similarity.argmax(dim=1) + torch.arange(len(text), device=embeds.device) * k
    return embeds[best]
