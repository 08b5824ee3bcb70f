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
    running = asyncio.ensure_future(
        replica._run_batch("embed", lambda items: replica.release.wait() and items, [1])
    )
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


class _Busy:
    """A handle whose ping waits behind work that fills every replica slot (it never answers here)."""

    def __init__(self, name: str) -> None:
        self.deployment_name, self.pinged = name, 0

    @property
    def ping(self):
        return self

    def remote(self):
        self.pinged += 1
        return _Never()


class _Never:
    def __await__(self):
        return asyncio.get_running_loop().create_future().__await__()

    def cancel(self) -> None:
        pass


async def test_readyz_counts_a_deployment_that_answered_lately_as_ready_without_pinging_it():
    """Under load a ping queues behind real work; a call that returned within liveness.RECENT_S
    proves the deployment is serving (issue 22: /readyz said 503 for every model under load)."""
    import json
    from types import SimpleNamespace

    from deployments.gateway import liveness
    from deployments.gateway.routes.service import readyz

    busy, idle = _Busy("BusyEncoder"), _Busy("IdleEncoder")
    svc = SimpleNamespace(
        deployments=lambda: {"VisionEncoder": busy, "TextEncoder": idle},
        settings=SimpleNamespace(ready_timeout_s=0.2),
    )
    liveness.answered("BusyEncoder")
    answer = await readyz(svc)
    states = json.loads(answer.body)["deployments"]
    assert busy.pinged == 0 and states["VisionEncoder"] == "ok", states
    assert idle.pinged == 1 and states["TextEncoder"].startswith("not ready"), states
    assert answer.status_code == 503
