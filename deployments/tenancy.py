"""Tenants: who may call, how often, and what they may touch. Ray-free.

- A tenants file (YAML) lists each tenant's API keys as salted SHA-256 hashes, its rate limit
  (requests per second with a burst), its maximum of concurrent requests, the modalities it may
  call and the fusion heads / indexes it may use. ``mmserve tenant-key`` adds a key and prints it once.
- Keys look like ``mms_<key id>_<secret>``: the key id finds the one stored hash to check, and the
  secret is compared in constant time (``hmac.compare_digest``). Secrets are 32 random bytes, so a
  salted SHA-256 is enough; a slow KDF would cost every request milliseconds for nothing.
- ``TokenBuckets`` is the quota arithmetic the ``QuotaKeeper`` actor runs for all gateway replicas.
- The tenant of the request being served lives in a context variable set by the gateway's
  admission middleware, so any code on the request path can ask ``current()``.
"""
from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from models.errors import Forbidden, NotFound, Unauthorized

ALL = "*"
KEY_PREFIX = "mms"
OPEN_TENANT = "default"
TenantId = str


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests_per_second: float = Field(10.0, gt=0)
    burst: int = Field(20, ge=1)


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    keys: list[str] = Field(default_factory=list, description="'sha256$<key id>$<salt>$<hash>' entries")
    disabled: bool = False
    rate_limit: RateLimit | None = RateLimit()
    max_concurrent: int | None = Field(8, ge=1)
    modalities: list[str] = Field(default_factory=lambda: ["image", "text", "audio"])
    heads: list[str] = Field(default_factory=lambda: [ALL], description="fusion heads it may use ('*': all of its own)")
    indexes: list[str] = Field(default_factory=lambda: [ALL], description="indexes it may use ('*': all of its own)")

    def may_use(self, kind: str, name: str) -> bool:
        allowed = self.heads if kind == "head" else self.indexes
        return ALL in allowed or name in allowed

    def require_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise Forbidden(f"tenant '{self.id}' may not call {modality} models", param=modality)

    def require(self, kind: str, name: str) -> None:
        """Names outside the tenant's allow-list look exactly like names that do not exist."""
        if not self.may_use(kind, name):  # the same words as the stores' own NotFound
            label = "fusion head" if kind == "head" else "index"
            raise NotFound(f"{label} '{name}' not found", param=kind)


OPEN = Tenant(id=OPEN_TENANT, rate_limit=None, max_concurrent=None)


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenants: list[Tenant] = Field(default_factory=list)


# ---- keys ----------------------------------------------------------------------------------
def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh API key and the entry that stores its salted hash."""
    key_id, secret, salt = secrets.token_hex(4), secrets.token_urlsafe(32), secrets.token_hex(16)
    return f"{KEY_PREFIX}_{key_id}_{secret}", f"sha256${key_id}${salt}${_digest(salt, secret)}"


def _split_key(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@dataclass
class Directory:
    """Key id -> (tenant, salt, hash) for every stored key; built once from the tenants file."""

    tenants: dict[str, Tenant]
    entries: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    @classmethod
    def build(cls, tenants: list[Tenant]) -> "Directory":
        directory = cls({t.id: t for t in tenants})
        for tenant in tenants:
            for entry in tenant.keys:
                scheme, key_id, salt, digest = entry.split("$")
                if scheme != "sha256":
                    raise ValueError(f"tenant '{tenant.id}': unknown key scheme '{scheme}'")
                directory.entries[key_id] = (tenant.id, salt, digest)
        return directory

    def authenticate(self, key: str | None) -> Tenant:
        if not key:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
        parts = _split_key(key)
        entry = self.entries.get(parts[0]) if parts else None
        # Always hash and compare, so a wrong key id and a wrong secret take the same time.
        tenant_id, salt, digest = entry or ("", "0" * 32, "0" * 64)
        ok = hmac.compare_digest(_digest(salt, parts[1] if parts else ""), digest) and entry is not None
        if not ok:
            raise Unauthorized("invalid API key")
        tenant = self.tenants[tenant_id]
        if tenant.disabled:
            raise Forbidden(f"tenant '{tenant.id}' is disabled")
        return tenant


def load_tenants(path: str | Path) -> list[Tenant]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return TenantsFile.model_validate(data).tenants


def add_key(path: str | Path, tenant_id: str) -> str:
    """Append a new key's hash to ``tenant_id`` (created if new) and return the key itself."""
    file = Path(path)
    data = TenantsFile.model_validate(yaml.safe_load(file.read_text()) or {} if file.exists() else {})
    key, entry = new_key()
    tenant = next((t for t in data.tenants if t.id == tenant_id), None)
    if tenant is None:
        tenant = Tenant(id=tenant_id)
        data.tenants.append(tenant)
    tenant.keys.append(entry)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data.model_dump(), sort_keys=False))
    tmp.replace(file)
    return key


def key_from_headers(headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


# ---- quota arithmetic ----------------------------------------------------------------------
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

    def snapshot(self) -> dict[str, dict]:
        return {t: {"tokens": round(b.tokens, 3), "in_flight": len(b.leases)} for t, b in self.buckets.items()}


# ---- the request's tenant --------------------------------------------------------------------
_current: contextvars.ContextVar[Tenant] = contextvars.ContextVar("mmserve_tenant", default=OPEN)


def current() -> Tenant:
    return _current.get()


def bind(tenant: Tenant) -> contextvars.Token:
    return _current.set(tenant)
