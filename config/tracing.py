"""Traces: the Serve config file's top-level ``tracing_config``, as mmserve reads it. Ray-free.

The keys are Serve's own (``ray.serve.schema.TracingConfig``), so ``serve deploy`` reads the same
block; mmserve's defaults differ: off, and when on, OTLP over HTTP. Ray 2.60 hands the block to the
replicas but not to the HTTP proxies, which read only ``RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH`` and
``RAY_SERVE_TRACING_SAMPLING_RATIO``; so the launcher (``graphs.launch``) puts it in the job's
environment (``env_vars``), which every Serve process reads. The exporter's endpoint is
OpenTelemetry's own variable, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (in the application's
``runtime_env.env_vars``; default ``http://localhost:4318/v1/traces``, this machine).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

OTLP_HTTP = "deployments.tracing:otlp_http"
EXPORTER_ENV = "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"
SAMPLING_ENV = "RAY_SERVE_TRACING_SAMPLING_RATIO"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


class TracingConfig(BaseModel):
    """OpenTelemetry traces of every request: the proxy, the gateway (admission, parsing, each compose
    node, each handle call) and each replica call (its batch: size and wait; the model's forward
    pass). Off by default, and then the request path does no OpenTelemetry work."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Export traces.")
    exporter_import_path: str = Field(
        OTLP_HTTP,
        description=(
            "A function returning Serve's span processors. The default sends OTLP/protobuf over HTTP "
            f"to `{ENDPOINT_ENV}` (in `runtime_env.env_vars`; default http://localhost:4318/v1/traces), "
            "batched off the request path."
        ),
    )
    sampling_ratio: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description=(
            "Share of new traces sampled. A request whose W3C `traceparent` is sampled is always "
            "traced (parent-based), so 0 traces only the requests a client asks to trace."
        ),
    )

    def env_vars(self) -> dict[str, str]:
        """What every Serve process must read to trace as configured (nothing when off)."""
        if not self.enabled:
            return {}
        return {EXPORTER_ENV: self.exporter_import_path, SAMPLING_ENV: repr(self.sampling_ratio)}


def with_tracing(runtime_env: dict[str, Any] | None, tracing: TracingConfig) -> dict[str, Any] | None:
    """``runtime_env`` with the tracing variables added to its ``env_vars`` (a copy; the same object
    when tracing is off). Variables the file sets itself win."""
    wanted = tracing.env_vars()
    if not wanted:
        return runtime_env
    env = dict(runtime_env or {})
    env["env_vars"] = {**wanted, **(env.get("env_vars") or {})}
    return env
