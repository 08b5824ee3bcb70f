"""What every model deployment shares: batch settings from ``user_config``, batch statistics,
a health check that fails a wedged replica, and the device Ray granted this replica."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time

import ray

from config.settings import BatchConfig
from deployments import metrics, tracing
from deployments.request_ids import batch_ids
from models.runtime import resolve_device

log = logging.getLogger("ray.serve")


def apply_batch_config(user_config: dict | None, *batched_methods) -> BatchConfig:
    """``reconfigure`` body: validate and push the settings into each ``@serve.batch`` method."""
    config = BatchConfig.model_validate(user_config or {})
    for method in batched_methods:
        method.set_max_batch_size(config.max_batch_size)
        method.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
    log.info("batch config: %s", config.model_dump())
    return config


class BatchStats:
    """Sizes of the batches each method really ran, read by tests and ``/v1/stats``."""

    def __init__(self) -> None:
        self._sizes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._lock = threading.Lock()

    def record(self, method: str, size: int) -> None:
        with self._lock:
            self._sizes[method][size] += 1

    def snapshot(self) -> dict[str, dict[int, int]]:
        with self._lock:
            return {name: dict(counter) for name, counter in self._sizes.items()}


def checkpoint_path(path: str | None, field: str) -> None:
    """A checkpoint named in a ``user_config`` must be absolute: the replica's working directory is
    not the config's."""
    if path and not path.startswith(("/", "~")):
        raise ValueError(f"user_config model.{field} must be an absolute path, not '{path}'")


class Progress:
    """Batches running now, and since when: a batch still running past ``stall_timeout_s`` means a
    wedged forward pass (a deadlocked thread pool, a hung device), which ``check_health`` reports so
    Serve replaces the replica instead of queueing requests behind it forever."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[str, float]] = {}
        self._next = 0

    def start(self, method: str) -> int:
        self._next += 1
        self._running[self._next] = (method, time.monotonic())
        return self._next

    def finish(self, ticket: int) -> None:
        self._running.pop(ticket, None)

    def stalled(self, limit_s: float) -> str | None:
        now = time.monotonic()
        late = [(m, now - t) for m, t in self._running.values() if now - t > limit_s]
        if not late:
            return None
        method, age = max(late, key=lambda x: x[1])
        return (
            f"a '{method}' batch has run for {age:.0f}s (stall_timeout_s={limit_s:g}): the replica is wedged"
        )


def replica_device() -> str:
    """``cuda`` when Ray assigned this replica (a fraction of) a GPU and CUDA exists, else ``cpu``."""
    return resolve_device(want_gpu=bool(ray.get_gpu_ids()))


def placement() -> dict:
    """What Ray granted this replica, as Ray itself reports it."""
    ctx = ray.get_runtime_context()
    return {
        "actor_id": ctx.get_actor_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "resources": ctx.get_assigned_resources(),
    }


class ModelReplica:
    """Methods every model deployment answers: liveness, readiness and batch statistics.

    Subclasses list the attributes that must be loaded in ``_required`` and their
    ``@serve.batch`` methods in ``_batched``; Serve calls ``reconfigure`` with the ``user_config``.
    """

    _required: tuple[str, ...] = ()
    _batched: tuple[str, ...] = ()
    stats: BatchStats
    _progress: Progress | None = None
    batch_config: BatchConfig = BatchConfig()

    def __init_subclass__(cls, **kwargs) -> None:
        """Each ``@serve.batch`` method in ``_batched`` notes when a call enters it (its batch wait)."""
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("_batched", ()):
            setattr(cls, name, metrics.timed_batch(cls.__dict__[name]))

    def reconfigure(self, user_config: dict) -> None:
        """Batch settings, and for the encoders an optional ``model``: a new model spec loaded and
        swapped in on the running replica (how a new adapter checkpoint rolls out without a restart)."""
        config = dict(user_config or {})
        model = config.pop("model", None)
        if model is not None:
            self.swap_model(model)
        self.batch_config = apply_batch_config(config, *(getattr(self, name) for name in self._batched))

    def swap_model(self, spec: dict) -> None:
        raise ValueError(f"{type(self).__name__} takes no 'model' in its user_config")

    def batch_stats(self) -> dict:
        return self.stats.snapshot()

    def replica_batch_stats(self) -> dict:
        """This replica's batch statistics and its actor id: a caller that wants every replica's
        (a handle reaches one replica per call) keeps calling until it has seen each id."""
        return {"actor_id": ray.get_runtime_context().get_actor_id(), "sizes": self.stats.snapshot()}

    async def _run_batch(self, method: str, forward, items: list) -> list:
        """Run one batch's forward pass in a worker thread (the event loop stays free), recording
        its size. Serve's log records in the batch's task carry no request id (it holds several):
        one line names them all."""
        log.info("%s: a batch of %d, request ids %s", method, len(items), ",".join(batch_ids()) or "-")
        progress = self.progress()
        ticket = progress.start(method)
        started_ns = tracing.now_ns()
        started = metrics.batch_started(method)
        try:
            out = await asyncio.to_thread(forward, items)
        finally:
            progress.finish(ticket)
        tracing.record_batch(
            f"{type(self).__name__}.{method}",
            size=len(items),
            started_ns=started_ns,
            ended_ns=tracing.now_ns(),
        )
        self.stats.record(method, len(items))
        metrics.observe_batch(method, len(items), started)
        return list(out)

    def progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress()
        return self._progress

    def ping(self) -> str:
        return "ok"

    def check_health(self) -> None:
        missing = [name for name in self._required if getattr(self, name, None) is None]
        if missing:
            raise RuntimeError(f"{type(self).__name__} has no {', '.join(missing)} loaded")
        stalled = self.progress().stalled(self.batch_config.stall_timeout_s)
        if stalled:
            raise RuntimeError(f"{type(self).__name__}: {stalled}")
