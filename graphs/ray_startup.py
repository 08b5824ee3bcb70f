"""What to do when the embedded Ray's node does not come up.

Ray 2.60 gives a new node's raylet a fixed 30 s to register with the GCS, then raises "The current
node timed out during startup" and leaves behind whatever it had started (the GCS, a raylet that may
still be starting, agents). On a busy two-core machine that can happen once and not again. So
:func:`graphs.local_ray.start` reads what the node logged (:func:`failure_report`), stops the
processes the failed start left (:func:`stop`; only the node this process started, found by
:func:`own_node`) and tries once more (:func:`start_retrying_once`). The multi-node test cluster
(tests/cluster) starts each of its nodes the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

TIMED_OUT = "timed out during startup"
# The logs that say why a node did not come up: the raylet's and the GCS's, and the agents the
# raylet waits for.
LOGS = (
    "raylet.err",
    "raylet.out",
    "gcs_server.err",
    "gcs_server.out",
    "dashboard_agent.err",
    "dashboard_agent.log",
    "runtime_env_agent.err",
    "runtime_env_agent.log",
)
SESSION_ARG = re.compile(r"(/\S*/session_\d{4}-\d\d-\d\d_[^/\s]+)")
ERROR_LINE = re.compile(r"check failed|error|fatal|in use|traceback", re.IGNORECASE)


def is_start_timeout(exc: BaseException) -> bool:
    return TIMED_OUT in str(exc)


def child_pids() -> set[int]:
    import psutil

    return {c.pid for c in psutil.Process().children()}


def own_node(before: set[int]) -> tuple[Path | None, list]:
    """The session folder of the node this process started since ``before`` (its children then),
    and that node's processes: the new direct children whose command line names a Ray session folder
    (Ray gives each process it starts ``--session-dir=``, ``--session_dir=`` or
    ``--log-dir=<session>/logs``). A Ray started by a child of ours (``graphs.launch`` in the tests),
    or one this process ran before, is not among them."""
    import psutil

    found: dict[Path, list] = {}
    for child in (c for c in psutil.Process().children() if c.pid not in before):
        with contextlib.suppress(psutil.Error):
            for part in child.cmdline():
                match = SESSION_ARG.search(part)
                if match:
                    found.setdefault(Path(match.group(1)), []).append(child)
                    break
    if len(found) != 1:  # none, or more than one node of ours: name no folder rather than a wrong one
        return None, [p for procs in found.values() for p in procs]
    ((session, procs),) = found.items()
    return session, procs


def _excerpt(path: Path, lines: int) -> str:
    """The first few lines that name an error (a raylet's "Check failed" comes before its stack
    trace), then the last ``lines`` lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"    ({exc})"
    errors = [line for line in text if ERROR_LINE.search(line)][:5]
    return "\n".join(f"    {line}" for line in [*errors, *(["    ..."] if errors else []), *text[-lines:]])


def failure_report(session: Path | None, *, lines: int = 12) -> str:
    """The machine's load, memory and disk, the Ray processes alive, and the end of each node log."""
    import psutil

    parts = [
        f"load average {os.getloadavg()}, memory available {psutil.virtual_memory().available >> 20} MiB, "
        f"/tmp free {shutil.disk_usage('/tmp').free >> 20} MiB"
    ]
    alive = [
        f"{p.info['pid']} {p.info['name']}"
        for p in psutil.process_iter(["pid", "name"])
        if any(k in (p.info["name"] or "") for k in ("raylet", "gcs_server", "ray::", "dashboard"))
    ]
    parts.append(f"Ray processes alive: {alive or 'none'}")
    logs = session / "logs" if session else None
    if logs is None or not logs.is_dir():
        return "\n".join(parts + ["no session logs found"])
    parts.append(f"session {session}")
    for name in LOGS:
        if (logs / name).is_file() and (logs / name).stat().st_size:
            parts.append(f"  {name}:\n{_excerpt(logs / name, lines)}")
    return "\n".join(parts)


def stop(processes: list, timeout_s: float = 10) -> list[int]:
    """Kill a failed node's processes (its GCS, raylet and agents; the raylet's workers go with it)."""
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.Error):
            for child in process.children(recursive=True):
                child.kill()
            process.kill()
    psutil.wait_procs(processes, timeout=timeout_s)
    return [p.pid for p in processes]


def start_retrying_once(
    start: Callable[[], T],
    *,
    undo: Callable[[list], object] = stop,
    what: str = "the local Ray node",
    error: type[Exception] = RuntimeError,
    remove_failed_session: bool = True,
) -> T:
    """``start()``; if Ray's node-start timeout ends it, log what the node left, ``undo`` its
    processes and call it once more. A second timeout raises ``error`` with the node's own words.

    The folder of a failed start is removed last (a killed node can write into it once more), unless
    ``remove_failed_session`` is false: a worker node added to a running cluster shares the head's."""
    failed: list[Path] = []
    try:
        for attempt in (1, 2):
            children = child_pids()
            try:
                return start()
            except Exception as exc:  # noqa: BLE001 - only Ray's node-start timeout is retried
                if not is_start_timeout(exc):
                    raise
                session, processes = own_node(children)
                report = failure_report(session)
                undo(processes)
                failed += [session] if session and remove_failed_session else []
                if attempt == 2:
                    raise error(f"{what} did not start, twice. What it left:\n{report}") from exc
                logger.warning(
                    "%s did not start within Ray's 30 s; trying once more. What it left:\n%s", what, report
                )
        raise AssertionError("unreachable")
    finally:
        for session in failed:
            shutil.rmtree(session, ignore_errors=True)
