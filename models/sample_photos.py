"""Photos that installed packages ship (scikit-image, scikit-learn): the demo data set's sources,
and the calibration set for int8 post-training quantisation. No download."""

from __future__ import annotations

import functools

import numpy as np

SKLEARN_PHOTOS = ("china", "flower")
# the colour photos among them
COLOUR_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "china", "flower")


@functools.cache
def source_photo(name: str) -> np.ndarray:
    """An RGB uint8 photo bundled with scikit-image (``chelsea``, ``coffee``...) or scikit-learn
    (``china``, ``flower``); no download."""
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        pixels = load_sample_image(f"{name}.jpg")
    else:
        from skimage import data

        pixels = getattr(data, name)()
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)


def calibration_photos(crops_per_photo: int = 4) -> list[np.ndarray]:
    """The colour photos, each whole and as centred crops of shrinking size (varied framings)."""
    out = []
    for name in COLOUR_PHOTOS:
        pixels = source_photo(name)
        h, w = pixels.shape[:2]
        for k in range(crops_per_photo):
            dh, dw = h * k // (3 * crops_per_photo), w * k // (3 * crops_per_photo)
            out.append(np.ascontiguousarray(pixels[dh : h - dh, dw : w - dw]))
    return out
