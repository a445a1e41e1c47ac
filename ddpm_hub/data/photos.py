"""`builtin:photos`: random crops of scikit-learn's two bundled sample photographs (`china.jpg`, `flower.jpg`, 427 x
640 each) and of no other image, so that every other photograph is unseen by a model trained on it (the
super-resolution evaluation measures on others: `ddpm-hub eval --sr_quality`).

The crops are `NUM_CROPS` windows of the training size, their positions uniform over each photograph from a fixed
seed, half from each photograph, taken at three scales (`SCALES`, in turn, a third each): the photographs' own
resolution, halved (box filter: denser detail) and enlarged 8 times (bicubic: flat at the pixel scale, as an
out-of-focus background is). The mix is the model's prior on how much fine texture a smooth-looking input hides. At
their own scale only, a super-resolution model took every smooth input for fine texture averaged away and invented
texture where a photograph is out of focus; with the photographs also enlarged 2 and 4 times (mildly smooth), it took
the averaged-away grain of a table or a gantry's wires for smooth image and drew next to none (the README measures
both); the 8-times enlargement alone shows it that a flat input is often a flat image.
"""

import numpy as np

NUM_CROPS = 4000
SEED = 0
NAMES = ("china.jpg", "flower.jpg")
SCALES = (1.0, 0.5, 8.0)  # crops 2k and 2k + 1 (one of each photograph) take SCALES[k mod 3]


def photographs() -> list[np.ndarray]:
    """The two photographs, uint8 `[H x W x 3]`."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    found = {name.rsplit("/", 1)[-1]: image for name, image in zip(bunch.filenames, bunch.images)}
    return [found[name] for name in NAMES]


def rescaled(image: np.ndarray, scale: float) -> np.ndarray:
    """A photograph resized by `scale` (box filter down, bicubic up), uint8 `[H x W x 3]`."""
    if scale == 1:
        return image
    from PIL import Image

    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    method = Image.BOX if scale < 1 else Image.BICUBIC
    return np.asarray(Image.fromarray(image).resize(size, method))


def crop_photos(height: int, width: int, count: int, seed: int = SEED) -> np.ndarray:
    """uint8 `[count x 3 x height x width]` crops, crop i from photograph i mod 2 at its scale, seeded positions."""
    originals = photographs()
    images = {scale: [rescaled(image, scale) for image in originals] for scale in set(SCALES)}
    smallest = min(min(image.shape[:2]) for versions in images.values() for image in versions)
    if height > smallest or width > smallest:
        raise ValueError(f"builtin:photos crops at most {smallest}x{smallest} pixels, got {height}x{width}.")
    rng = np.random.default_rng(seed)
    crops = np.empty((count, 3, height, width), dtype=np.uint8)
    for i in range(count):
        image = images[SCALES[(i // len(originals)) % len(SCALES)]][i % len(originals)]
        top = rng.integers(0, image.shape[0] - height + 1)
        left = rng.integers(0, image.shape[1] - width + 1)
        crops[i] = image[top : top + height, left : left + width].transpose(2, 0, 1)
    return crops
