"""Text to image through unCLIP's prior and decoder, measured against issue 33's criteria on digit pairs: both halves
read as asked (the digit classifier, `accuracy.text_accuracy`, >= 95% of seen and >= 75% of unseen pairs), and the
paper's claim that unCLIP's samples of one prompt are more diverse than a cross-attention text model's (the spread
of a prompt's samples in the classifier's features, `variation_accuracy.spread`, against real canvases of its pair).

- `PriorGuided`: a `DDPMHubUnCLIPPipeline` called as `text_accuracy` and `sample_images` call a text model:
  `guidance_scale` is the prior's w, `num_inference_steps` the decoder's steps; the decoder's w and the prior's steps
  fixed.
- `prior_caption_accuracy`: the prior alone: the share of its embeddings of "{a} left of {b}" that the CLIP reads
  back as that caption among the 100 ordered pairs, for the data's 90 pairs and the 10 it never had.
- `prompt_spread`: `per_prompt` samples of "{a} left of {b}" for each pair, their accuracy and spread, and the spread
  of as many real canvases of each pair; the same call for either model.
"""

import time
from collections.abc import Sequence

import torch

from ..data.digit_pairs import is_unseen, prompt
from ..pipelines.sampling import sample_images
from .accuracy import SEEN_PAIRS, read_halves, text_accuracy
from .clip_accuracy import ALL_PAIRS, pair_captions, top_captions
from .digit_classifier import DigitClassifier, digit_feature_extractor, load_digit_classifier
from .variation_accuracy import pair_canvases, spread


class PriorGuided:
    """The unCLIP pipeline with a text model's call: `guidance_scale` the prior's, `num_inference_steps` the
    decoder's; `decoder_guidance_scale` and `prior_num_inference_steps` as given (None: the pipeline's defaults)."""

    def __init__(self, pipeline, decoder_guidance_scale=None, prior_num_inference_steps=None):
        self.pipeline, self.decoder_guidance_scale = pipeline, decoder_guidance_scale
        self.prior_num_inference_steps = prior_num_inference_steps

    def __call__(self, batch_size, generator, output_type, prompt, guidance_scale=None, num_inference_steps=None):
        prompts = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
        return self.pipeline(
            prompt=prompts,
            generator=generator,
            output_type=output_type,
            prior_guidance_scale=guidance_scale,
            decoder_num_inference_steps=num_inference_steps,
            decoder_guidance_scale=self.decoder_guidance_scale,
            prior_num_inference_steps=self.prior_num_inference_steps,
        )


def unclip_text_accuracy(
    pipeline,
    prior_guidance_scales: Sequence[float],
    decoder_guidance_scale: float | None = None,
    num_per_prompt: int = 10,
    decoder_steps: int = 100,
    prior_steps: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    classifier: DigitClassifier | None = None,
) -> list[dict]:
    """`accuracy.text_accuracy` of the unCLIP pipeline, one row per prior guidance scale (`guidance_scale`)."""
    call = PriorGuided(pipeline, decoder_guidance_scale, prior_steps)
    rows = text_accuracy(call, prior_guidance_scales, num_per_prompt, decoder_steps, seed, batch_size, classifier)
    decoder_w = pipeline.setting("decoder_guidance_scale", None) if decoder_guidance_scale is None else None
    for row in rows:
        row["decoder_guidance_scale"] = decoder_guidance_scale if decoder_guidance_scale is not None else decoder_w
        row["prior_num_inference_steps"] = prior_steps
    return rows


def prompt_spread(
    call,
    call_kwargs: dict,
    pairs: Sequence[tuple[int, int]] = SEEN_PAIRS,
    per_prompt: int = 16,
    seed: int = 0,
    batch_size: int = 64,
    classifier: DigitClassifier | None = None,
) -> dict:
    """
    `per_prompt` samples of "{a} left of {b}" for each pair (image i of pair j: sample j x per_prompt + i of
    `sample_images` for `seed`), called with `call_kwargs`: `accuracy` (both halves read as asked), `spread` (the
    mean over prompts of the samples' squared distance to their mean in the classifier's features), `real_spread`
    (the same for `per_prompt` real canvases of each pair), their `spread_ratio`, `images_per_second`.
    """
    classifier = classifier if classifier is not None else load_digit_classifier()[0]
    features = digit_feature_extractor(classifier)
    prompts = [prompt(left, right, "left") for left, right in pairs for _ in range(per_prompt)]
    wanted = torch.tensor(pairs).repeat_interleave(per_prompt, dim=0)
    started = time.perf_counter()
    images = sample_images(
        call, range(len(prompts)), seed, batch_size, inputs=lambda batch: {"prompt": [prompts[i] for i in batch]},
        call_kwargs=call_kwargs,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    left, right = read_halves(classifier, images)
    real = pair_canvases(pairs, per_prompt, tuple(images.shape[-2:]), seed + 2)
    sampled_spread = spread(features(images).view(len(pairs), per_prompt, -1))
    real_spread = spread(features(real.images).view(len(pairs), per_prompt, -1))
    return {
        "accuracy": float(((left == wanted[:, 0]) & (right == wanted[:, 1])).float().mean()),
        "spread": sampled_spread,
        "real_spread": real_spread,
        "spread_ratio": sampled_spread / real_spread,
        "images_per_second": len(prompts) / seconds,
    }


@torch.no_grad()
def prior_caption_accuracy(
    pipeline, prior_guidance_scales: Sequence[float], per_pair: int = 8, steps: int | None = None, seed: int = 0
) -> list[dict]:
    """
    One row per prior guidance scale: for each of the 100 ordered pairs, `per_pair` embeddings of "{a} left of {b}"
    from the prior (its defaults otherwise), each read back by the CLIP as the most similar of the 100 captions
    ("{a} left of {b}", `clip_accuracy.pair_captions`): the share read as asked for the `seen` pairs (the data's 90)
    and the `unseen` ones (the 10 it never had), and the mean cosine to the caption's text embedding.
    """
    from ..shipped.prior_ddpm_hub import encode_prompts, text_positions

    captions = pair_captions("left", False)
    texts = encode_prompts(pipeline.text_encoder, pipeline.tokenizer, captions, text_positions(pipeline.prior))
    prompts = [caption for caption in captions for _ in range(per_pair)]
    wanted = torch.arange(len(captions)).repeat_interleave(per_pair)
    unseen = torch.tensor([is_unseen(*pair) for pair in ALL_PAIRS]).repeat_interleave(per_pair)
    rows = []
    for scale in prior_guidance_scales:
        generator = torch.Generator(pipeline.device).manual_seed(seed)
        embeds = pipeline.prompt_image_embeddings(prompts, 1, generator, None, scale, steps)
        right = (top_captions(texts.text_embeds.to(embeds), embeds).cpu() == wanted).float()
        cosine = (embeds.cpu() * texts.text_embeds.cpu()[wanted]).sum(-1)
        rows.append(
            {
                "guidance_scale": scale,
                "seen": float(right[~unseen].mean()),
                "unseen": float(right[unseen].mean()),
                "cosine_to_text": float(cosine.mean()),
            }
        )
    return rows
