"""Persistent vector indexes on Milvus: the Ray-free storage layer of visual search.

One Milvus collection holds one (tenant, index) pair. The URI picks the backend: a local path
ending in ``.db`` opens Milvus Lite (pure Python in milvus-lite 3.x: an in-process gRPC server
over a *directory* named ``*.db``); ``http(s)://host:port`` talks to a Milvus server.

What this module relies on, measured with pymilvus 3.0.2 / milvus-lite 3.2.2:

- **Physical names.** ``mm_<enc(tenant)>__<enc(index)>`` where ``enc`` maps ``_`` to ``_0`` and
  ``-`` to ``_1``. An encoded part never contains ``__`` nor ends in ``_``, so the first ``__``
  is the separator and the mapping is injective (tenant ``a__b`` + index ``c`` cannot collide
  with tenant ``a`` + index ``b__c``). Tenants and names are validated before encoding.
- **Index facts** (tenant, name, encoder, space, dim, created) live in collection
  ``properties``; they survive reopening the file. A schema ``description`` does *not*
  survive in Lite (it reads back empty), so it is not used.
- **Cosine** similarity is computed as the inner product of unit vectors: rows and queries are
  normalised here and the index metric is ``IP``. Lite's ``COSINE`` re-normalises all rows on
  every query (17 vs 24 ms median at 10k x 384 on a loaded 2-core box); scores are the same.
- **Metadata** is stored as dynamic fields named ``m_<key>`` and filtered with
  ``$meta["m_<key>"] == <literal>``: 29 ms per filtered query over 10k rows, against 276 ms
  for the same filter on a JSON column (Lite evaluates JSON paths row by row in Python).
  The prefix keeps user keys clear of ``id`` and ``vector``.
- **Latency.** Lite searches unflushed rows (its memtable) row by row in Python: ~35 us per
  row, 340 ms per query at 10k rows. After ``flush`` they sit in sealed segments with a FLAT
  (numpy) index: ~15 ms per query at 10k x 384 on an idle 2-core box. So every write on a local
  file is followed by a flush (~20 ms for a small batch, 0.8 s for 10k rows; Lite compacts the
  small segments in the background). Sealed search still makes a per-row Python pass (dedup
  and tombstones, ~1-2 us per row per query), so it grows linearly with the index (50k x 384:
  ~100 ms median): use a server for indexes past a few tens of thousands of rows. A Milvus server
  is not flushed per write: it rate-limits flushes and searches growing segments natively.
- **Load state.** A reopened Lite file lists its collections as not loaded ("Collection 'x' is
  in state 'released'" on search); the store loads each collection on first use.
- **One process per file.** Lite takes an advisory ``flock`` on ``<file>/LOCK``; a second
  process fails to open it (surfaced here as ``Unavailable``). Within one process, every
  client on the same path shares one in-process server. A deployment on a local file must run
  exactly one replica; a server URI scales out.
- **Threads.** ``MilvusClient`` (one gRPC channel) may be called from several threads; a lock
  here makes check-then-write sequences (create, add, delete, drop) atomic within the process.
  Two processes adding the same content id to one server index at once both write the same
  row: Milvus keeps one (an insert on an existing primary key replaces it).
"""

from __future__ import annotations

import fcntl
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from models.batching import chunks
from models.errors import Incompatible, InvalidInput, NotFound, Unavailable

T = TypeVar("T")

MetaValue = str | int | float | bool

PREFIX = "mm_"
SEPARATOR = "__"
META_PREFIX = "m_"
PROP = "mmserve."
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,47}")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,127}")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_LABEL_MAX = 128
MAX_DIM = 32768
MAX_TOP_K = 1000
MAX_META_KEYS = 32
MAX_META_CHARS = 1024
# An item may carry a small picture of itself (``mmserve index add`` and the playground store a 128-pixel
# JPEG) under this key: a data URL, longer than other strings may be.
THUMBNAIL_KEY = "thumbnail"
MAX_THUMBNAIL_CHARS = 12_000
_THUMBNAIL_RE = re.compile(r"data:image/(jpeg|png|webp);base64,[A-Za-z0-9+/]+={0,2}")
_CHUNK = 1000
METRIC = "IP"  # on unit vectors: cosine similarity, without Lite re-normalising every row per query
# A server reads at "Bounded" staleness by default: a count, an id look-up or a search right after a
# write (from this replica or another) could miss it. Measured on Milvus 2.3.5: count(*) after an
# insert from another process returned the old count. Reads here see every acknowledged write.
CONSISTENCY = "Strong"
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds: its name, the encoder and space of its vectors, their dim, its size
    and its creation time (unix seconds)."""

    name: str
    encoder: str
    space: str
    dim: int
    count: int
    created: int


@dataclass(frozen=True)
class Item:
    """One vector to index, under a caller-chosen id (typically the media's content hash,
    ``api.schemas.content_id``)."""

    id: str
    vector: np.ndarray
    metadata: dict[str, MetaValue]


@dataclass(frozen=True)
class Hit:
    """A search result: cosine similarity in [-1, 1], higher is closer."""

    id: str
    score: float
    metadata: dict


# ---------------------------------------------------------------------------------------------
# names, ids, metadata and filter literals
# ---------------------------------------------------------------------------------------------


def check_index_name(name: object) -> str:
    """``name`` if it is 1..48 lowercase letters, digits, '_' or '-' starting with a letter."""
    return _check_name(name, param="name", what="index name")


def check_tenant(tenant: object) -> str:
    """``tenant`` under the same rule as index names (tenant ids are a subset of it)."""
    return _check_name(tenant, param="tenant", what="tenant id")


def _check_name(value: object, *, param: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidInput(
            f"{what} must be 1-48 lowercase letters, digits, '_' or '-', "
            f"starting with a letter; got {value!r:.60}",
            param=param,
        )
    return value


def _encode(part: str) -> str:
    return part.replace("_", "_0").replace("-", "_1")


def collection_name(tenant: str, name: str) -> str:
    """The Milvus collection of (tenant, index): ``mm_<enc(tenant)>__<enc(name)>`` (injective)."""
    return f"{PREFIX}{_encode(check_tenant(tenant))}{SEPARATOR}{_encode(check_index_name(name))}"


def _tenant_prefix(tenant: str) -> str:
    return f"{PREFIX}{_encode(check_tenant(tenant))}{SEPARATOR}"


def check_id(item_id: object) -> str:
    """An item id: 1..128 chars of letters, digits and ``_ . : @ / + = -``, not starting with
    punctuation (so it never needs quoting inside a Milvus expression)."""
    if not isinstance(item_id, str) or not _ID_RE.fullmatch(item_id):
        raise InvalidInput(
            f"item ids are 1-128 letters, digits or _.:@/+=- ; got {item_id!r:.80}", param="ids"
        )
    return item_id


def _check_label(value: object, *, param: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _LABEL_MAX:
        raise InvalidInput(f"{param} must be a non-empty string of at most {_LABEL_MAX} chars", param=param)
    return value


def _check_key(key: object, *, param: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidInput(
            f"metadata keys are identifiers (letters, digits, '_', not starting "
            f"with a digit, at most 64 chars); got {key!r:.80}",
            param=param,
        )
    return key


def _check_value(value: object, *, param: str) -> MetaValue:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= MAX_META_CHARS:
        if any(ord(ch) < 0x20 and ch not in "\n\r\t" for ch in value):
            raise InvalidInput("metadata strings may not hold control characters", param=param)
        return value
    raise InvalidInput(
        f"metadata values are strings (<= {MAX_META_CHARS} chars), int64, finite "
        f"floats or booleans; got {type(value).__name__}",
        param=param,
    )


def check_metadata(metadata: object, *, param: str = "metadata") -> dict[str, MetaValue]:
    """A validated copy of ``metadata``: at most 32 identifier keys with scalar values (``thumbnail``: a
    small image data URL)."""
    if not isinstance(metadata, dict) or len(metadata) > MAX_META_KEYS:
        raise InvalidInput(f"{param} must be a dict of at most {MAX_META_KEYS} keys", param=param)
    return {
        _check_key(k, param=param): (
            _check_thumbnail(v, param=param) if k == THUMBNAIL_KEY else _check_value(v, param=param)
        )
        for k, v in metadata.items()
    }


def _check_thumbnail(value: object, *, param: str) -> str:
    if isinstance(value, str) and len(value) <= MAX_THUMBNAIL_CHARS and _THUMBNAIL_RE.fullmatch(value):
        return value
    raise InvalidInput(
        f"metadata '{THUMBNAIL_KEY}' is a data:image/jpeg, png or webp;base64 URL of at most "
        f"{MAX_THUMBNAIL_CHARS} chars",
        param=param,
    )


def literal(value: MetaValue) -> str:
    """``value`` as a Milvus expression literal; strings are double-quoted with C escapes, so
    no value can end the literal early."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def where_expression(where: dict | None) -> str:
    """The Milvus filter for an equality ``where`` on metadata keys ('' for none)."""
    if not where:
        return ""
    clean = check_metadata(where, param="where")
    return " and ".join(f'$meta["{META_PREFIX}{k}"] == {literal(v)}' for k, v in clean.items())


def _ids_expression(ids: list[str]) -> str:
    return "id in [" + ", ".join(literal(i) for i in ids) + "]"


# ---------------------------------------------------------------------------------------------
# vectors
# ---------------------------------------------------------------------------------------------


def as_vector(vector: object, *, param: str = "vector") -> np.ndarray:
    """A finite, non-zero float32 vector from a 1-D array (or a single row)."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInput(f"{param} must be one 1-D vector, got shape {arr.shape}", param=param)
    if not np.all(np.isfinite(arr)) or not np.any(arr):
        raise InvalidInput(f"{param} must be finite and non-zero", param=param)
    return arr


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _describe_space(info: IndexInfo) -> str:
    return f"encoder '{info.encoder}', space '{info.space}', {info.dim}-d"


def _check_dim(info: IndexInfo, vector: np.ndarray, *, encoder: str, param: str) -> None:
    if vector.shape[0] != info.dim:
        raise Incompatible(
            f"index '{info.name}' holds {_describe_space(info)} vectors; got a "
            f"{vector.shape[0]}-d vector from encoder '{encoder}'",
            param=param,
        )


# ---------------------------------------------------------------------------------------------
# properties <-> IndexInfo
# ---------------------------------------------------------------------------------------------


def _properties(
    *, tenant: str, name: str, encoder: str, space: str, dim: int, created: int
) -> dict[str, str]:
    facts = {
        "tenant": tenant,
        "name": name,
        "encoder": encoder,
        "space": space,
        "dim": str(dim),
        "created": str(created),
        "metric": METRIC,
    }
    return {PROP + key: value for key, value in facts.items()}


def _info_from(description: dict, *, count: int) -> IndexInfo:
    props = {
        k[len(PROP) :]: v for k, v in (description.get("properties") or {}).items() if k.startswith(PROP)
    }
    return IndexInfo(
        name=props["name"],
        encoder=props["encoder"],
        space=props["space"],
        dim=int(props["dim"]),
        count=count,
        created=int(props["created"]),
    )


def _owned_by(description: dict, tenant: str, name: str) -> bool:
    props = description.get("properties") or {}
    return props.get(PROP + "tenant") == tenant and props.get(PROP + "name") == name


def _hit(raw: dict) -> Hit:
    entity = raw.get("entity") or {}
    meta = {k[len(META_PREFIX) :]: v for k, v in entity.items() if k.startswith(META_PREFIX)}
    return Hit(id=str(raw["id"]), score=float(raw["distance"]), metadata=meta)


# ---------------------------------------------------------------------------------------------
# connection
# ---------------------------------------------------------------------------------------------


def is_local_uri(uri: str) -> bool:
    """True for a Milvus Lite file path, False for ``http(s)://``, ``tcp://`` or ``unix:``."""
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def _local_path(uri: str) -> str:
    path = Path(uri).expanduser()
    if path.suffix != ".db":
        raise InvalidInput(f"a local Milvus Lite path must end in '.db', got '{uri}'", param="uri")
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path.resolve())


def _held_elsewhere(path: str) -> bool:
    """Whether another process holds Milvus Lite's lock on ``path`` (checked after a failed open,
    so this process is known not to hold it)."""
    lock = Path(path) / "LOCK"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _connect(uri: str, token: str):
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        return MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
    except MilvusException as exc:
        if is_local_uri(uri) and _held_elsewhere(uri):
            raise Unavailable(
                f"the Milvus Lite file '{uri}' is open in another process; Milvus "
                "Lite allows one process per file (use a Milvus server URI to share "
                "an index)",
                param="uri",
            ) from exc
        raise Unavailable(f"cannot open the vector store at '{uri}': {exc.message}", param="uri") from exc


def _schema(dim: int):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


# ---------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------


class VectorStore:
    """Per-tenant vector indexes in one Milvus database (a Lite file or a server)."""

    def __init__(self, *, uri: str, token: str = "") -> None:
        """Open (creating if needed) the store at ``uri``: a local ``*.db`` path or
        ``http(s)://host:port``. Raises ``Unavailable`` if it cannot be opened, e.g. a Lite
        file held by another process."""
        self.is_local = is_local_uri(uri)
        self.uri = _local_path(uri) if self.is_local else uri
        self._client = _connect(self.uri, token)
        self._lock = threading.RLock()
        self._loaded: set[str] = set()

    def close(self, *, release_file: bool = False) -> None:
        """Release this store's connection. A Lite file stays open for this process's other
        stores on it until process exit, unless ``release_file``: then its in-process server is
        stopped (flushing it and dropping its lock) so another process may open it. Only
        release a file no other store in this process still uses."""
        self._client.close()
        if self.is_local and release_file:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        from pymilvus.exceptions import MilvusException

        try:
            return fn(*args, **kwargs)
        except MilvusException as exc:
            raise Unavailable(f"vector store error: {exc.message}", param="index") from exc

    def _description(self, tenant: str, name: str) -> tuple[str, dict]:
        """(collection, its description) of an existing index, else ``NotFound`` with a message
        that says nothing about other tenants."""
        coll = collection_name(tenant, name)
        if self._call(self._client.has_collection, coll):
            description = self._call(self._client.describe_collection, coll)
            if _owned_by(description, tenant, name):
                return coll, description
        raise NotFound(f"index '{name}' not found", param="index")

    def _ensure_loaded(self, coll: str) -> None:
        """Load a collection once per process (a reopened Lite file starts released) and, on a
        local file, seal rows a crash left in the write-ahead log so searches stay fast."""
        if coll in self._loaded:
            return
        with self._lock:
            from pymilvus.client.types import LoadState

            state = self._call(self._client.get_load_state, coll).get("state")
            if state != LoadState.Loaded:
                self._call(self._client.load_collection, coll)
            if self.is_local:
                self._call(self._client.flush, coll)
            self._loaded.add(coll)

    def _open(self, tenant: str, name: str) -> tuple[str, IndexInfo]:
        coll, description = self._description(tenant, name)
        self._ensure_loaded(coll)
        return coll, _info_from(description, count=self._count(coll))

    def _count(self, coll: str) -> int:
        rows = self._call(
            self._client.query, coll, filter="", output_fields=["count(*)"], consistency_level=CONSISTENCY
        )
        return int(rows[0]["count(*)"])

    def _seal(self, coll: str) -> None:
        """Flush a local file after a write: Lite searches unflushed rows row by row."""
        if self.is_local:
            self._call(self._client.flush, coll)

    # -- indexes ----------------------------------------------------------------------------

    def create(self, tenant: str, name: str, *, encoder: str, space: str, dim: int) -> IndexInfo:
        """Create an empty cosine index; idempotent when it exists with the same encoder,
        space and dim, ``Incompatible`` ('already exists') when it exists with others."""
        coll = collection_name(tenant, name)
        encoder, space = _check_label(encoder, param="encoder"), _check_label(space, param="space")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
            raise InvalidInput(f"dim must be an integer in 1..{MAX_DIM}", param="dim")
        with self._lock:
            if self._call(self._client.has_collection, coll):
                return self._existing(tenant, name, encoder=encoder, space=space, dim=dim)
            self._create_collection(
                coll,
                _properties(
                    tenant=tenant, name=name, encoder=encoder, space=space, dim=dim, created=int(time.time())
                ),
            )
            return self.describe(tenant, name)

    def _existing(self, tenant: str, name: str, *, encoder: str, space: str, dim: int) -> IndexInfo:
        info = self.describe(tenant, name)
        if (info.encoder, info.space, info.dim) != (encoder, space, dim):
            raise Incompatible(
                f"index '{name}' already exists with {_describe_space(info)}; "
                f"asked for encoder '{encoder}', space '{space}', {dim}-d",
                param="name",
            )
        return info

    def _create_collection(self, coll: str, properties: dict[str, str]) -> None:
        dim = int(properties[PROP + "dim"])
        index = self._client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type=METRIC)
        self._call(
            self._client.create_collection,
            coll,
            schema=_schema(dim),
            index_params=index,
            properties=properties,
            consistency_level=CONSISTENCY,
        )
        self._loaded.add(coll)

    def list(self, tenant: str) -> list[IndexInfo]:
        """This tenant's indexes, by name."""
        prefix = _tenant_prefix(tenant)
        names = sorted(c for c in self._call(self._client.list_collections) if c.startswith(prefix))
        infos = []
        for coll in names:
            description = self._call(self._client.describe_collection, coll)
            props = description.get("properties") or {}
            if props.get(PROP + "tenant") == tenant:
                self._ensure_loaded(coll)
                infos.append(_info_from(description, count=self._count(coll)))
        return infos

    def describe(self, tenant: str, name: str) -> IndexInfo:
        """The index's facts and current row count; ``NotFound`` if this tenant has none."""
        return self._open(tenant, name)[1]

    def drop(self, tenant: str, name: str) -> None:
        """Delete the index and its rows."""
        with self._lock:
            coll, _ = self._description(tenant, name)
            self._call(self._client.drop_collection, coll)
            self._loaded.discard(coll)

    # -- rows -------------------------------------------------------------------------------

    def add(self, tenant: str, name: str, items: list[Item], *, encoder: str) -> tuple[int, int]:
        """Index ``items``; returns (added, already_present). Ids already indexed (or repeated
        in ``items``) are skipped. ``Incompatible`` if the encoder or dim is not the index's."""
        with self._lock:
            coll, info = self._open(tenant, name)
            if encoder != info.encoder:
                raise Incompatible(
                    f"index '{name}' holds {_describe_space(info)} vectors; these "
                    f"come from encoder '{encoder}'",
                    param="encoder",
                )
            rows = self._rows(info, items, encoder=encoder)
            present = self._has(coll, list(rows))
            new = [row for item_id, row in rows.items() if item_id not in present]
            for chunk in chunks(new, _CHUNK):
                self._call(self._client.insert, coll, chunk)
            if new:
                self._seal(coll)
            return len(new), len(items) - len(new)

    def _rows(self, info: IndexInfo, items: list[Item], *, encoder: str) -> dict[str, dict]:
        """Validated Milvus rows by id (first occurrence wins)."""
        rows: dict[str, dict] = {}
        for item in items:
            item_id = check_id(item.id)
            vector = as_vector(item.vector, param="items")
            _check_dim(info, vector, encoder=encoder, param="items")
            meta = check_metadata(item.metadata, param="metadata")
            row = {"id": item_id, "vector": _unit(vector).tolist()}
            row.update({META_PREFIX + k: v for k, v in meta.items()})
            rows.setdefault(item_id, row)
        return rows

    def has(self, tenant: str, name: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` are indexed (lets bulk indexing resume where it stopped)."""
        coll, _ = self._description(tenant, name)
        self._ensure_loaded(coll)
        return self._has(coll, [check_id(i) for i in ids])

    def _has(self, coll: str, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(ids, _CHUNK):
            rows = self._call(
                self._client.query,
                coll,
                filter=_ids_expression(chunk),
                output_fields=["id"],
                consistency_level=CONSISTENCY,
            )
            found.update(str(row["id"]) for row in rows)
        return found

    def search(
        self,
        tenant: str,
        name: str,
        vector: np.ndarray,
        *,
        encoder: str | None = None,
        space: str | None = None,
        top_k: int = 5,
        where: dict | None = None,
    ) -> list[Hit]:
        """The ``top_k`` nearest rows by cosine similarity, best first, optionally restricted to
        rows whose metadata equals every ``where`` item. Pass the query's ``space`` (any encoder
        of that space may query, e.g. text into an image index) or its ``encoder`` (must be the
        index's); ``Incompatible`` on a mismatch or a different dim."""
        query = as_vector(vector)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be an integer in 1..{MAX_TOP_K}", param="top_k")
        expr = where_expression(where)
        coll, description = self._description(tenant, name)
        info = _info_from(description, count=-1)
        self._check_query(info, query, encoder=encoder, space=space)
        self._ensure_loaded(coll)
        metric = description["properties"].get(PROP + "metric", "COSINE")
        result = self._call(
            self._client.search,
            coll,
            data=[_unit(query).tolist()],
            limit=top_k,
            filter=expr,
            output_fields=["$meta"],
            search_params={"metric_type": metric},
        )
        return [_hit(raw) for raw in result[0]]

    @staticmethod
    def _check_query(info: IndexInfo, query: np.ndarray, *, encoder: str | None, space: str | None) -> None:
        if encoder is None and space is None:
            raise InvalidInput("search needs the query's encoder or space", param="space")
        label = encoder if encoder is not None else f"(space '{space}')"
        if encoder is not None and encoder != info.encoder:
            raise Incompatible(
                f"index '{info.name}' holds {_describe_space(info)} vectors; the "
                f"query comes from encoder '{encoder}', {query.shape[0]}-d",
                param="encoder",
            )
        if space is not None and space != info.space:
            raise Incompatible(
                f"index '{info.name}' holds {_describe_space(info)} vectors; the "
                f"query is in space '{space}', {query.shape[0]}-d",
                param="space",
            )
        _check_dim(info, query, encoder=label, param="vector")

    def delete(self, tenant: str, name: str, ids: list[str]) -> int:
        """Remove ``ids`` from the index; returns how many were there."""
        with self._lock:
            coll, _ = self._description(tenant, name)
            self._ensure_loaded(coll)
            present = sorted(self._has(coll, [check_id(i) for i in ids]))
            for chunk in chunks(present, _CHUNK):
                self._call(self._client.delete, coll, filter=_ids_expression(chunk))
            if present:
                self._seal(coll)
            return len(present)

    def count(self, tenant: str, name: str) -> int:
        """Rows in the index."""
        coll, _ = self._description(tenant, name)
        self._ensure_loaded(coll)
        return self._count(coll)
