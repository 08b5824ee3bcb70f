"""The Batch API's state, as files under one folder (``batch.store``). Ray-free.

```
<root>/<tenant>/files/<file-id>.jsonl        the bytes of an input or result file
<root>/<tenant>/files/<file-id>.json         its FileObject
<root>/<tenant>/batches/<batch-id>/batch.json    the BatchObject (written by the batch's runner)
<root>/<tenant>/batches/<batch-id>/cancel        present once a cancel was asked for
<root>/<tenant>/batches/<batch-id>/blocks/<n>.jsonl   committed results, one line per request
```

Everything is written to a temporary name and renamed, so a reader (or a runner restarted after a
crash) sees a block whole or not at all: a request is committed exactly when its block file exists.
Ids are checked against their pattern before they name a path, and a tenant only ever reads under its
own folder, so another tenant's id answers exactly as a missing one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from api.batch import BatchObject, FileObject
from models.errors import InvalidInput, NotFound, PayloadTooLarge

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
BATCH_ID = re.compile(r"^batch_[0-9a-f]{24}$")
CHUNK = 1024 * 1024


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def private(root: Path) -> None:
    """The store's folder, created if missing, readable by its owner only (0700): it holds every
    tenant's uploads and results, and nothing under it is reachable through a folder others may open."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        private(self.root)

    # ---- files ------------------------------------------------------------------------------
    def _files(self, tenant: str) -> Path:
        return self.root / tenant / "files"

    def file_path(self, tenant: str, file_id: str) -> Path:
        if not FILE_ID.match(file_id) or not (self._files(tenant) / f"{file_id}.json").exists():
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return self._files(tenant) / f"{file_id}.jsonl"

    def file(self, tenant: str, file_id: str) -> FileObject:
        meta = self.file_path(tenant, file_id).with_suffix(".json")
        return FileObject.model_validate_json(meta.read_bytes())

    def files(self, tenant: str) -> list[FileObject]:
        found = sorted(self._files(tenant).glob("file-*.json")) if self._files(tenant).exists() else []
        return sorted(
            (FileObject.model_validate_json(p.read_bytes()) for p in found), key=lambda f: -f.created_at
        )

    def add_file(
        self,
        tenant: str,
        filename: str,
        chunks: Iterable[bytes],
        *,
        max_bytes: int,
        max_lines: int,
        purpose: str = "batch",
        file_id: str | None = None,
    ) -> FileObject:
        """Copy ``chunks`` into a new file, refusing it (and keeping nothing) past ``max_bytes`` or
        ``max_lines`` as soon as the copy crosses the limit."""
        file_id = file_id or new_id("file-")
        path = self._files(tenant) / f"{file_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        size = lines = 0
        last = b"\n"
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"the file is larger than this tenant's limit of {max_bytes} bytes", param="file"
                        )
                    lines += chunk.count(b"\n")
                    last = chunk[-1:] or last
                    if lines > max_lines:
                        raise InvalidInput(
                            f"the file has more than this tenant's limit of {max_lines} lines", param="file"
                        )
                    out.write(chunk)
            lines += last != b"\n"
            if lines > max_lines:
                raise InvalidInput(
                    f"the file has more than this tenant's limit of {max_lines} lines", param="file"
                )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)
        meta = FileObject(
            id=file_id, bytes=size, created_at=int(time.time()), filename=filename, purpose=purpose
        )
        write_atomic(path.with_suffix(".json"), meta.model_dump_json().encode())
        return meta

    def content(self, tenant: str, file_id: str) -> Iterator[bytes]:
        path = self.file_path(tenant, file_id)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def delete_file(self, tenant: str, file_id: str) -> None:
        path = self.file_path(tenant, file_id)
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    # ---- batches ----------------------------------------------------------------------------
    def _batch_dir(self, tenant: str, batch_id: str) -> Path:
        return self.root / tenant / "batches" / batch_id

    def batch_dir(self, tenant: str, batch_id: str) -> Path:
        folder = self._batch_dir(tenant, batch_id)
        if not BATCH_ID.match(batch_id) or not (folder / "batch.json").exists():
            raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        return folder

    def batch(self, tenant: str, batch_id: str) -> BatchObject:
        return BatchObject.model_validate_json((self.batch_dir(tenant, batch_id) / "batch.json").read_bytes())

    def save_batch(self, tenant: str, batch: BatchObject) -> None:
        write_atomic(self._batch_dir(tenant, batch.id) / "batch.json", batch.model_dump_json().encode())

    def batches(self, tenant: str) -> list[BatchObject]:
        folder = self.root / tenant / "batches"
        found = [p / "batch.json" for p in folder.iterdir()] if folder.exists() else []
        objs = [BatchObject.model_validate_json(p.read_bytes()) for p in found if p.exists()]
        return sorted(objs, key=lambda b: (-b.created_at, b.id))

    def ask_cancel(self, tenant: str, batch_id: str) -> None:
        write_atomic(self.batch_dir(tenant, batch_id) / "cancel", b"")

    def cancel_asked(self, tenant: str, batch_id: str) -> bool:
        return (self._batch_dir(tenant, batch_id) / "cancel").exists()

    def remove_batch(self, tenant: str, batch_id: str) -> None:
        shutil.rmtree(self._batch_dir(tenant, batch_id), ignore_errors=True)

    # ---- committed blocks -------------------------------------------------------------------
    def _blocks(self, tenant: str, batch_id: str) -> Path:
        return self._batch_dir(tenant, batch_id) / "blocks"

    def committed(self, tenant: str, batch_id: str) -> Iterator[dict]:
        """Every committed result, block by block."""
        folder = self._blocks(tenant, batch_id)
        for block in sorted(folder.glob("*.jsonl")) if folder.exists() else []:
            for line in block.read_bytes().splitlines():
                yield json.loads(line)

    def commit(self, tenant: str, batch_id: str, results: list[dict]) -> None:
        """One block of results, all or nothing; its name sorts after every earlier block."""
        name = f"{time.time_ns():020d}-{secrets.token_hex(3)}.jsonl"
        body = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in results)
        write_atomic(self._blocks(tenant, batch_id) / name, body)
