"""A picture of the audio features: mel spectrogram (dB), MFCC and chroma over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from api import schemas as s

TITLES = {
    "mel": "mel spectrogram (dB)",
    "mfcc": "MFCC (each coefficient standardised over time)",
    "chroma": "chroma",
}
CMAPS = {"mel": "magma", "mfcc": "coolwarm", "chroma": "magma"}
PITCHES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def plot_features(result: s.FeaturesResponse, path: Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = [n for n in ("mel", "mfcc", "chroma") if n in result.features]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        data = np.asarray(result.features[name].data, dtype=np.float32)
        if name == "mfcc":  # c0 (energy) dwarfs the rest: show each coefficient's variation
            data = (data - data.mean(axis=1, keepdims=True)) / (data.std(axis=1, keepdims=True) + 1e-6)
        extent = (0.0, data.shape[1] / result.frame_rate, 0, data.shape[0])
        image = ax.imshow(data, origin="lower", aspect="auto", extent=extent, cmap=CMAPS[name])
        ax.set_title(TITLES[name])
        if name == "chroma":
            ax.set_yticks(np.arange(12) + 0.5, PITCHES)
        fig.colorbar(image, ax=ax, pad=0.01)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
