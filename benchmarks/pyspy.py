"""Sample Serve's processes with py-spy while a sweep runs: a flame graph (SVG) and a top-N table of
self time per process (issue 24, part 1).

py-spy records each process in ``raw`` (collapsed-stack) form, without line numbers, so that one
recording gives both outputs: the self time of a function is the samples whose innermost frame it
is; the SVG is drawn here from the same stacks. Sampling is ``--nonblocking`` (the process is not
paused), so the figures are estimates; idle threads are left out (py-spy's default), so samples
count time spent running or ready to run, which on a saturated machine is close to CPU time.

    python -m benchmarks.image_throughput --served-only --profile --concurrency 16
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 100
TOP = 20
# the processes worth sampling, by a part of their title (ray::ServeReplica:<app>:<deployment>), and
# whether to count only samples holding the GIL: py-spy's idle heuristic counts Ray's core-worker and
# thread-pool threads blocked in C as busy (1.5 "busy" threads in a gateway /proc showed at 0.28 cores),
# so the Python-bound gateway and proxy are sampled with --gil (their Python CPU); the encoder's model
# runs with the GIL released, so it is sampled whole (its table over-counts waiting threads).
OWN = re.compile(r"\((api|config|deployments|graphs|models)/")
TARGETS = {"Gateway": True, "ProxyActor": True, "VisionEncoder": False}


# Where a Serve process's samples go: the first bucket whose frame (or file) is on a stack takes it.
# mmserve's own work first, then Serve's request path; what is left is mostly asyncio and concurrent
# futures callbacks that carry results between Serve's event loops and threads.
BUCKETS = (
    ("metrics (ray.util.metrics)", "Metric._record"),
    ("mmserve: parse the body (off the loop)", "parse_body (deployments/"),
    ("mmserve: render the response (off the loop)", "rendered.<locals>"),
    ("mmserve: model calls (calls.py, handle)", "(deployments/gateway/calls.py)"),
    ("mmserve: middlewares and routes (the rest of the app)", "RequestLimits.__call__"),
    ("FastAPI/Starlette outside mmserve's middlewares", "FastAPI.__call__"),
    ("Serve: handle router loop", "_run_router_event_loop"),
    ("Serve: replica request entry (proxy -> replica call)", "handle_request"),
    ("Serve: ASGI receive/send relay", "(ray/serve/_private/http_util.py)"),
    ("thread pool workers", "_worker (concurrent/futures/thread.py)"),
    ("ThreadPoolExecutor.submit", "ThreadPoolExecutor.submit"),
    ("Serve: user-code event loop", "_run_user_code_event_loop"),
    ("Ray core worker main loop", "Worker.main_loop"),
    ("uvicorn", "(uvicorn/"),
    ("Serve: proxy request path", "(ray/serve/_private/proxy"),
)
OTHER = "other (futures crossing Serve's loops and threads, native threads)"


def buckets(stacks: Counter) -> list[tuple[str, int]]:
    """Samples per :data:`BUCKETS` bucket (first match on the stack), largest first."""
    counts: Counter = Counter()
    for frames, count in stacks.items():
        joined = ";".join(frames)
        counts[next((name for name, key in BUCKETS if key in joined), OTHER)] += count
    return counts.most_common()


@dataclass
class Recording:
    name: str
    title: str
    pid: int
    raw: Path
    proc: subprocess.Popen


def py_spy() -> str:
    """The py-spy next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    found = str(here) if here.exists() else shutil.which("py-spy")
    if not found:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    return found


def label(name: str, pid: int, names: list[str]) -> str:
    """A file-safe name: the deployment's, with the pid when several processes share it."""
    short = name.replace("ray::ServeReplica:", "").replace("ray::", "").replace(":", "_")
    return f"{short}_{pid}" if names.count(name) > 1 else short


def _target(name: str) -> bool | None:
    """Whether process ``name`` is sampled with --gil; None when it is not sampled."""
    return next((gil for part, gil in TARGETS.items() if part in name), None)


def start(processes: list[tuple[int, str]], out_dir: Path, rate: int = RATE_HZ) -> list[Recording]:
    """One ``py-spy record`` per (pid, title) whose title names a target, until :func:`stop`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = [(pid, name) for pid, name in processes if _target(name) is not None]
    names = [name for _, name in chosen]
    recordings = []
    for pid, name in chosen:
        raw = out_dir / f"{label(name, pid, names)}.collapsed.txt"
        command = [py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        command += ["--nolineno", "--nonblocking", "--output", str(raw)] + (
            ["--gil"] if _target(name) else []
        )
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        recordings.append(Recording(label(name, pid, names), name, pid, raw, proc))
    return recordings


def stop(recordings: list[Recording], timeout_s: float = 30) -> list[str]:
    """Stop every recorder (SIGINT: py-spy writes its file and exits); the errors of those that failed."""
    for rec in recordings:
        rec.proc.send_signal(signal.SIGINT)
    errors = []
    for rec in recordings:
        try:
            _, err = rec.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rec.proc.kill()
            _, err = rec.proc.communicate()
        if not rec.raw.exists():
            errors.append(f"{rec.name} (pid {rec.pid}): {err.decode(errors='replace').strip()[-400:]}")
    return errors


def read_stacks(path: Path) -> Counter:
    """Collapsed stacks (``outer;...;inner count`` per line) as a Counter of frame tuples."""
    stacks: Counter = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def self_time(stacks: Counter, top: int = TOP) -> list[tuple[str, int]]:
    """The ``top`` functions by samples in which they were the innermost frame."""
    leaves: Counter = Counter()
    for frames, count in stacks.items():
        leaves[frames[-1]] += count
    return leaves.most_common(top)


def inclusive(stacks: Counter, top: int = TOP, own: bool = False) -> list[tuple[str, int]]:
    """The ``top`` functions by samples in which they were anywhere on the stack (once per stack);
    ``own``: only mmserve's own functions (api, config, deployments, graphs, models)."""
    seen: Counter = Counter()
    for frames, count in stacks.items():
        for frame in set(frames):
            if not own or OWN.search(frame):
                seen[frame] += count
    return seen.most_common(top)


def _rows(ranked: list[tuple[str, int]], total: int, requests: int, cpu_ms: float | None, rate: int) -> list:
    return [
        {
            "function": frame,
            "samples": count,
            "share": round(count / max(total, 1), 4),
            "ms_per_request": round(1000 * count / rate / max(requests, 1), 3),
            "cpu_ms_per_request": None if cpu_ms is None else round(cpu_ms * count / max(total, 1), 3),
        }
        for frame, count in ranked
    ]


def table(
    name: str, stacks: Counter, *, requests: int, cpu_ms: float | None, rate: int = RATE_HZ, top: int = TOP
) -> dict:
    """The top self-time rows of one process: samples, share of the process's samples, sampled ms per
    request, and that share of ``cpu_ms`` (the process's CPU ms per request read from /proc)."""
    total = sum(stacks.values())
    rows = _rows(self_time(stacks, top), total, requests, cpu_ms, rate)
    whole = _rows(inclusive(stacks, top), total, requests, cpu_ms, rate)
    own = _rows(inclusive(stacks, top, own=True), total, requests, cpu_ms, rate)
    parts = _rows(buckets(stacks), total, requests, cpu_ms, rate)
    ms = round(1000 * total / rate / max(requests, 1), 2)
    return {
        "process": name,
        "samples": total,
        "sampled_ms_per_request": ms,
        "cpu_ms_per_request": cpu_ms,
        "top_self": rows,
        "top_inclusive": whole,
        "top_own_inclusive": own,
        "buckets": parts,
    }


def markdown(tables: list[dict]) -> str:
    """The tables as markdown, one section per process: buckets, self time, inclusive time, mmserve's own
    functions by inclusive time (what each of its steps costs, Ray and libraries below it included)."""
    lines = []
    for t in tables:
        lines += [
            f"### {t['process']}: {t['samples']} samples, {t['sampled_ms_per_request']} sampled ms and "
            f"{t['cpu_ms_per_request']} CPU ms (/proc) per request",
            "",
        ]
        lines += _markdown_rows("bucket", t["buckets"])
        lines += _markdown_rows("self time", t["top_self"])
        lines += _markdown_rows("inclusive", t["top_inclusive"])
        lines += _markdown_rows("mmserve's own functions, inclusive", t["top_own_inclusive"])
    return "\n".join(lines)


def _markdown_rows(title: str, rows: list[dict]) -> list[str]:
    lines = [
        f"| # | {title}: share | share x CPU ms/req | sampled ms/req | function (file) |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        fn = r["function"].replace("|", "\\|")
        lines.append(
            f"| {i} | {r['share']:.1%} | {r['cpu_ms_per_request']} | {r['ms_per_request']:.2f} | `{fn}` |"
        )
    return lines + [""]


# ------------------------------------------------------------------------------------------- svg
ROW_PX, WIDTH_PX, MIN_PX = 16, 1200, 0.5


def _tree(stacks: Counter) -> dict:
    """Stacks as a nested tree: {frame: [samples, children]}."""
    root: dict = {}
    for frames, count in stacks.items():
        level = root
        for frame in frames:
            node = level.setdefault(frame, [0, {}])
            node[0] += count
            level = node[1]
    return root


def _colour(frame: str) -> str:
    """Orange for mmserve's own code, grey for Ray's, yellow for the rest (libraries, the standard
    library); the shade steady per function (a hash of its name)."""
    h = sum(frame.encode()) % 60
    if OWN.search(frame):
        return f"rgb(240,{100 + h},40)"
    if "(ray/" in frame:
        return f"rgb({170 + h},{170 + h},{170 + h})"
    return f"rgb(230,{190 + h // 2},{60 + h})"


def _rects(level: dict, x: float, depth: int, scale: float, bottom: float, out: list[str]) -> None:
    """Draws ``level``'s frames from ``x``, ``depth`` rows above ``bottom`` (roots at the bottom)."""
    for frame, (count, children) in sorted(level.items()):
        width = count * scale
        if width >= MIN_PX:
            y, text = bottom - (depth + 1) * ROW_PX, html.escape(frame)
            shown = html.escape(frame[: int(width / 7)])
            out.append(
                f'<g><title>{text} ({count} samples)</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" '
                f'height="{ROW_PX - 1}" fill="{_colour(frame)}"/>'
                f'<text x="{x + 2:.1f}" y="{y + ROW_PX - 4}">{shown}</text></g>'
            )
            _rects(children, x, depth + 1, scale, bottom, out)
        x += width


def svg(stacks: Counter, title: str) -> str:
    """A flame graph of ``stacks`` (roots at the bottom); hover a frame for its name and samples."""
    total = max(sum(stacks.values()), 1)
    height = (max((len(f) for f in stacks), default=0) + 2) * ROW_PX
    parts: list[str] = []
    _rects(_tree(stacks), 0.0, 0, WIDTH_PX / total, height, parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
        f'font-family="monospace" font-size="11">\n<text x="4" y="12">{html.escape(title)} '
        f"({total} samples)</text>\n" + "\n".join(parts) + "\n</svg>\n"
    )


def write(
    recordings: list[Recording],
    out_dir: Path,
    *,
    requests: int,
    cpu_ms: dict[str, float],
    rate: int = RATE_HZ,
) -> list[dict]:
    """An SVG and a top-N table per recording into ``out_dir`` (``cpu_ms``: CPU ms per request by process
    title, from /proc); returns the tables."""
    tables = []
    for rec in recordings:
        if not rec.raw.exists():
            continue
        stacks = read_stacks(rec.raw)
        (out_dir / f"{rec.name}.svg").write_text(svg(stacks, f"{rec.name} (pid {rec.pid})"))
        tables.append(table(rec.name, stacks, requests=requests, cpu_ms=cpu_ms.get(rec.title), rate=rate))
    (out_dir / "top_self.md").write_text(markdown(tables))
    return tables


def can_attach() -> str | None:
    """Why py-spy cannot sample here, or None (it needs ptrace on processes of the same user)."""
    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    if scope.exists() and scope.read_text().strip() not in ("0", "1") and os.geteuid() != 0:
        return f"kernel.yama.ptrace_scope is {scope.read_text().strip()}: py-spy needs root here"
    return None
