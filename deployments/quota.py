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


LEASE_S = 15.0  # a lease lives this long unless its gateway renews it (every LEASE_S / 3)


class TokenBuckets:
    """Token buckets (rate + burst) and concurrency leases per tenant.

    A lease expires ``lease_s`` after it was taken or last renewed. The gateway replica that holds
    it renews it while the request runs, so a replica that dies mid-request frees its tenant's
    concurrency slots within ``lease_s`` instead of locking the tenant out.
    """

    def __init__(self, *, lease_s: float = LEASE_S, clock=time.monotonic) -> None:
        self.buckets: dict[str, _Bucket] = {}
        self.lease_s, self.clock = lease_s, clock

    def _bucket(self, tenant: str, burst: int, now: float) -> _Bucket:
        return self.buckets.setdefault(tenant, _Bucket(tokens=float(burst), stamp=now))

    def acquire(
        self, tenant: str, *, rate: float | None, burst: int, max_concurrent: int | None
    ) -> tuple[str | None, float, str]:
        """(lease id, 0, "") when admitted, else (None, seconds until a retry can succeed, the limit hit:
        "max_concurrent" or "rate_limit")."""
        now = self.clock()
        bucket = self._bucket(tenant, burst, now)
        bucket.leases = {k: exp for k, exp in bucket.leases.items() if exp > now}
        if rate is not None:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if max_concurrent is not None and len(bucket.leases) >= max_concurrent:
            return None, 1.0, "max_concurrent"
        if rate is not None and bucket.tokens < 1.0:
            return None, (1.0 - bucket.tokens) / rate, "rate_limit"
        if rate is not None:
            bucket.tokens -= 1.0
        lease = secrets.token_hex(8)
        bucket.leases[lease] = now + self.lease_s
        return lease, 0.0, ""

    def renew(self, tenant: str, leases: list[str]) -> None:
        """Extend the leases a live gateway still holds (expired ones stay expired)."""
        bucket, now = self.buckets.get(tenant), self.clock()
        for lease in leases if bucket is not None else ():
            if bucket.leases.get(lease, 0.0) > now:
                bucket.leases[lease] = now + self.lease_s

    def release(self, tenant: str, lease: str) -> None:
        bucket = self.buckets.get(tenant)
        if bucket is not None:
            bucket.leases.pop(lease, None)


@serve.deployment(
    name="QuotaKeeper", num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0}
)
class QuotaKeeper:
    def __init__(self, lease_s: float = LEASE_S) -> None:
        self.buckets = TokenBuckets(lease_s=lease_s)

    async def acquire(
        self, tenant: str, rate: float | None, burst: int, max_concurrent: int | None
    ) -> tuple[str | None, float, str]:
        return self.buckets.acquire(tenant, rate=rate, burst=burst, max_concurrent=max_concurrent)

    async def renew(self, tenant: str, leases: list[str]) -> None:
        self.buckets.renew(tenant, leases)

    async def release(self, tenant: str, lease: str) -> None:
        self.buckets.release(tenant, lease)

    def ping(self) -> str:
        return "ok"
