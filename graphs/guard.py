"""Refuse to deploy what the Ray cluster can never schedule.

Ray alone waits forever for a replica that asks for a GPU (or any resource) no node has; this
check fails within seconds instead, naming the deployment and the missing resource.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


class UnschedulableError(RuntimeError):
    """The configuration asks for resources the cluster does not have."""


@dataclass(frozen=True)
class ReplicaDemand:
    deployment: str
    per_replica: dict[str, float]
    min_replicas: int
    max_replicas: int = 0  # 0: as many as min_replicas (no autoscaling headroom to check)
    max_per_node: int | None = None  # Serve's max_replicas_per_node

    def count(self, at: str) -> int:
        return self.min_replicas if at == "min" else max(self.max_replicas, self.min_replicas)


def problems(demands: list[ReplicaDemand], nodes: list[dict[str, float]]) -> list[str]:
    """Every reason the demands cannot be met by these nodes (empty when they can)."""
    found = [_too_big(d, nodes) for d in demands]
    found += [_too_few_nodes(d, nodes, at=at) for d in demands for at in ("min", "max")]
    found = [f for f in found if f]
    return found + _over_total(demands, nodes) + _over_total(demands, nodes, at="max")


def _fits(demand: ReplicaDemand, node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in demand.per_replica.items())


def _too_big(demand: ReplicaDemand, nodes: list[dict[str, float]]) -> str | None:
    """A single replica must fit on one node."""
    if any(_fits(demand, node) for node in nodes):
        return None
    missing = {
        k: v for k, v in demand.per_replica.items() if max((n.get(k, 0.0) for n in nodes), default=0.0) < v
    }
    wanted = ", ".join(
        f"{k}={v:g} (largest node has {max((n.get(k, 0.0) for n in nodes), default=0.0):g})"
        for k, v in (missing or demand.per_replica).items()
    )
    return f"deployment '{demand.deployment}' asks for {wanted} per replica; no node can host one replica"


def _too_few_nodes(demand: ReplicaDemand, nodes: list[dict[str, float]], *, at: str) -> str | None:
    """With ``max_replicas_per_node``, the replicas need enough nodes that can each host one."""
    hosts = sum(_fits(demand, node) for node in nodes)
    if demand.max_per_node is None or not hosts or demand.count(at) <= hosts * demand.max_per_node:
        return None
    return (
        f"deployment '{demand.deployment}': {demand.count(at)} replicas at its {at}imum, at most "
        f"{demand.max_per_node} per node (max_replicas_per_node), but {hosts} node(s) can host one"
    )


def _over_total(demands: list[ReplicaDemand], nodes: list[dict[str, float]], *, at: str = "min") -> list[str]:
    """The replicas of all deployments together must fit in the cluster's total: the initial ones
    (``at="min"``), and every deployment at its autoscaling maximum (``at="max"``), or one modality's
    scale-up would reserve what another needs to scale (its extra replicas left unschedulable)."""
    need: dict[str, float] = defaultdict(float)
    users: dict[str, list[str]] = defaultdict(list)
    for d in demands:
        count = d.count(at)
        for k, v in d.per_replica.items():
            need[k] += v * count
            users[k].append(f"{d.deployment} {count}x{v:g}")
    total = {k: sum(n.get(k, 0.0) for n in nodes) for k in need}
    return [
        f"resource '{k}': the {at}imum replicas need {need[k]:g} ({', '.join(users[k])}) "
        f"but the cluster has {total[k]:g}"
        for k in need
        if need[k] > total[k] + 1e-9
    ]


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of each alive node, as Ray reports them."""
    import ray

    if not ray.is_initialized():
        ray.init()  # what serve.run would do next anyway: connect to (or start) the cluster
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def check(demands: list[ReplicaDemand], nodes: list[dict[str, float]] | None = None) -> None:
    found = problems(demands, cluster_nodes() if nodes is None else nodes)
    if found:
        raise UnschedulableError(
            "this configuration cannot be scheduled on the Ray cluster:\n- "
            + "\n- ".join(found)
            + "\n(set args.resource_guard: off if an autoscaler will add such nodes)"
        )
