"""`builtin:photos`: random crops of scikit-learn's two bundled sample photographs (`china.jpg`, `flower.jpg`, 427 x
640 each) and of no other image, so that every other photograph is unseen by a model trained on it (the
super-resolution benchmark measures on others: `benchmarks/sr_quality.py`).

The crops are `NUM_CROPS` windows of the training size at the photographs' own resolution (nothing is resized), their
positions uniform over each photograph from a fixed seed, half from each photograph.
"""

import numpy as np

NUM_CROPS = 4000
SEED = 0
NAMES = ("china.jpg", "flower.jpg")


def photographs() -> list[np.ndarray]:
    """The two photographs, uint8 `[H x W x 3]`."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    found = {name.rsplit("/", 1)[-1]: image for name, image in zip(bunch.filenames, bunch.images)}
    return [found[name] for name in NAMES]


def crop_photos(height: int, width: int, count: int, seed: int = SEED) -> np.ndarray:
    """uint8 `[count x 3 x height x width]` crops, crop i from photograph i mod 2 at a seeded position."""
    images = photographs()
    smallest = min(min(image.shape[:2]) for image in images)
    if height > min(image.shape[0] for image in images) or width > min(image.shape[1] for image in images):
        raise ValueError(f"builtin:photos crops at most {smallest}x{smallest} pixels, got {height}x{width}.")
    rng = np.random.default_rng(seed)
    crops = np.empty((count, 3, height, width), dtype=np.uint8)
    for i in range(count):
        image = images[i % len(images)]
        top = rng.integers(0, image.shape[0] - height + 1)
        left = rng.integers(0, image.shape[1] - width + 1)
        crops[i] = image[top : top + height, left : left + width].transpose(2, 0, 1)
    return crops
