"""The accuracy gates of the image transports (models/image_input.py) that change pixels: what the
served model makes of an upload sent as ``draft``, ``input`` or ``bytes`` against ``array`` (the
gateway's whole decoded image, the path before them): cosine >= 0.99 and the same ImageNet top-1 on
every test photo, as shipped and enlarged 4x (a 1.8 to 2.6k px JPEG, which drafting does shrink)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from config.args import AppArgs
from models.image_input import Encoded, InputSize, for_replica
from models.media import MediaLimits
from models.registry import load_classifier, load_embedder
from models.sample_photos import COLOUR_PHOTOS
from tests import assets

pytestmark = pytest.mark.slow

GATE = 0.99
LIMITS = MediaLimits(max_image_side=4096)  # the enlarged photos pass whole through ``array``


def _enlarged(name: str) -> bytes:
    img = Image.open(io.BytesIO(assets.photo(name)))
    buf = io.BytesIO()
    img.resize((img.width * 4, img.height * 4), Image.LANCZOS).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def uploads() -> list[bytes]:
    return [assets.photo(n) for n in COLOUR_PHOTOS] + [_enlarged(n) for n in COLOUR_PHOTOS]


@pytest.fixture(scope="module")
def embedder():
    """The served graph's default vision model (config.args)."""
    spec = AppArgs().vision.model
    return load_embedder(spec, AppArgs().text.model, classifier=load_classifier(spec))


def _outputs(
    embedder, uploads: list[bytes], transport: str, size: InputSize
) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 class, embedding) per upload, through the gateway's and the replica's side of ``transport``."""
    sent = [for_replica(raw, transport=transport, size=size, limits=LIMITS, param="image") for raw in uploads]
    images = [s.decode(size) if isinstance(s, Encoded) else s for s in sent]
    batch = torch.stack([embedder.preprocess(i) for i in images])
    return embedder.classifier.probs(batch).argmax(1), embedder.embed(batch)


def gate_failures(reference, measured) -> list[str]:
    """What a transport's outputs fail of the gates against the reference's (empty: it passes)."""
    (ref_top1, ref_emb), (top1, emb) = reference, measured
    cosines = (emb * ref_emb).sum(1)
    failures = [f"photo {i}: cosine {c:.4f} < {GATE}" for i, c in enumerate(cosines) if c < GATE]
    return failures + [
        f"photo {i}: top-1 {b} instead of {a}" for i, (a, b) in enumerate(zip(ref_top1, top1)) if a != b
    ]


@pytest.fixture(scope="module")
def reference(embedder, uploads):
    return _outputs(embedder, uploads, "array", embedder.input_size)


@pytest.mark.parametrize("transport", ["draft", "input", "bytes"])
def test_transport_matches_the_decoded_array(embedder, uploads, reference, transport):
    assert embedder.input_size is not None
    assert gate_failures(reference, _outputs(embedder, uploads, transport, embedder.input_size)) == []


def test_the_gates_catch_a_too_small_draft(embedder, uploads, reference):
    """Drafting to a quarter of what the model resizes to must fail both gates: they can fail."""
    size = InputSize(resize=embedder.input_size.resize // 4, crop=embedder.input_size.crop)
    failures = gate_failures(reference, _outputs(embedder, uploads, "draft", size))
    assert any("cosine" in f for f in failures) and any("top-1" in f for f in failures), failures
