"""`builtin:digit-pairs`: an offline captioned dataset whose captions must be read, not just matched.

Each image is a 16 x 32 grayscale canvas (height x width): a scikit-learn digit in the left 16 x 16 half and one in
the right half, each preprocessed exactly as `builtin:digits` is at 16 x 16 (at another resolution H x W, each half is
`builtin:digits` at H x W/2). Its captions are every way of saying which digit is where: "{a} left of {b}" and
"{b} right of {a}" (a = the left digit, b = the right one), each digit written as a numeral ("7") or an English word
("seven"): 8 captions per canvas, of which training draws one per example and epoch. The ten ordered pairs
(d, (d + 5) % 10), (0, 5), (1, 6), ..., (9, 4), never appear: their prompts measure whether a model composes what it
learned (`ddpm-hub eval --text_accuracy`, `ddpm_hub.evaluation.accuracy`).

The canvases are `NUM_CANVASES` pairs of digit images drawn from a fixed seed: the left and right images are
independent uniform draws from the 1797 digits, a draw of an unseen pair redrawn.
"""

import numpy as np
import torch

NUM_CANVASES = 20_000
SEED = 0
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def unseen_pairs() -> list[tuple[int, int]]:
    """The ten ordered pairs (left, right) that are never in the data."""
    return [(d, (d + 5) % 10) for d in range(10)]


def is_unseen(left: int, right: int) -> bool:
    return (right - left) % 10 == 5


def captions_of(left: int, right: int) -> list[str]:
    """Every caption of a canvas with `left` and `right` digits: both sentence forms, numerals and words (8)."""
    names = [lambda d: str(d), lambda d: WORDS[d]]
    captions = []
    for name_a in names:
        for name_b in names:
            a, b = name_a(left), name_b(right)
            captions += [f"{a} left of {b}", f"{b} right of {a}"]
    return captions


def prompt(left: int, right: int, form: str = "left", words: bool = False) -> str:
    """One caption: `"{a} left of {b}"` (form "left") or `"{b} right of {a}"` (form "right")."""
    a, b = (WORDS[left], WORDS[right]) if words else (str(left), str(right))
    return f"{a} left of {b}" if form == "left" else f"{b} right of {a}"


def pair_indices(labels: np.ndarray, count: int, seed: int = SEED) -> np.ndarray:
    """`[count x 2]` indices of digit images (left, right), no unseen pair among their labels."""
    rng = np.random.default_rng(seed)
    pairs = np.empty((0, 2), dtype=np.int64)
    while len(pairs) < count:
        drawn = rng.integers(0, len(labels), size=(2 * count, 2))
        kept = drawn[~np.array([is_unseen(labels[a], labels[b]) for a, b in drawn])]
        pairs = np.concatenate([pairs, kept])
    return pairs[:count]


def compose(digits: torch.Tensor, labels: np.ndarray, count: int, captions: bool = True):
    """
    `count` canvases uint8 `[count x C x H x 2W]` from digit images `[N x C x H x W]` (left | right) and, with
    `captions`, each canvas's captions (`captions_of`).
    """
    pairs = torch.from_numpy(pair_indices(labels, count))
    canvases = torch.cat([digits[pairs[:, 0]], digits[pairs[:, 1]]], dim=3).contiguous()
    texts = [captions_of(int(labels[a]), int(labels[b])) for a, b in pairs.tolist()] if captions else None
    return canvases, texts


def side_probe(encoder, tokenizer) -> float:
    """
    Whether a text encoder's states say which side a digit is on: a linear probe (logistic regression) of "this
    digit token is the left digit" on the first and the last digit token of every caption of the seen pairs, scored
    on the captions of the ten unseen pairs. 0.5 is a state that does not say (a bag of words to cross-attention).
    """
    from sklearn.linear_model import LogisticRegression

    rows = {True: ([], []), False: ([], [])}
    for left in range(10):
        for right in range(10):
            if left == right:
                continue
            captions = captions_of(left, right)
            tokens = tokenizer(captions, padding="longest", return_tensors="pt")
            with torch.no_grad():
                states = encoder(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
            features, sides = rows[is_unseen(left, right)]
            for caption, state in zip(captions, states):
                first_is_left = caption.split()[1] == "left"  # "{a} left of {b}": the first digit is the left one
                features += [state[0].float().numpy(), state[3].float().numpy()]
                sides += [first_is_left, not first_is_left]
    probe = LogisticRegression(max_iter=2000).fit(*rows[False])
    return float(probe.score(*rows[True]))
