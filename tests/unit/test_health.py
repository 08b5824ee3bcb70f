"""check_health fails a replica whose batch has stopped progressing, so Serve replaces it."""
from __future__ import annotations

import asyncio
import threading

import pytest

from deployments.common import ModelReplica


class _Wedgeable(ModelReplica):
    def __init__(self) -> None:
        from deployments.common import BatchStats

        self.stats, self.release = BatchStats(), threading.Event()
        self.reconfigure({"stall_timeout_s": 0.3})

    def reconfigure(self, user_config: dict) -> None:  # no @serve.batch methods here
        from config.settings import BatchConfig

        self.batch_config = BatchConfig.model_validate(user_config)


async def test_check_health_fails_a_replica_whose_batch_never_finishes():
    replica = _Wedgeable()
    replica.check_health()
    running = asyncio.ensure_future(replica._run_batch("embed", lambda items: replica.release.wait() and items, [1]))
    try:
        await asyncio.sleep(0.1)
        replica.check_health()  # a batch running for less than stall_timeout_s is fine
        await asyncio.sleep(0.4)
        with pytest.raises(RuntimeError, match="wedged"):
            replica.check_health()
    finally:
        replica.release.set()
    assert await running == [1]
    replica.check_health()  # progress again: healthy
