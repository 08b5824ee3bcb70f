"""The accuracy gates of the compiled CPU runtimes (models/accel.py), against fp32 torch on real
inputs: cosine >= 0.99 on the test photos and sentences, the same ImageNet top-1 on every test
photo, and ConSE zero-shot unchanged. A runtime whose output drifts fails here."""

import numpy as np
import pytest
import torch

from config.args import AppArgs
from models import accel
from models.media import decode_image
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder, load_text
from models.sample_photos import COLOUR_PHOTOS
from models.vision import ConSEEmbedder
from tests import assets

pytestmark = pytest.mark.slow

GATE = 0.99
SENTENCES = [
    "a kitten sleeps on the sofa",
    "stock prices fell sharply today",
    "a cup of hot espresso",
    "the rocket launch was delayed by rain",
    "an astronaut waves from the space station",
]
# int8 is offered but measured below the gates (benchmarks/runtime_compare.py: the astronaut's top-1
# flips; MiniLM's cosine falls to 0.96), so it is no default and not listed here
CHOICES = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]
TORCH_FP32 = {"runtime": "torch", "precision": "fp32"}


def _needs(precision: str) -> None:
    if precision == "bf16" and not accel.openvino_bf16_supported():
        pytest.skip(
            "this CPU has no native bf16 (AVX-512 BF16 or AMX): OpenVINO refuses precision bf16 here "
            "and precision auto serves fp32, so no bf16 path runs to gate"
        )


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [decode_image(assets.photo(name)) for name in COLOUR_PHOTOS]


def _outputs(embedder: ConSEEmbedder, photos) -> tuple[np.ndarray, np.ndarray]:
    batch = torch.stack([embedder.preprocess(p) for p in photos])
    return embedder.classifier.probs(batch).argmax(1), embedder.embed(batch)


@pytest.fixture(scope="module")
def reference(photos):
    spec = VisionModelSpec(**TORCH_FP32)
    embedder = load_embedder(spec, TextModelSpec(**TORCH_FP32), classifier=load_classifier(spec))
    top1, image = _outputs(embedder, photos)
    return {
        "top1": top1,
        "image": image,
        "embedder": embedder,
        "text": load_text(TextModelSpec(**TORCH_FP32)).embed(SENTENCES),
    }


@pytest.mark.parametrize("runtime, precision", CHOICES)
def test_vision_runtime_matches_fp32_torch(reference, photos, runtime, precision):
    """The runtime's classifier under the reference's ConSE head (the class-name embeddings are the
    text encoder's, gated below)."""
    _needs(precision)
    classifier = load_classifier(VisionModelSpec(runtime=runtime, precision=precision))
    assert classifier.runtime == runtime
    head = reference["embedder"]
    top1, image = _outputs(
        ConSEEmbedder(
            classifier=classifier,
            class_embeddings=head.class_embeddings.numpy(),
            space=head.space,
            top_t=head.top_t,
        ),
        photos,
    )
    assert np.array_equal(top1, reference["top1"]), (top1, reference["top1"])
    cosines = (image * reference["image"]).sum(1)
    assert np.all(cosines >= GATE), cosines


@pytest.mark.parametrize("runtime, precision", CHOICES)
def test_text_runtime_matches_fp32_torch(reference, runtime, precision):
    _needs(precision)
    text = load_text(TextModelSpec(runtime=runtime, precision=precision))
    assert text.runtime == runtime
    cosines = (text.embed(SENTENCES) * reference["text"]).sum(1)
    assert np.all(cosines >= GATE), cosines


@pytest.fixture(scope="module")
def served():
    models = AppArgs()
    assert models.vision.model.runtime == models.text.model.runtime == "openvino"
    text = load_text(models.text.model)
    return text, load_embedder(
        models.vision.model, models.text.model, classifier=load_classifier(models.vision.model)
    )


@pytest.mark.parametrize("photo, expected", [("chelsea", "cat"), ("coffee", "coffee"), ("rocket", "rocket")])
def test_served_runtime_zero_shot(served, photo, expected):
    """ConSE zero-shot on the served graph's default runtime (config.args), as test_quality checks it on torch."""
    text, embedder = served
    labels = ["cat", "dog", "car", "coffee", "rocket"]
    image = embedder.embed(embedder.preprocess(decode_image(assets.photo(photo)))[None])[0]
    prompts = text.embed([f"a photo of a {label}" for label in labels])
    assert labels[int(np.argmax(prompts @ image))] == expected
