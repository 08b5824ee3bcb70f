"""What a thread hop costs the gateway against the work it moves off the event loop, per body size:
the measurement behind ``deployments.gateway.parsing.INLINE_BYTES``.

``PYTHONPATH=. python -m benchmarks.inline_threshold``: CPU microseconds (process time, so a busy
machine inflates neither column much) of ``asyncio.to_thread`` around a no-op, and of each inline
step (sha256, JSON body with base64 media parsed and validated, orjson of the answer's floats).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np

from api import schemas as s
from deployments.gateway import responses
from deployments.gateway.parsing import _validate_json

SIZES = (4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20)


def cpu_us(fn, n: int = 200) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


async def hop_us(n: int = 2000) -> float:
    start = time.process_time()
    for _ in range(n):
        await asyncio.to_thread(int)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    print(f"thread hop (asyncio.to_thread of a no-op): {asyncio.run(hop_us()):.0f} us CPU")
    print("| bytes | sha256 us | JSON body parse+validate us | orjson of bytes/8 floats us |")
    print("|---|---|---|---|")
    for size in SIZES:
        raw = np.random.default_rng(0).bytes(size)
        body = json.dumps({"images": [base64.b64encode(raw).decode()]}).encode()
        rows = np.random.default_rng(0).standard_normal((1, size // 8)).astype(np.float32)
        info = type("I", (), {"model": "m", "space": "s"})()
        print(
            f"| {size} | {cpu_us(lambda: s.content_id(raw)):.0f} "
            f"| {cpu_us(lambda: _validate_json(body, s.ImageEmbedRequest)):.0f} "
            f"| {cpu_us(lambda: responses.json_response(responses.embeddings(info, rows))):.0f} |"
        )


if __name__ == "__main__":
    main()
