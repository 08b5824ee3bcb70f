"""Hand-crafted audio features with librosa: log-mel spectrogram (dB), MFCC and chroma."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.media import SAMPLE_RATE

FeatureKind = Literal["mel", "mfcc", "chroma"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("mel", "mfcc", "chroma")


@dataclass(frozen=True)
class FeatureParams:
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 64
    n_mfcc: int = 20
    n_chroma: int = 12


def compute_features(
    audio: np.ndarray, kinds: Sequence[FeatureKind], params: FeatureParams = FeatureParams()
) -> dict:
    """Each requested feature as a (bins, frames) float32 array, plus the frame rate in Hz."""
    import librosa

    audio = np.ascontiguousarray(audio, dtype=np.float32)  # arrays from Ray handles are read-only
    out: dict[str, np.ndarray] = {}
    mel_power = None
    if "mel" in kinds or "mfcc" in kinds:
        mel_power = librosa.feature.melspectrogram(
            y=audio, sr=SAMPLE_RATE, n_fft=params.n_fft, hop_length=params.hop_length, n_mels=params.n_mels
        )
    if "mel" in kinds:
        out["mel"] = librosa.power_to_db(mel_power, ref=np.max).astype(np.float32)
    if "mfcc" in kinds:
        out["mfcc"] = librosa.feature.mfcc(S=librosa.power_to_db(mel_power), n_mfcc=params.n_mfcc).astype(
            np.float32
        )
    if "chroma" in kinds:
        out["chroma"] = librosa.feature.chroma_stft(
            y=audio,
            sr=SAMPLE_RATE,
            n_fft=params.n_fft,
            hop_length=params.hop_length,
            n_chroma=params.n_chroma,
        ).astype(np.float32)
    return out


def frame_rate(params: FeatureParams = FeatureParams()) -> float:
    return SAMPLE_RATE / params.hop_length


def warmup() -> None:
    """librosa compiles its kernels with numba on first use (~13 s): pay that at start-up."""
    compute_features(np.zeros(SAMPLE_RATE, dtype=np.float32), FEATURE_KINDS)
