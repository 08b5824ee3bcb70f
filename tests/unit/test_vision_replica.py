"""VisionEncoder.embed's handling of what the gateway sends (models/image_input.py), without Ray or a
model: the replica's class with a stand-in embedder and batch."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from deployments import vision
from models.image_input import Cropped, Encoded, InputSize
from models.media import MediaLimits


class Embedder:
    input_size = InputSize(resize=256, crop=224)


def replica(received: list):
    encoder = object.__new__(vision.VisionEncoder.func_or_class)
    encoder.embedder = Embedder()
    encoder._decodes = asyncio.Semaphore(vision.DECODES)

    async def batch(image):
        received.append(image)
        return np.zeros(4)

    encoder._embed_batch = batch
    return encoder


async def test_a_crop_for_another_models_input_goes_to_the_batch_as_an_image_to_resize():
    received = []
    encoder = replica(received)
    fits, stale = Cropped(np.zeros((224, 224, 3), np.uint8)), Cropped(np.zeros((336, 336, 3), np.uint8))
    await encoder.embed(fits)
    await encoder.embed(stale)
    assert received[0] is fits  # used as it is
    assert isinstance(received[1], np.ndarray) and received[1].shape == (336, 336, 3)  # resized by preprocess


async def test_uploads_are_decoded_at_most_DECODES_at_a_time(monkeypatch):
    running, most, lock = [0], [0], threading.Lock()

    def decode(self, size):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return np.zeros((256, 256, 3), np.uint8)

    monkeypatch.setattr(Encoded, "decode", decode)
    received = []
    encoder = replica(received)
    await asyncio.gather(*(encoder.embed(Encoded(b"x", MediaLimits(), "image")) for _ in range(8)))
    assert len(received) == 8 and most[0] == vision.DECODES
