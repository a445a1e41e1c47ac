"""Randomness by construction: every random draw of training is a function of (seed, stream, position, rank), through
`derive_seed`, so that a resumed run repeats the draws of an uninterrupted one exactly, without replaying data.
"""

import numpy as np
import torch

# Streams of randomness; each is seeded separately so that adding one never shifts another.
# CONDITION_DROPOUT: classifier-free guidance's dropout of labels (and of every guided kind of condition). SAMPLING is
# no longer drawn from (grids follow `ddpm_hub.pipelines.sampling`), but keeps its number so that the others keep
# theirs. LATENT: a latent model's draw from each image's posterior q(z | x) (`training/latents.py`).
SHUFFLE, FLIP, NOISE, DROPOUT, SAMPLING, HOLDOUT, CONDITION_DROPOUT, CROP, LATENT = range(9)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed that is a well-mixed function of (seed, *keys); keys are non-negative ints (stream, step...)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def make_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))
