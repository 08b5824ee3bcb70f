"""Tenancy on the request path: API-key authentication against the tenants file, and the tenant of
the request being served (a context variable set by the gateway's admission middleware, so any
code on the request path can ask ``current()``). The file's schema lives in ``config.tenants``."""
from __future__ import annotations

import collections
import contextvars
import hmac
import time
from dataclasses import dataclass, field

from config.tenants import KEY_PREFIX, OPEN, Tenant, digest
from models.errors import Forbidden, Throttled, Unauthorized


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
                scheme, key_id, salt, stored = entry.split("$")
                if scheme != "sha256":
                    raise ValueError(f"tenant '{tenant.id}': unknown key scheme '{scheme}'")
                directory.entries[key_id] = (tenant.id, salt, stored)
        return directory

    def authenticate(self, key: str | None) -> Tenant:
        if not key:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
        parts = _split_key(key)
        entry = self.entries.get(parts[0]) if parts else None
        # Always hash and compare, so a wrong key id and a wrong secret take the same time.
        tenant_id, salt, stored = entry or ("", "0" * 32, "0" * 64)
        ok = hmac.compare_digest(digest(salt, parts[1] if parts else ""), stored) and entry is not None
        if not ok:
            raise Unauthorized("invalid API key")
        tenant = self.tenants[tenant_id]
        if tenant.disabled:
            raise Forbidden(f"tenant '{tenant.id}' is disabled")
        return tenant


class FailedLogins:
    """Failed authentications per client address in a sliding window: past ``limit`` of them, the
    address is refused with 429 until the window has moved on (guessing keys becomes slow)."""

    def __init__(self, *, limit: int = 20, window_s: float = 60.0, clock=time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.recent: dict[str, collections.deque] = {}

    def _window(self, address: str) -> collections.deque:
        stamps, now = self.recent.setdefault(address, collections.deque()), self.clock()
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        return stamps

    def check(self, address: str) -> None:
        stamps = self._window(address)
        if len(stamps) >= self.limit:
            wait = stamps[0] + self.window_s - self.clock()
            raise Throttled(f"too many failed authentications from {address}; retry after {wait:.0f}s",
                            retry_after=wait)

    def record(self, address: str) -> None:
        self._window(address).append(self.clock())
        if len(self.recent) > 10_000:  # forget the quietest addresses rather than grow without bound
            for stale in [a for a, s in self.recent.items() if not s][:5_000]:
                del self.recent[stale]


def key_from_headers(headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


# ---- the request's tenant --------------------------------------------------------------------
_current: contextvars.ContextVar[Tenant] = contextvars.ContextVar("mmserve_tenant", default=OPEN)


def current() -> Tenant:
    return _current.get()


def bind(tenant: Tenant) -> contextvars.Token:
    return _current.set(tenant)
