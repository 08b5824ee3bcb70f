"""QuotaKeeper: one replica that holds every tenant's token bucket and concurrency leases, so
limits hold across all gateway replicas and survive a gateway replica's restart.

Its methods are coroutines without awaits: each runs to completion on the replica's event loop,
so bucket updates never interleave."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from ray import serve


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    leases: dict[str, float] = field(default_factory=dict)  # lease id -> expiry


class TokenBuckets:
    """Token buckets (rate + burst) and concurrency leases per tenant.

    A lease expires after ``lease_s`` so a gateway replica that dies mid-request cannot hold a
    tenant's concurrency slot forever.
    """

    def __init__(self, *, lease_s: float = 600.0, clock=time.monotonic) -> None:
        self.buckets: dict[str, _Bucket] = {}
        self.lease_s, self.clock = lease_s, clock

    def _bucket(self, tenant: str, burst: int, now: float) -> _Bucket:
        return self.buckets.setdefault(tenant, _Bucket(tokens=float(burst), stamp=now))

    def acquire(self, tenant: str, *, rate: float | None, burst: int, max_concurrent: int | None) -> tuple[str | None, float]:
        """(lease id, 0) when admitted, else (None, seconds until a retry can succeed)."""
        now = self.clock()
        bucket = self._bucket(tenant, burst, now)
        bucket.leases = {k: exp for k, exp in bucket.leases.items() if exp > now}
        if rate is not None:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if max_concurrent is not None and len(bucket.leases) >= max_concurrent:
            return None, 1.0
        if rate is not None and bucket.tokens < 1.0:
            return None, (1.0 - bucket.tokens) / rate
        if rate is not None:
            bucket.tokens -= 1.0
        lease = secrets.token_hex(8)
        bucket.leases[lease] = now + self.lease_s
        return lease, 0.0

    def release(self, tenant: str, lease: str) -> None:
        bucket = self.buckets.get(tenant)
        if bucket is not None:
            bucket.leases.pop(lease, None)


@serve.deployment(name="QuotaKeeper", num_replicas=1, max_ongoing_requests=1000,
                  ray_actor_options={"num_cpus": 0})
class QuotaKeeper:
    def __init__(self, lease_s: float = 600.0) -> None:
        self.buckets = TokenBuckets(lease_s=lease_s)

    async def acquire(self, tenant: str, rate: float | None, burst: int, max_concurrent: int | None) -> tuple[str | None, float]:
        return self.buckets.acquire(tenant, rate=rate, burst=burst, max_concurrent=max_concurrent)

    async def release(self, tenant: str, lease: str) -> None:
        self.buckets.release(tenant, lease)

    def ping(self) -> str:
        return "ok"
