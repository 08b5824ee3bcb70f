"""What to do when the embedded Ray's node does not come up.

Ray 2.60 gives a new node's raylet a fixed 30 s to register with the GCS, then raises "The current
node timed out during startup" and leaves behind whatever it had started (the GCS, a raylet that may
still be starting, agents). On a busy two-core machine that can happen once and not again. So
:func:`graphs.local_ray.start` reads what the node logged (:func:`failure_report`), stops the
processes the failed start left (:func:`stop_children`) and tries once more.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

TIMED_OUT = "timed out during startup"
# The logs that say why a node did not come up: the raylet's and the GCS's, and the agents the
# raylet waits for.
LOGS = ("raylet.err", "raylet.out", "gcs_server.err", "gcs_server.out", "dashboard_agent.err",
        "dashboard_agent.log", "runtime_env_agent.err", "runtime_env_agent.log")
RAY_ROOT = Path("/tmp/ray")
ERROR_LINE = re.compile(r"check failed|error|fatal|in use|traceback", re.IGNORECASE)


def is_start_timeout(exc: BaseException) -> bool:
    return TIMED_OUT in str(exc)


def sessions(root: Path | None = None) -> set[Path]:
    root = root or RAY_ROOT
    return set(root.glob("session_2*")) if root.is_dir() else set()


def newest_session(root: Path | None = None) -> Path | None:
    return max(sessions(root), key=lambda p: p.stat().st_mtime, default=None)


def remove_sessions(paths: set[Path]) -> None:
    """Delete the session folders of failed starts (a killed node can leave files behind after its
    folder was first removed)."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


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

    parts = [f"load average {os.getloadavg()}, memory available {psutil.virtual_memory().available >> 20} MiB, "
             f"/tmp free {shutil.disk_usage('/tmp').free >> 20} MiB"]
    alive = [f"{p.info['pid']} {p.info['name']}" for p in psutil.process_iter(["pid", "name"])
             if any(k in (p.info["name"] or "") for k in ("raylet", "gcs_server", "ray::", "dashboard"))]
    parts.append(f"Ray processes alive: {alive or 'none'}")
    logs = session / "logs" if session else None
    if logs is None or not logs.is_dir():
        return "\n".join(parts + ["no session logs found"])
    parts.append(f"session {session}")
    for name in LOGS:
        if (logs / name).is_file() and (logs / name).stat().st_size:
            parts.append(f"  {name}:\n{_excerpt(logs / name, lines)}")
    return "\n".join(parts)


def _is_ray(process) -> bool:
    import psutil

    with contextlib.suppress(psutil.Error):
        return "ray" in process.name() or any("/ray/" in part for part in process.cmdline())
    return False


def stop_children(timeout_s: float = 10) -> list[str]:
    """Kill the Ray processes this one started (a failed ``ray.init`` leaves its node's GCS, raylet and
    agents running); returns their pids."""
    import psutil

    children = [c for c in psutil.Process().children(recursive=True) if _is_ray(c)]
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(children, timeout=timeout_s)
    return [f"{c.pid}" for c in children]
