"""Tenancy on the request path: API-key authentication against the tenants file, and the tenant of
the request being served: admission binds it to the request, and routes take it as a dependency
(``Depends(current_tenant)``) and hand it to the services explicitly. The file's schema lives in
``config.tenants``."""

from __future__ import annotations

import collections
import hmac
import time
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from config.tenants import KEY_PREFIX, Tenant, digest
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
    def build(cls, tenants: list[Tenant]) -> Directory:
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


# A key id longer than this is no key id of ours (they are 8 hex characters): it is throttled by
# address only, so an attacker cannot fill the per-key-id state with 30 KB header values.
MAX_KEY_ID = 64
EVERYONE = "*"


def throttle_key_id(key: str | None) -> str | None:
    """The key id that failed attempts with ``key`` count against, or None (the address alone) for a
    key that does not parse. It does not depend on whether the key id exists: counting unknown ids
    like known ones is what keeps the throttle from telling an attacker which ids are real."""
    parts = _split_key(key) if key else None
    return parts[0] if parts and len(parts[0]) <= MAX_KEY_ID else None


class SlidingWindow:
    """Failure times per name (an address, a key id) in a sliding window of ``window_s``.

    Memory is bounded twice: a name keeps at most ``limit`` times (the oldest of the last ``limit``
    is all the limit needs), and at most ``max_names`` names are kept, the one that failed least
    recently forgotten first. Names whose last failure left the window are forgotten as others fail."""

    def __init__(self, *, limit: int, window_s: float, max_names: int) -> None:
        self.limit, self.window_s, self.max_names = limit, window_s, max_names
        self.times: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()

    def wait(self, name: str, now: float) -> float:
        """Seconds until ``name`` is under its limit again; 0 when it is under it now."""
        times = self.times.get(name)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - now)

    def add(self, name: str, now: float) -> None:
        times = self.times.get(name)
        if times is None:
            times = self.times[name] = collections.deque(maxlen=self.limit)
        else:
            self.times.move_to_end(name)  # most recent failure last: the stalest name is always first
        times.append(now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self.times:
            _, oldest = next(iter(self.times.items()))
            if len(self.times) <= self.max_names and oldest[-1] > now - self.window_s:
                return
            self.times.popitem(last=False)


class FailedLogins:
    """Throttles failed authentications only: a request with a valid key is never refused here, so a
    guesser behind the same NAT, proxy or key id as real users cannot lock them out.

    A failure is counted per client address, per key id (the middle of ``mms_<id>_<secret>``; a key
    that does not parse counts against its address only) and across the whole gateway replica. Past
    any of the three limits within ``window_s``, a failure is answered 429 with Retry-After instead
    of 401 and is not counted (so a refused flood neither extends the wait nor grows the state).
    Counted failures in a window are at most ``ceiling``, so keeping ``ceiling`` names per kind never
    forgets one still inside its window: the state stays bounded however many addresses take part.

    This does not make guessing a secret slower: a right guess is let through at any rate. What keeps
    keys safe is their 256 random bits; this keeps floods of bad keys cheap and visible (429), and
    gives an address, a key id and the service each a ceiling on the 401s they can draw."""

    def __init__(
        self,
        *,
        per_address: int = 20,
        per_key_id: int = 20,
        ceiling: int = 1000,
        window_s: float = 60.0,
        clock=time.monotonic,
    ) -> None:
        self.clock = clock
        self.by_address = SlidingWindow(limit=per_address, window_s=window_s, max_names=ceiling)
        self.by_key_id = SlidingWindow(limit=per_key_id, window_s=window_s, max_names=ceiling)
        self.overall = SlidingWindow(limit=ceiling, window_s=window_s, max_names=1)

    def failed(self, address: str, key_id: str | None) -> None:
        """One failed authentication: Throttled (not counted) when the address, the key id or the
        replica as a whole is over its limit; otherwise counted, and the caller answers 401."""
        now = self.clock()
        waits = {
            "from this address": self.by_address.wait(address, now),
            "for this key id": self.by_key_id.wait(key_id, now) if key_id is not None else 0.0,
            "on this gateway": self.overall.wait(EVERYONE, now),
        }
        over = {what: wait for what, wait in waits.items() if wait > 0}
        if over:
            wait = max(over.values())
            raise Throttled(
                f"too many failed authentications {' and '.join(over)}; retry after {wait:.0f}s",
                retry_after=wait,
                reason="auth",
            )
        self.by_address.add(address, now)
        if key_id is not None:
            self.by_key_id.add(key_id, now)
        self.overall.add(EVERYONE, now)


def key_from_headers(headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


# ---- the request's tenant --------------------------------------------------------------------
TENANT_SCOPE_KEY = "mmserve.tenant"  # where admission leaves the authenticated tenant in the ASGI scope


def bind(scope: dict, tenant: Tenant) -> None:
    """Admission's record of who the request is from, once the key was checked."""
    scope[TENANT_SCOPE_KEY] = tenant


def tenant_id(scope: dict) -> str:
    """The id of the tenant admission bound to this request, "anonymous" before it did."""
    tenant = scope.get(TENANT_SCOPE_KEY)
    return tenant.id if isinstance(tenant, Tenant) else "anonymous"


def current_tenant(request: HTTPConnection) -> Tenant:
    """The route dependency (``Depends(current_tenant)``): the tenant admission authenticated for this
    request. There is no default: a request that admission did not bind (an open path, a route mounted
    without the middleware) is refused, never served as the open tenant, which is an operator."""
    tenant = request.scope.get(TENANT_SCOPE_KEY)
    if not isinstance(tenant, Tenant):
        raise Unauthorized("this request has no authenticated tenant")
    return tenant
