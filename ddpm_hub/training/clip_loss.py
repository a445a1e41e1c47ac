"""
CLIP's objective (Radford et al. 2021, Figure 3): the symmetric cross-entropy over the cosine similarities of a
batch's text and image embeddings times the learned temperature exp(logit_scale), with the batch's other pairs as the
negatives. Two additions of this project, both explicit arguments:

- `same`: pairs of the batch whose captions mean the same thing (on builtin:digit-pairs the eight captions of one
  ordered pair of digits) are masked out of each other's negatives: a second image of "3 left of 7" is not a wrong
  answer for "three left of seven". The rows of the batch stay as drawn (`ddpm_hub.training.batches.MicroBatches`):
  the data order, the exact resume and DDP are a DDPM run's, and any batch size works, also more images than there
  are distinct captions.
- `gather_features`: with DDP, every rank's embeddings are gathered, so the negatives are the global batch, as CLIP
  trains; the rank's own rows keep their gradient and the others' are constants, so that the sum of the ranks'
  gradients is the gradient of the global loss (`contrastive_step` multiplies by the number of ranks, which DDP's
  mean divides away).
"""

import math

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clips the temperature at 100 "to prevent scaling the logits by more than 100"


def contrastive_loss(
    text_embeds: torch.Tensor, image_embeds: torch.Tensor, logit_scale: torch.Tensor, same: torch.Tensor | None = None
) -> torch.Tensor:
    """
    The symmetric cross-entropy of CLIP, (CE(texts -> images) + CE(images -> texts)) / 2, where text i's correct
    image is image i.

    Args:
        text_embeds, image_embeds: `[N x D]`, unit norm.
        logit_scale: the log temperature (a scalar): logits = exp(logit_scale) * cosine similarity.
        same: bool `[N x N]`, True where text i and image j mean the same (the diagonal is ignored): those logits
            are removed from both softmaxes (None: every other pair is a negative, as in CLIP).
    """
    logits_per_text = logit_scale.exp() * text_embeds @ image_embeds.t()  # [N x N]
    if same is not None:
        off_diagonal = same & ~torch.eye(len(same), dtype=torch.bool, device=same.device)
        logits_per_text = logits_per_text.masked_fill(off_diagonal, float("-inf"))
    targets = torch.arange(len(logits_per_text), device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, targets) + F.cross_entropy(logits_per_text.t(), targets)) / 2


def same_meaning(meanings: torch.Tensor) -> torch.Tensor:
    """bool `[N x N]`: rows whose captions mean the same (equal meaning ids, `ddpm_hub.training.clip.meaning_ids`)."""
    return meanings[:, None] == meanings[None, :]


def gather_with_local_grad(accelerator, local: torch.Tensor) -> torch.Tensor:
    """Every rank's rows `[processes x N x ...]` -> `[processes * N x ...]`, this rank's slice the local tensor itself
    (with its gradient), the others' gathered constants."""
    if accelerator.num_processes == 1:
        return local
    gathered = list(accelerator.gather(local.detach()).chunk(accelerator.num_processes))
    gathered[accelerator.process_index] = local
    return torch.cat(gathered)
