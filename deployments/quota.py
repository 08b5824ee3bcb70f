"""QuotaKeeper: one replica that holds every tenant's token bucket and concurrency leases, so
limits hold across all gateway replicas and survive a gateway replica's restart.

Its methods are coroutines without awaits: each runs to completion on the replica's event loop,
so bucket updates never interleave."""
from __future__ import annotations

from ray import serve

from deployments.tenancy import TokenBuckets


@serve.deployment(name="QuotaKeeper", num_replicas=1, max_ongoing_requests=1000,
                  ray_actor_options={"num_cpus": 0})
class QuotaKeeper:
    def __init__(self, lease_s: float = 600.0) -> None:
        self.buckets = TokenBuckets(lease_s=lease_s)

    async def acquire(self, tenant: str, rate: float | None, burst: int, max_concurrent: int | None) -> tuple[str | None, float]:
        return self.buckets.acquire(tenant, rate=rate, burst=burst, max_concurrent=max_concurrent)

    async def release(self, tenant: str, lease: str) -> None:
        self.buckets.release(tenant, lease)

    async def snapshot(self) -> dict:
        return self.buckets.snapshot()

    def ping(self) -> str:
        return "ok"
