"""The timing loop the in-process benchmarks share (stdlib only, so it also runs on the GPU machine)."""

from __future__ import annotations

import time
from collections.abc import Callable


def throughput(
    fn: Callable[[], object],
    items: int,
    seconds: float,
    *,
    warmups: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> tuple[float, float]:
    """(items per second, ms per call) of ``fn`` called back to back for ``seconds`` after
    ``warmups`` calls; ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read."""
    for _ in range(warmups):
        fn()
    sync()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    sync()
    elapsed = time.perf_counter() - start
    return calls * items / elapsed, elapsed / calls * 1000
