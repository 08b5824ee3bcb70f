"""Stand-ins for the modality deployments, for testing the gateway through real Ray where the
models do not matter: the compose DAG's concurrency (each method sleeps ``delay_s``) and tenancy.
They answer in the real shapes with small deterministic vectors; nothing here is presented as a model."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
from ray import serve

from config.args import DeploymentArgs, GatewayArgs
from deployments.common import BatchStats, ModelReplica
from deployments.gateway.ingress import Gateway
from deployments.info import EncoderInfo
from models.fusion import ModalityFeatures

DIM = 8


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def stub_info(modality: str) -> EncoderInfo:
    return EncoderInfo(
        modality=modality,
        model=f"stub-{modality}",
        space="test-space",
        dim=DIM,
        token_dim=DIM,
        device="cpu",
        logit_scale=10.0,
        task_model=f"stub-{modality}-task",
    )


@serve.deployment(num_replicas=1, max_ongoing_requests=16, ray_actor_options={"num_cpus": 0})
class StubModel:
    def __init__(self, modality: str, delay_s: float) -> None:
        self.modality, self.delay_s = modality, delay_s
        self.embedded = 0  # embed calls served, so tests can see which requests reached the model
        self.embeds_finished = 0  # ... and how many ran to the end (a cancelled call does not)

    async def _wait(self) -> None:
        await asyncio.sleep(self.delay_s)

    def info(self) -> EncoderInfo:
        return stub_info(self.modality)

    def batch_stats(self) -> dict:
        return {}

    def ping(self) -> str:
        return "ok"

    def embed_calls(self) -> int:
        return self.embedded

    def finished_embeds(self) -> int:
        return self.embeds_finished

    async def embed(self, x) -> np.ndarray:
        self.embedded += 1
        await self._wait()
        self.embeds_finished += 1
        return (
            np.stack([_unit(len(t)) for t in x])
            if self.modality == "text"
            else _unit(int(np.asarray(x).size))
        )

    async def classify(self, image, top_k: int) -> list[dict]:
        await self._wait()
        return [{"index": 0, "label": "slow", "score": 1.0}][:top_k]

    async def transcribe(self, audio, options: dict) -> dict:
        await self._wait()
        return {
            "text": "slow words",
            "language": "en",
            "language_probability": 1.0,
            "duration": round(len(audio) / 16000, 3),
            "task": options["task"],
            "segments": [],
        }

    async def fusion_features(self, x) -> ModalityFeatures:
        await self._wait()
        return ModalityFeatures(pooled=_unit(len(x)), tokens=np.stack([_unit(i) for i in range(3)]))


class BatchedStub(ModelReplica):
    """A stand-in with the real replicas' machinery: ``@serve.batch`` methods whose forward pass (a
    sleep of ``delay_s`` per batch, in a worker thread) is counted in ``batch_stats``, the same
    ``check_health``, and its process id, so chaos tests can kill it and see what work it really did.
    Deployed with ``serve.deployment(BatchedStub, name=...)``."""

    _batched = ("_embed_batch", "_classify_batch", "_transcribe_batch")

    def __init__(self, modality: str, delay_s: float) -> None:
        self.modality, self.delay_s, self.stats = modality, delay_s, BatchStats()

    def _forward(self, items: list) -> list:
        time.sleep(self.delay_s)
        return items

    @serve.batch
    async def _embed_batch(self, items: list) -> list:
        return await self._run_batch("embed", self._forward, items)

    @serve.batch
    async def _classify_batch(self, items: list) -> list:
        return await self._run_batch("classify", self._forward, items)

    @serve.batch
    async def _transcribe_batch(self, items: list) -> list:
        return await self._run_batch("transcribe", self._forward, items)

    def info(self) -> EncoderInfo:
        return stub_info(self.modality)

    async def embed(self, x) -> np.ndarray:
        await self._embed_batch(0)
        return (
            np.stack([_unit(len(t)) for t in x])
            if self.modality == "text"
            else _unit(int(np.asarray(x).size))
        )

    async def classify(self, image, top_k: int) -> list[dict]:
        await self._classify_batch(0)
        return [{"index": 0, "label": "stand-in", "score": 1.0}][:top_k]

    async def transcribe(self, audio, options: dict) -> dict:
        await self._transcribe_batch(0)
        return {
            "text": "stand-in words",
            "language": "en",
            "language_probability": 1.0,
            "duration": round(len(audio) / 16000, 3),
            "task": options["task"],
            "segments": [],
        }

    def pid(self) -> int:
        return os.getpid()


def stub_models(
    prefix: str, *, delay_s: float = 0.0, modalities=("image", "text", "audio"), **options
) -> list:
    """One ``StubModel`` deployment per modality, named ``<prefix><Modality>``; ``options`` are Serve
    deployment options (``max_ongoing_requests``...)."""
    return [StubModel.options(name=f"{prefix}{m.title()}", **options).bind(m, delay_s) for m in modalities]


def stub_model(modality: str, args: DeploymentArgs, *, name: str, delay_s: float, batch: int = 4):
    """A ``BatchedStub`` deployment run with the options the real ``DeploymentArgs`` give it
    (resources, autoscaling, bounded queues, drain settings)."""
    options = args.serve_options(user_config={"max_batch_size": batch, "batch_wait_timeout_s": 0.01})
    return serve.deployment(BatchedStub, name=name).options(**options).bind(modality, delay_s)


def stub_gateway(vision, text, audio, args: GatewayArgs, *, name: str, **optional):
    """The real Gateway, run with the real ``GatewayArgs``, over stand-in models."""
    return Gateway.options(name=name, **args.serve_options()).bind(
        vision, text, audio, args.settings.model_dump(), **optional
    )


POISON_TEXT = "poison 22: this text makes CrashOnPoison's process exit"


class CrashOnPoison:
    """A text encoder stand-in that dies (``os._exit(1)``: no exception, no reply, the process gone, as
    when Ray's worker died encoding an error in issue 22) on ``POISON_TEXT``, and embeds anything else.
    Deployed with ``serve.deployment(CrashOnPoison, name=...)`` (see ``crash_on_poison``)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def info(self) -> EncoderInfo:
        return stub_info("text")

    def batch_stats(self) -> dict:
        return {}

    def ping(self) -> str:
        return "ok"

    async def embed(self, texts: list[str]) -> np.ndarray:
        if POISON_TEXT in texts:
            os._exit(1)
        await asyncio.sleep(self.delay_s)
        return np.stack([_unit(len(t)) for t in texts])


def crash_on_poison(*, name: str, replicas: int, delay_s: float = 0.02):
    return (
        serve.deployment(CrashOnPoison, name=name)
        .options(num_replicas=replicas, max_ongoing_requests=16, ray_actor_options={"num_cpus": 0})
        .bind(delay_s)
    )
