"""Typed arguments of ``build_app`` (the ``args:`` block of a Serve config file). Ray-free.

Resources and autoscaling live here, per modality, rather than in the config file's
``deployments:`` section, so that the resource guard can check them before anything is deployed.
Paths are made absolute once, by the validators, when the args are read.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Self

from config.batch import BatchArgs
from config.settings import BatchConfig, GatewaySettings, absolute
from models.errors import MMServeError
from models.registry import (
    LITE_BACKBONES,
    SpeechModelSpec,
    TextModelSpec,
    VisionLanguageModelSpec,
    VisionModelSpec,
)
from models.search import is_local_uri

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str) -> str:
    """Replace each ``${NAME}`` with that environment variable; one that is not set is an error
    (an unset Milvus URI must not quietly become a local file named '${MILVUS_URI}')."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set (named as ${{{name}}})")
        return os.environ[name]

    return _ENV_REFERENCE.sub(lookup, value)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Autoscaling(_Args):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.min_replicas must be <= max_replicas")
        return self


class DeploymentArgs(_Args):
    """How one deployment runs: per-replica resources, autoscaling and request limits."""

    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per replica")
    autoscaling: Autoscaling = Autoscaling()
    max_replicas_per_node: int | None = Field(
        None,
        ge=1,
        description=(
            "at most this many replicas on one Ray node, so the replicas of a scale-up, and the survivors of "
            "a node loss, are on other nodes (Serve's max_replicas_per_node); default: no limit"
        ),
    )
    max_ongoing_requests: int = Field(32, ge=1)
    max_queued_requests: int | None = Field(
        None,
        ge=1,
        description=(
            "requests each caller (a gateway replica's handle, or the proxy) queues for this deployment "
            "before refusing more with 503; default: one more full load of every replica at max_replicas"
        ),
    )
    graceful_shutdown_wait_loop_s: float = Field(
        1.0,
        gt=0,
        description="how often a stopping replica checks whether its in-flight requests have drained",
    )
    graceful_shutdown_timeout_s: float = Field(
        30.0,
        ge=0,
        description=(
            "how long a stopping replica (scale-down, rolling update) drains in-flight requests before it is killed"
        ),
    )

    def queue_limit(self) -> int:
        """The bounded queue each caller keeps for this deployment (Ray's default, -1, is unbounded)."""
        if self.max_queued_requests is not None:
            return self.max_queued_requests
        return self.max_ongoing_requests * self.autoscaling.max_replicas

    def replica_request(self) -> dict[str, float]:
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: v for k, v in wanted.items() if v > 0}

    def serve_options(self, *, user_config: dict[str, Any] | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "ray_actor_options": {
                "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus,
                "resources": self.resources,
            },
            "autoscaling_config": self.autoscaling.model_dump(),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.queue_limit(),
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }
        if self.max_replicas_per_node is not None:
            options["max_replicas_per_node"] = self.max_replicas_per_node
        if user_config is not None:
            options["user_config"] = user_config
        return options


class _ModelDeploymentArgs(DeploymentArgs):
    batch: BatchConfig = BatchConfig()

    @model_validator(mode="after")
    def _room_for_a_batch(self) -> Self:
        if self.max_ongoing_requests < self.batch.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) < batch.max_batch_size "
                f"({self.batch.max_batch_size}): batches could never fill"
            )
        return self


def _adapter_checkpoint(path: str | None, field: str, *, allow_worse_than_base: bool) -> str:
    """An adapter checkpoint directory made absolute (replicas do not share the config's working
    directory) and checked now, so a wrong path, or a checkpoint not measured to beat its base without
    ``allow_worse_than_base: true``, fails the config, not a replica."""
    from models.adapter import check_promotion, read_meta

    if not path:
        raise ValueError(f"{field}: an adapter needs the path of its checkpoint directory")
    path = absolute(path)
    try:
        check_promotion(read_meta(path), allow_worse_than_base=allow_worse_than_base, field=field)
    except MMServeError as exc:
        raise ValueError(
            exc.message if exc.message.startswith(field) else f"{field}: {exc.message}"
        ) from None
    return path


# The served encoders' runtime when the config names none: the fastest that passes the accuracy gates
# (benchmarks/runtime_compare.py; gates in tests/quality/test_runtime_gates.py). ``auto`` is bf16 where
# the CPU has it natively, fp32 elsewhere. Models a compiled runtime cannot run (CLIP, ViT) keep torch.
SERVED_RUNTIME = {"runtime": "openvino", "precision": "auto"}


def served_runtime(model: Any, compiled: bool) -> Any:
    """A model dict without a ``runtime`` gets ``SERVED_RUNTIME`` (a ``precision`` it names is kept)."""
    if isinstance(model, dict) and "runtime" not in model and compiled:
        return SERVED_RUNTIME | model
    return model


class VisionArgs(_ModelDeploymentArgs):
    model: VisionModelSpec = VisionModelSpec(**SERVED_RUNTIME)

    @field_validator("model", mode="before")
    @classmethod
    def _runtime(cls, model: Any) -> Any:
        compiled = (
            isinstance(model, dict)
            and model.get("classifier", "efficientnet-lite0") in LITE_BACKBONES
            and model.get("embedder", "conse") != "clip"
        )
        return served_runtime(model, compiled)

    @field_validator("model")
    @classmethod
    def _adapter_path(cls, model: VisionModelSpec) -> VisionModelSpec:
        if model.embedder != "adapter":
            return model
        return model.model_copy(
            update={
                "embedder_path": _adapter_checkpoint(
                    model.embedder_path,
                    "vision.model.embedder_path",
                    allow_worse_than_base=model.allow_worse_than_base,
                )
            }
        )


class TextArgs(_ModelDeploymentArgs):
    model: TextModelSpec = TextModelSpec(**SERVED_RUNTIME)

    @field_validator("model", mode="before")
    @classmethod
    def _runtime(cls, model: Any) -> Any:
        return served_runtime(model, isinstance(model, dict) and model.get("kind", "minilm") != "clip")

    @field_validator("model")
    @classmethod
    def _adapter_path(cls, model: TextModelSpec) -> TextModelSpec:
        if model.kind != "adapter":
            return model
        path = _adapter_checkpoint(
            model.path, "text.model.path", allow_worse_than_base=model.allow_worse_than_base
        )
        return model.model_copy(update={"path": path})


class AudioArgs(_ModelDeploymentArgs):
    model: SpeechModelSpec = SpeechModelSpec()
    batch: BatchConfig = BatchConfig(max_batch_size=8)
    max_ongoing_requests: int = Field(16, ge=1)


class SearchArgs(DeploymentArgs):
    """The SearchIndex deployment: Milvus Lite in a local file by default, or a Milvus server."""

    enabled: bool = True
    uri: str = Field(
        "~/.local/share/mmserve/search.db",
        description="a Milvus Lite file, or a Milvus server such as http://milvus:19530",
    )
    token: str = Field("", description="Milvus credentials ('user:password' or an API key) for a server uri")
    num_cpus: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _one_process_per_file(self) -> Self:
        if is_local_uri(self.uri) and self.autoscaling.max_replicas > 1:
            raise ValueError(
                "search.uri is a Milvus Lite file, which one process at a time can open: keep "
                "search.autoscaling.max_replicas at 1, or point search.uri at a Milvus server to scale"
            )
        return self

    @field_validator("uri", "token", mode="before")
    @classmethod
    def _from_environment(cls, value: Any) -> Any:
        """``${NAME}`` is read from the environment of the process that builds the app (on
        Kubernetes: a ConfigMap for the uri, a Secret for the token), so neither sits in the config."""
        return expand_env(value) if isinstance(value, str) else value

    @field_validator("uri")
    @classmethod
    def _absolute_file(cls, uri: str) -> str:
        return absolute(uri) if is_local_uri(uri) else uri


class FusionArgs(DeploymentArgs):
    """The FusionHead deployment: heads loaded by id from a model store folder (shared storage on a cluster)."""

    enabled: bool = True
    store: str = Field("~/.local/share/mmserve/heads", description="model store: <store>/<tenant>/<head>/")
    max_heads: int = Field(4, ge=1, description="heads each replica keeps loaded (LRU)")
    num_cpus: float = Field(0.1, ge=0)

    @field_validator("store")
    @classmethod
    def _absolute(cls, store: str) -> str:
        return absolute(store)


class VisionLanguageArgs(_ModelDeploymentArgs):
    """The VisionLanguage deployment: captioning and VQA models served by id (Serve model
    multiplexing). Off by default: no vision-language weights are packaged for offline use."""

    enabled: bool = False
    models: list[VisionLanguageModelSpec] = Field(
        default_factory=list, description="the models requests may name"
    )
    max_models: int = Field(2, ge=1, description="models each replica keeps loaded (LRU)")
    num_cpus: float = Field(1.0, ge=0)
    batch: BatchConfig = BatchConfig(max_batch_size=8)

    @model_validator(mode="after")
    def _models_when_on(self) -> Self:
        if self.enabled and not self.models:
            raise ValueError("vision_language.enabled needs vision_language.models (id, task, engine, path)")
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"vision_language.models: ids must be unique, got {ids}")
        return self


class GatewayArgs(DeploymentArgs):
    num_cpus: float = Field(0.1, ge=0)
    # Serve hands a request to a gateway replica as soon as its headers are in, and the proxy queues
    # what does not fit: a body still arriving holds one of these. Well above max_inflight, so slow
    # bodies (cut by min_body_rate) and refusals never wait in the proxy behind admitted work.
    max_ongoing_requests: int = Field(256, ge=1)
    settings: GatewaySettings = GatewaySettings()

    @model_validator(mode="after")
    def _refuse_before_serve_queues(self) -> Self:
        """The gateway's own admission refuses (in the error shape, with Retry-After) before Serve's
        per-replica limit would make the proxy queue or answer in plain text."""
        if self.settings.max_inflight >= self.max_ongoing_requests:
            raise ValueError(
                f"gateway.settings.max_inflight ({self.settings.max_inflight}) must be below "
                f"gateway.max_ongoing_requests ({self.max_ongoing_requests})"
            )
        return self


class AppArgs(_Args):
    vision: VisionArgs = VisionArgs()
    text: TextArgs = TextArgs()
    audio: AudioArgs = AudioArgs()
    gateway: GatewayArgs = GatewayArgs()
    search: SearchArgs = SearchArgs()
    fusion: FusionArgs = FusionArgs()
    vision_language: VisionLanguageArgs = VisionLanguageArgs()
    batch: BatchArgs = BatchArgs()
    resource_guard: Literal["strict", "off"] = Field(
        "strict", description="'off' for clusters whose autoscaler adds nodes on demand (e.g. KubeRay)"
    )

    @model_validator(mode="after")
    def _one_space(self) -> Self:
        vision_space, text_space = self.vision.model.space(self.text.model), self.text.model.space
        if self.text.model.kind == "adapter" and self.vision.model.embedder != "adapter":
            raise ValueError(
                f"text embeddings come from the adapter checkpoint {self.text.model.path} ({text_space}) but "
                f"vision.model.embedder is {self.vision.model.embedder}: set vision.model.embedder=adapter "
                "and embedder_path to the same checkpoint"
            )
        if vision_space != text_space:
            raise ValueError(
                f"vision embeddings ({vision_space}) and text embeddings ({text_space}) must share a space "
                "for zero-shot and retrieval: pair CLIP with the same CLIP checkpoint, ConSE with any text "
                "model, or a fine-tuned adapter (vision.model.embedder=adapter) with text.model.kind=adapter on the "
                "same checkpoint directory"
            )
        return self

    def deployments(self) -> dict[str, DeploymentArgs]:
        out = {
            "VisionEncoder": self.vision,
            "TextEncoder": self.text,
            "AudioModel": self.audio,
            "Gateway": self.gateway,
        }
        if self.search.enabled:
            out["SearchIndex"] = self.search
        if self.fusion.enabled:
            out["FusionHead"] = self.fusion
        if self.vision_language.enabled:
            out["VisionLanguage"] = self.vision_language
        return out
