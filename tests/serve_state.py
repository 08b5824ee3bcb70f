"""Where a Serve application's replicas run, read from Ray's actor table (GCS) by the test's driver."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Replica:
    actor_id: str
    pid: int
    node_id: str


def replica_prefix(app: str, deployment: str) -> str:
    """Serve names each replica's actor ``SERVE_REPLICA::<app>#<deployment>#<replica id>``."""
    return f"SERVE_REPLICA::{app}#{deployment}#"


def _alive_actors() -> list[dict]:
    import ray

    return list(ray._private.state.actors(actor_state_name="ALIVE").values())


def proxy_pid() -> int:
    """The process of Serve's HTTP proxy (on a single node, the only one)."""
    return next(a["Pid"] for a in _alive_actors() if a["Name"].startswith("SERVE_PROXY_ACTOR"))


def replicas(app: str, deployment: str) -> list[Replica]:
    """The deployment's live replica actors (started, perhaps not yet RUNNING in Serve's eyes)."""
    prefix = replica_prefix(app, deployment)
    return sorted(
        (
            Replica(a["ActorID"], a["Pid"], a["Address"]["NodeID"])
            for a in _alive_actors()
            if a["Name"].startswith(prefix)
        ),
        key=lambda r: r.actor_id,
    )


def replica_pids(app: str, deployment: str) -> list[int]:
    return sorted(r.pid for r in replicas(app, deployment))
