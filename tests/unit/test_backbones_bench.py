"""The inputs of ``benchmarks.quality --backbones``: labelled photos whose classes are ImageNet's, and
transformed versions that really differ from the photo and stay RGB images."""

import numpy as np
import pytest

from benchmarks.backbones import LABELLED, TRANSFORMS, labelled_photo, r_at_1
from models import packaged


def test_labels_are_imagenet_classes():
    classes = set(packaged.imagenet_labels())
    assert {c for ok in LABELLED.values() for c in ok} <= classes


@pytest.mark.parametrize("name", [t for t in TRANSFORMS if t != "original"])
def test_each_transform_changes_the_photo(name):
    photo = labelled_photo("grace_hopper")
    out = TRANSFORMS[name](photo)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape != photo.shape or np.abs(out.astype(int) - photo).mean() > 1.0


def test_r_at_1_counts_nearest_rows():
    gallery = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0.1, 0], [0.9, 1, 0], [1, 0, 0.2]], dtype=np.float32)
    assert r_at_1(queries, gallery, [0, 1, 2]) == pytest.approx(2 / 3)
