"""How an uploaded image crosses from the gateway to the vision replica (``GatewaySettings.
image_transport``), and what each side does to it. The choices, measured side by side in
``python -m benchmarks.image_throughput --transports``:

* ``array``: the gateway decodes the whole image (up to ``max_image_side``) and sends the RGB array;
* ``draft``: the gateway decodes only as much as the model uses: a JPEG is drafted (downscaled in the
  DCT domain while decoding) and any image shrunk until its short side is the model's ``resize``;
* ``input``: ``draft``, then the model's centre crop too: the replica gets its input, ``crop`` x ``crop``;
* ``bytes``: the gateway checks the upload's header (bytes, format, pixel cap: the same checks, in the
  same order, that decoding starts with) and sends the bytes; the replica decodes them as ``draft``
  does, under the same limits, so a corrupt body still answers 400 with the same error.

A model whose preprocess is not a short-side resize plus centre crop says nothing of its input
(``InputSize`` None) and gets ``array``.

On 2 CPU cores ``bytes`` had the best median rate and the least gateway CPU per image (at c=16 the
spreads of ``bytes``, ``draft`` and ``array`` overlap on small photos; on camera-sized ones ``array``
is 2.3x slower than the rest: benchmarks/reference/image_transport_2core.json), so it is the default. Where
the replica's CPU is the scarce one (a GPU replica with one CPU) the gateways should decode: ``draft``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from models.media import MediaLimits, decode_image, open_image

Transport = Literal["array", "draft", "input", "bytes"]


@dataclass(frozen=True)
class InputSize:
    """What a model's preprocess makes of an image: short side to ``resize``, then a centred crop."""

    resize: int
    crop: int


@dataclass(frozen=True)
class Cropped:
    """An image already resized and centre-cropped to a model's input (``crop`` x ``crop`` RGB uint8)."""

    pixels: np.ndarray


@dataclass(frozen=True)
class Encoded:
    """An upload whose header the gateway checked; the replica decodes it under the same limits."""

    raw: bytes
    limits: MediaLimits
    param: str

    def decode(self, size: InputSize | None) -> np.ndarray:
        """What ``draft`` would have sent (the media errors for a body that does not decode)."""
        return decode_image(
            self.raw, limits=self.limits, param=self.param, min_side=size.resize if size else None
        )


def resize_center_crop(image: np.ndarray, size: InputSize) -> np.ndarray:
    """Short side to ``size.resize`` (bicubic), then a centred ``size.crop`` square, RGB uint8."""
    img = Image.fromarray(image)
    scale = size.resize / min(img.size)
    crop = size.crop
    img = img.resize(
        (max(crop, round(img.width * scale)), max(crop, round(img.height * scale))), Image.BICUBIC
    )
    left, top = (img.width - crop) // 2, (img.height - crop) // 2
    return np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def for_replica(
    raw: bytes, *, transport: Transport, size: InputSize | None, limits: MediaLimits, param: str
) -> np.ndarray | Cropped | Encoded:
    """What the gateway sends the vision replica for ``raw`` (bad input raises the media errors)."""
    if size is None or transport == "array":
        return decode_image(raw, limits=limits, param=param)
    if transport == "bytes":
        open_image(raw, limits, param)
        return Encoded(raw, limits, param)
    image = decode_image(raw, limits=limits, param=param, min_side=size.resize)
    return Cropped(resize_center_crop(image, size)) if transport == "input" else image
