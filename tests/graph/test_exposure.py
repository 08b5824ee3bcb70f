"""Ray's ports are private: what `make serve` starts listens on loopback only (but for the HTTP
address the config asks for), Serve's replica gRPC servers included (Ray 2.60 binds them to every
interface; graphs/loopback_grpc.py keeps them on 127.0.0.1) and token-guarded, and a Ray driver
without the token is refused.

Everything here reads the socket table or connects to 127.0.0.1; nothing connects elsewhere.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
import yaml

from graphs import local_ray, ray_startup
from tests.assets import free_port

pytestmark = pytest.mark.slow

# What a shell or the old Makefile may have set; the launcher must not depend on (or obey) them.
RAY_PRIVACY_ENV = (
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
)


@dataclass(frozen=True)
class Listener:
    ip: str
    port: int
    pid: int
    process: str

    @property
    def loopback(self) -> bool:
        addr = ipaddress.ip_address(self.ip.split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return addr.is_loopback


def _name(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:120] or proc.name()
    except psutil.Error:
        return "?"


def tree(proc: psutil.Process, prune: str | None = None) -> list[psutil.Process]:
    """``proc`` and its descendants, without the subtrees of children whose command line has ``prune``."""
    kept = [proc]
    for child in proc.children():
        if prune is None or prune not in _name(child):
            kept += tree(child, prune)
    return kept


def listeners(root_pid: int, prune: str | None = None) -> list[Listener]:
    """Every TCP socket in LISTEN and every unconnected UDP socket of ``root_pid`` and its
    descendants (Ray's GCS, raylet, agents and workers are all children of the driver)."""
    procs = {p.pid: p for p in tree(psutil.Process(root_pid), prune)}
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in procs or not conn.laddr:
            continue
        if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and not conn.raddr):  # 2: SOCK_DGRAM
            found.append(Listener(conn.laddr.ip, conn.laddr.port, conn.pid, _name(procs[conn.pid])))
    return sorted(found, key=lambda s: (s.process, s.port))


def exposed(found: list[Listener], allowed: set[tuple[str, int]]) -> list[Listener]:
    """Listeners off loopback, but for ``allowed``."""
    return [s for s in found if not s.loopback and (s.ip, s.port) not in allowed]


def replica_grpc_status(port: int, token: str | None) -> grpc.StatusCode:
    """The status of a call (over loopback) to Serve's inter-deployment gRPC service, with or without
    the token."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/ray.serve.ASGIService/HandleRequest",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            call(b"", metadata=metadata, timeout=20)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def replica_grpc_ports(found: list[Listener]) -> list[int]:
    """The replicas' inter-deployment gRPC servers (Ray 2.60 binds them to ``[::]:0``;
    graphs/loopback_grpc.py moves them to 127.0.0.1): the replica ports that, given the token, serve
    that service (a replica's other port, its core worker's, does not know it)."""
    token = local_ray.read_token()
    return [
        s.port
        for s in found
        if "ServeReplica" in s.process
        and replica_grpc_status(s.port, token)
        not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED)
    ]


def assert_replica_grpc_wants_the_token(found: list[Listener]) -> None:
    ports = replica_grpc_ports(found)
    assert ports, found  # one per replica: if Serve stops opening them, drop this check
    for port in ports:
        assert replica_grpc_status(port, None) == grpc.StatusCode.UNAUTHENTICATED, port
        assert replica_grpc_status(port, "0" * 64) == grpc.StatusCode.UNAUTHENTICATED, port


def gcs_address(found: list[Listener]) -> str:
    ports = {s.port for s in found if "gcs_server" in s.process}
    assert len(ports) == 1, found
    return f"127.0.0.1:{ports.pop()}"


DRIVER = """
import os, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
@ray.remote(num_cpus=0)
def pid():
    return os.getpid()
print("ran in pid", ray.get(pid.remote(), timeout=60))
"""


def run_driver(address: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """A Ray driver in a fresh process, connecting to ``address`` (loopback) with ``env``'s auth
    settings only; HOME is empty, so Ray's default ~/.ray/auth_token is not found either.
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps it on loopback: without it ray.init rewrites
    127.0.0.1 to the machine's routable address, where nothing listens, and never gets as far as
    the authentication we test."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in RAY_PRIVACY_ENV}
    full = {
        **base,
        "HOME": str(home),
        "RAY_gcs_server_port_wait_time_s": "3",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", DRIVER, address], env=full, capture_output=True, text=True, timeout=120
    )


def assert_token_guards(address: str, tmp_path: Path) -> None:
    for env in (
        {"RAY_AUTH_MODE": "disabled"},  # an attacker's plain `ray.init(address=...)`
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
    ):  # a guessed token
        refused = run_driver(address, tmp_path, **env)
        assert refused.returncode != 0 and "ran in pid" not in refused.stdout, env
        assert "Authentication token is missing or incorrect" in refused.stderr, refused.stderr[-3000:]
    allowed = run_driver(address, tmp_path, **local_ray.client_env())
    assert allowed.returncode == 0 and "ran in pid" in allowed.stdout, allowed.stderr[-3000:]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """`make serve`: the launcher on serve_config.yaml with the packaged models, its HTTP and
    metrics ports moved to free ones and its data dirs to a temporary folder."""
    tmp = tmp_path_factory.mktemp("launched")
    config = yaml.safe_load(Path("serve_config.yaml").read_text())
    config["http_options"]["port"] = free_port()
    args = config["applications"][0]["args"]
    args["search"]["uri"] = str(tmp / "search.db")
    args["fusion"]["store"] = str(tmp / "heads")
    path = tmp / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    metrics_port = free_port()
    # RAY_AUTH_MODE=disabled is what the Makefile used to export: the launcher must override it.
    env = {**{k: v for k, v in os.environ.items() if k not in RAY_PRIVACY_ENV}, "RAY_AUTH_MODE": "disabled"}
    log = tmp / "launch.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "graphs.launch", str(path), "--metrics-port", str(metrics_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 300
        while "mmserve is serving" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield {
            "pid": proc.pid,
            "http": (config["http_options"]["host"], config["http_options"]["port"]),
            "metrics_port": metrics_port,
        }
    finally:
        proc.send_signal(signal.SIGINT)  # the launcher stops Serve and Ray and removes its session dir
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_make_serve_listens_on_loopback_only(launched):
    found = listeners(launched["pid"])
    host, port = launched["http"]
    assert not exposed(found, allowed={(host, port)}), "\n".join(map(str, exposed(found, {(host, port)})))
    # Not vacuous: the Ray and Serve sockets are there, on loopback.
    ports = {s.port for s in found}
    assert {port, launched["metrics_port"]} <= ports, found
    for process in ("gcs_server", "raylet", "DashboardAgent", "ProxyActor"):
        assert any(process in s.process for s in found), (process, found)
    assert_replica_grpc_wants_the_token(found)


def test_make_serve_refuses_a_driver_without_the_token(launched, tmp_path):
    assert_token_guards(gcs_address(listeners(launched["pid"])), tmp_path)


def test_the_tests_ray_is_private_too(ray_cluster, served, tmp_path):  # served: replicas to check
    found = listeners(os.getpid(), prune="graphs.launch")  # this process's Ray, not `launched`'s
    assert not exposed(found, allowed=set()), "\n".join(map(str, exposed(found, set())))
    assert ray_cluster["gcs_address"] == gcs_address(found)
    assert_replica_grpc_wants_the_token(found)
    assert_token_guards(ray_cluster["gcs_address"], tmp_path)


def closed_to_others(path: Path) -> Path | None:
    """The folder on the way to ``path`` (itself included) that keeps other users out: ours, and
    neither group nor others may enter or read it. None when every folder on the way lets them in."""
    for folder in [path, *path.parents]:
        info = folder.stat()
        if info.st_uid == os.getuid() and not stat.S_IMODE(info.st_mode) & 0o077:
            return folder
    return None


def assert_session_private(session: Path) -> None:
    logs = session / "logs"
    assert logs.is_dir() and any(logs.iterdir()), session  # not vacuous: Ray's logs are in there
    assert stat.S_IMODE(session.stat().st_mode) & 0o007, "Ray no longer makes its folders 0777: simplify"
    guard = closed_to_others(session)
    assert guard is not None, f"{session}: every folder on the way is open to other users"
    assert guard != session and guard.name == local_ray.private_dir_name(), guard


def launched_session(pid: int) -> Path:
    """The session folder the launcher's Ray names in its processes' command lines."""
    for proc in tree(psutil.Process(pid)):
        match = ray_startup.SESSION_ARG.search(_name(proc) + " " + " ".join(proc.cmdline()))
        if match:
            return Path(match.group(1))
    raise AssertionError("no Ray process of the launcher names its session folder")


def test_the_tests_ray_session_is_private_to_its_user(ray_cluster):
    assert_session_private(Path(ray_cluster["session_dir"]))


def test_make_serve_keeps_its_ray_session_private(launched):
    assert_session_private(launched_session(launched["pid"]))
