"""The tenants file: who may call, how often, and what they may touch. Ray-free.

- A tenants file (YAML) lists each tenant's API keys as salted SHA-256 hashes, its rate limit
  (requests per second with a burst), its maximum of concurrent requests, the modalities it may
  call and the fusion heads / indexes it may use. ``mmserve tenant-key`` adds a key and prints it once.
- Keys look like ``mms_<key id>_<secret>``: the key id finds the one stored hash to check, and the
  secret is compared in constant time. Secrets are 32 random bytes, so a salted SHA-256 is enough;
  a slow KDF would cost every request milliseconds for nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.batch import BatchLimits
from models.errors import Forbidden, InvalidInput, NotFound

ALL = "*"
KEY_PREFIX = "mms"
OPEN_TENANT = "default"
TENANT_ID = r"^[a-z][a-z0-9_]{0,31}$"


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests_per_second: float = Field(10.0, gt=0)
    burst: int = Field(20, ge=1)


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=TENANT_ID)
    keys: list[str] = Field(default_factory=list, description="'sha256$<key id>$<salt>$<hash>' entries")
    disabled: bool = False
    rate_limit: RateLimit | None = RateLimit()
    max_concurrent: int | None = Field(8, ge=1)
    modalities: list[str] = Field(default_factory=lambda: ["image", "text", "audio"])
    heads: list[str] = Field(
        default_factory=lambda: [ALL], description="fusion heads it may use ('*': all of its own)"
    )
    indexes: list[str] = Field(
        default_factory=lambda: [ALL], description="indexes it may use ('*': all of its own)"
    )
    allowed_root: str | None = Field(None, description="server-side folder its index items may name by path")
    operator: bool = Field(False, description="may read service-wide statistics (/v1/stats)")
    batch: BatchLimits | None = Field(
        None, description="its Batch API limits (default: the service's batch.limits)"
    )

    @field_validator("allowed_root")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().resolve())

    def require_operator(self) -> None:
        if not self.operator:
            raise Forbidden(f"tenant '{self.id}' may not read service-wide statistics (operator: false)")

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


OPEN = Tenant(id=OPEN_TENANT, rate_limit=None, max_concurrent=None, operator=True)


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenants: list[Tenant] = Field(default_factory=list)


# ---- keys ----------------------------------------------------------------------------------
def digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh API key and the entry that stores its salted hash."""
    key_id, secret, salt = secrets.token_hex(4), secrets.token_urlsafe(32), secrets.token_hex(16)
    return f"{KEY_PREFIX}_{key_id}_{secret}", f"sha256${key_id}${salt}${digest(salt, secret)}"


def load_tenants(path: str | Path) -> list[Tenant]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return TenantsFile.model_validate(data).tenants


def add_key(path: str | Path, tenant_id: str) -> str:
    """Append a new key's hash to ``tenant_id`` (created if new) and return the key itself.
    Raises InvalidInput for a tenant id the file could not hold."""
    if not re.fullmatch(TENANT_ID, tenant_id):
        raise InvalidInput(
            f"tenant ids match {TENANT_ID} (lowercase letter first, at most 32 characters), "
            f"not {tenant_id!r}",
            param="tenant",
        )
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
