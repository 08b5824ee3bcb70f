"""The process that owns one batch's run: a detached Ray actor, so the batch goes on when the gateway
that started it dies; restarted by Ray when it dies itself (``max_restarts``), it resumes from the
store. State lives only in the store (``store.Store``): the runner writes the batch's ``batch.json``,
the gateway reads it.

Exactly once: every line's result is committed in a block file (written whole or not at all). A run,
first or resumed, reads the committed lines and sends only the others through the pipeline, so at the
end each request is in the output or the error file once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator

import ray

from api.batch import BatchErrorItem, BatchErrors, BatchObject, RequestCounts
from deployments.batch import pipeline
from deployments.batch.store import Store
from deployments.batch.work import Plan, _custom_id

log = logging.getLogger("ray.data")
NAMESPACE = "mmserve-batches"
MAX_RESTARTS = 3
UNLIMITED = 1 << 62


def actor_name(batch_id: str) -> str:
    return f"batch-runner-{batch_id}"


def derived_id(batch_id: str, what: str, length: int = 24) -> str:
    return hashlib.sha256(f"{batch_id}/{what}".encode()).hexdigest()[:length]


# ---- one run -------------------------------------------------------------------------------------
def read_lines(store: Store, plan: Plan, input_file_id: str) -> list[tuple[int, str]]:
    """The input's non-empty lines with their (1-based) line numbers."""
    raw = store.file_path(plan.tenant, input_file_id).read_bytes()
    texts = (line.decode("utf-8", "replace") for line in raw.split(b"\n"))
    return [(n, text) for n, text in enumerate(texts, 1) if text.strip()]


def duplicates(lines: list[tuple[int, str]]) -> list[BatchErrorItem]:
    seen: dict[str, int] = {}
    found = []
    for n, text in lines:
        cid = _custom_id(text)
        if cid is None:
            continue
        if cid in seen:
            message = f"custom_id '{cid}' is also on line {seen[cid]}: each request needs its own"
            found.append(
                BatchErrorItem(code="duplicate_custom_id", message=message, param="custom_id", line=n)
            )
        seen.setdefault(cid, n)
    return found


def counts(records: list[dict], total: int) -> RequestCounts:
    good = sum(1 for r in records if 200 <= r["status_code"] < 300)
    return RequestCounts(total=total, completed=good, failed=len(records) - good)


def run(plan: Plan) -> BatchObject:
    """Run (or resume) the batch to its end; returns its final state."""
    store = Store(plan.store)
    batch = store.batch(plan.tenant, plan.batch_id)
    if batch.status in ("completed", "failed", "cancelled", "expired"):
        return batch
    lines = read_lines(store, plan, batch.input_file_id)
    problems = duplicates(lines) or ([] if lines else [_no_lines()])
    if problems:
        return _save(
            store, plan, batch, status="failed", failed_at=_now(), errors=BatchErrors(data=problems[:100])
        )
    done = list(store.committed(plan.tenant, plan.batch_id))
    batch = _save(
        store,
        plan,
        batch,
        status="in_progress",
        in_progress_at=batch.in_progress_at or _now(),
        request_counts=counts(done, len(lines)),
    )
    committed = {r["line"] for r in done}
    pending = [(n, t) for n, t in lines if n not in committed]
    for block in _until_cancelled(store, plan, pipeline.results(plan, pending)):
        store.commit(plan.tenant, plan.batch_id, block)
        done += block
        batch = _save(store, plan, batch, request_counts=counts(done, len(lines)))
    cancelled = store.cancel_asked(plan.tenant, plan.batch_id)
    return finalize(store, plan, batch, cancelled=cancelled)


def _until_cancelled(store: Store, plan: Plan, blocks: Iterator[list[dict]]) -> Iterator[list[dict]]:
    for block in blocks:
        if store.cancel_asked(plan.tenant, plan.batch_id):
            return
        yield block


def finalize(store: Store, plan: Plan, batch: BatchObject, *, cancelled: bool) -> BatchObject:
    """Write the output and error files from the committed blocks (again, if a crash cut the last try)."""
    batch = _save(store, plan, batch, status="finalizing", finalizing_at=batch.finalizing_at or _now())
    records = sorted(store.committed(plan.tenant, plan.batch_id), key=lambda r: r["line"])
    good = [r for r in records if 200 <= r["status_code"] < 300]
    bad = [r for r in records if not 200 <= r["status_code"] < 300]
    ids = {}
    for what, rows in (("output", good), ("errors", bad)):
        if rows:
            file_id = f"file-{derived_id(plan.batch_id, what)}"
            store.add_file(
                plan.tenant,
                f"{plan.batch_id}_{what}.jsonl",
                _jsonl(plan, rows),
                max_bytes=UNLIMITED,
                max_lines=UNLIMITED,
                purpose="batch_output",
                file_id=file_id,
            )
            ids[what] = file_id
    end = {"status": "cancelled", "cancelled_at": _now()}
    if not cancelled:
        end = {"status": "completed", "completed_at": _now()}
    return _save(
        store,
        plan,
        batch,
        output_file_id=ids.get("output"),
        error_file_id=ids.get("errors"),
        request_counts=counts(records, batch.request_counts.total),
        **end,
    )


def _jsonl(plan: Plan, rows: list[dict]) -> Iterator[bytes]:
    for r in rows:
        yield json.dumps(output_line(plan, r), separators=(",", ":")).encode() + b"\n"


def output_line(plan: Plan, record: dict) -> dict:
    """One line of the output or error file, in OpenAI's shape."""
    body = json.loads(record["body"])
    rid = derived_id(plan.batch_id, f"line/{record['line']}")
    error = body.get("error") if record["status_code"] >= 300 else None
    return {
        "id": f"batch_req_{rid}",
        "custom_id": record["custom_id"],
        "response": {"status_code": record["status_code"], "request_id": rid, "body": body},
        "error": None if error is None else {"code": error.get("type"), "message": error.get("message")},
    }


def _no_lines() -> BatchErrorItem:
    return BatchErrorItem(code="empty_file", message="the input file has no requests", param="input_file_id")


def _now() -> int:
    return int(time.time())


def _save(store: Store, plan: Plan, batch: BatchObject, **changes) -> BatchObject:
    batch = batch.model_copy(update=changes)
    store.save_batch(plan.tenant, batch)
    return batch


def fail(plan: Plan, exc: BaseException) -> None:
    store = Store(plan.store)
    batch = store.batch(plan.tenant, plan.batch_id)
    item = BatchErrorItem(code="batch_failed", message=f"{type(exc).__name__}: {exc}"[:2000])
    _save(store, plan, batch, status="failed", failed_at=_now(), errors=BatchErrors(data=[item]))


# ---- the actor -------------------------------------------------------------------------------------
@ray.remote(num_cpus=0)
class BatchRunner:
    """Runs its batch from ``__init__`` on (a restart after a crash resumes it), then removes itself."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.thread = threading.Thread(target=self._run, name=f"batch-{plan.batch_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            run(self.plan)
        except Exception as exc:
            log.exception("batch %s failed", self.plan.batch_id)
            fail(self.plan, exc)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def pid(self) -> int:
        import os

        return os.getpid()


def launch(plan: Plan) -> None:
    """Start the batch's runner, unless one is already at work (``get_if_exists``)."""
    BatchRunner.options(
        name=actor_name(plan.batch_id),
        namespace=NAMESPACE,
        lifetime="detached",
        max_restarts=MAX_RESTARTS,
        get_if_exists=True,
    ).remote(plan)


def is_running(batch_id: str) -> bool:
    try:
        ray.get_actor(actor_name(batch_id), namespace=NAMESPACE)
    except ValueError:
        return False
    return True
