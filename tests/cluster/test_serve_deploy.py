"""The production path, as docs/cluster.md "Run on a Ray cluster" gives it: ``ray start --head`` plus a second
raylet (tests/cluster/raylet.py: ``ray start --address`` cannot join on loopback in Ray 2.60), both
on 127.0.0.1 with token auth; ``serve deploy`` of a config
derived from ``serve_config.yaml`` (the real packaged models, small CPU shares) whose ``runtime_env``
ships mmserve's code as a ``working_dir`` zip and sets ``env_vars``; requests; two in-place updates
under load (a new ``user_config``, then a new code release, rolled replica by replica); ``serve
shutdown`` and every Ray process stopped.

The raylets run from a Python environment that has Ray and mmserve's dependencies but cannot import
mmserve (a venv that sees the test venv's site-packages without its editable install), so the
cluster runs only the code the zip ships. Each node runs in the foreground (``--block``, as KubeRay
runs them) and is stopped through that process; ``ray stop`` would stop every Ray of this user on the
machine, including ones this test did not start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from clients.client import Client
from graphs import local_ray
from tests import assets
from tests.assets import free_port
from tests.chaos.load import Load
from tests.serve_state import replica_prefix

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "config", "models", "deployments", "graphs")  # what the server imports
APP = "mmserve"
MODELS = ("VisionEncoder", "TextEncoder", "AudioModel")
DEPLOY_LIMIT_S = 300


def package(dest: Path, release: str) -> Path:
    """mmserve's server code as a zip with one top-level folder (what ``git archive --prefix mmserve/``
    makes), plus a RELEASE file naming it."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in PACKAGES:
            for path in sorted((ROOT / name).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    zf.write(path, f"mmserve/{path.relative_to(ROOT)}")
        zf.writestr("mmserve/RELEASE", release)
    return dest


def node_python(where: Path) -> str:
    """A Python with Ray and every dependency (the test venv's site-packages on its path) but without
    mmserve: the editable install's .pth hook of the test venv is not run there."""
    venv = where / "node-venv"
    subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=60,
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "mmserve-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(python)


class RayNodes:
    """The nodes of one cluster, each a foreground process of ours, all on loopback with token auth."""

    def __init__(self, python: str, workdir: Path) -> None:
        self.python, self.workdir = python, workdir
        self.temp_dir = Path(tempfile.mkdtemp(prefix="mmray-", dir="/tmp"))  # short: Unix socket paths
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        # The embedded default's proxy callback (local_ray.SERVE_DEFAULTS) names mmserve code that the
        # proxy imports from its node's own Python when it starts: these nodes cannot import mmserve
        # (only the working_dir zip ships it), like a cluster whose image lacks it (docs/faults.md).
        dropped = ("PYTHONPATH", "RAY_ADDRESS", local_ray.PROXY_CALLBACK_ENV)
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env.update(local_ray.client_env(), RAY_USAGE_STATS_ENABLED="0")
        self.procs: list[subprocess.Popen] = []

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _popen(self, command: list[str]) -> None:
        log = open(self.temp_dir / f"node-{len(self.procs)}.log", "w")
        self.procs.append(
            subprocess.Popen(command, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        )

    def start_head(self, *, num_cpus: int, resources: dict) -> None:
        """``ray start --head --block`` with every port on 127.0.0.1 (and the dashboard, which
        ``serve deploy`` talks to)."""
        self._popen(
            [
                self.python,
                "-m",
                "ray.scripts.scripts",
                "start",
                "--head",
                "--block",
                "--disable-usage-stats",
                "--node-ip-address=127.0.0.1",
                f"--port={self.gcs_port}",
                f"--temp-dir={self.temp_dir}",
                f"--num-cpus={num_cpus}",
                "--num-gpus=0",
                f"--resources={json.dumps(resources)}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
            ]
        )

    def add_worker(self, *, num_cpus: int, resources: dict) -> None:
        """A second raylet on 127.0.0.1: tests/cluster/raylet.py (``ray start --address`` cannot join
        on loopback in Ray 2.60; that file says why), run by path, so nothing of mmserve is importable."""
        self._popen(
            [
                self.python,
                str(Path(__file__).with_name("raylet.py")),
                f"--address=127.0.0.1:{self.gcs_port}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}",
            ]
        )

    def listening(self) -> dict[str, str]:
        """Each TCP address:port the cluster's processes listen on, and which process."""
        found = {}
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                for c in p.net_connections("tcp"):
                    if c.status == psutil.CONN_LISTEN:
                        found[f"{c.laddr.ip}:{c.laddr.port}"] = " ".join(p.cmdline())[:160]
        return found

    def alive_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        try:
            return [n.__dict__ for n in list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")])]
        except Exception:  # noqa: BLE001 - the dashboard is still starting
            return []

    def wait_for(self, count: int, limit_s: float = 120) -> list[dict]:
        started = time.monotonic()
        while len(nodes := self.alive_nodes()) < count:
            for p in self.procs:
                assert p.poll() is None, f"a node exited: {self.logs()}"
            assert time.monotonic() - started < limit_s, (
                f"{len(nodes)} of {count} nodes after {limit_s}s: {self.logs()}"
            )
            time.sleep(1)
        return nodes

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: the nodes' foreground processes and all they started."""
        found = []
        for p in self.procs:
            try:
                root = psutil.Process(p.pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def stop(self) -> list[str]:
        """SIGTERM each node's foreground process (the worker first): each stops its own node's
        processes. Returns what is still running after that (killed, so nothing is left either way)."""
        everything = self.processes()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        _, alive = psutil.wait_procs(everything, timeout=20)
        left = [" ".join(p.cmdline()[:3]) for p in alive if p.is_running()]
        for p in alive:
            p.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in sorted(self.temp_dir.glob("node-*.log")))


def serve_cli(nodes: RayNodes, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ray.serve.scripts", *args, f"--address={nodes.dashboard}"],
        env=nodes.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def app_status(nodes: RayNodes) -> dict:
    done = serve_cli(nodes, "status")
    assert done.returncode == 0, done.stderr[-2000:]
    return (yaml.safe_load(done.stdout) or {}).get("applications", {}).get(APP, {})


def deploy(nodes: RayNodes, config: dict, where: Path, *, until=lambda: True) -> float:
    """``serve deploy`` and wait until ``serve status`` says RUNNING and ``until()`` holds; returns
    the seconds it took."""
    where.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    done = serve_cli(nodes, "deploy", str(where))
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-2000:]
    time.sleep(3)  # the controller picks the new config up
    while (status := app_status(nodes)).get("status") != "RUNNING" or not until():
        assert status.get("status") != "DEPLOY_FAILED", status.get("message")
        assert time.monotonic() - started < DEPLOY_LIMIT_S, f"not RUNNING after {DEPLOY_LIMIT_S}s: {status}"
        time.sleep(2)
    return round(time.monotonic() - started, 1)


def replica_actors(nodes: RayNodes) -> dict[str, list[dict]]:
    """Each model deployment's live replicas (actor id, pid, node id), from the state API."""
    from ray.util.state import list_actors

    alive = list_actors(address=nodes.dashboard, filters=[("state", "=", "ALIVE")], limit=10_000)
    return {
        d: sorted(
            (
                {"id": a.actor_id, "pid": a.pid, "node": a.node_id}
                for a in alive
                if (a.name or "").startswith(replica_prefix(APP, d))
            ),
            key=lambda r: r["id"],
        )
        for d in (*MODELS, "Gateway", "SearchIndex", "FusionHead")
    }


def cluster_config(base: Path, *, zip_path: Path, http_port: int) -> dict:
    """serve_config.yaml for this small cluster: models on the worker node (its 'models' resource),
    whisper tiny.en, data under ``base``, the code and settings through runtime_env."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    app = config["applications"][0]
    app["runtime_env"] = {
        "working_dir": zip_path.as_uri(),
        "env_vars": {"MMSERVE_SEARCH_URI": str(base / "search.db"), "OMP_NUM_THREADS": "1"},
    }
    args = app["args"]
    for name in ("vision", "text", "audio"):  # one replica each, so each update is seen whole
        args[name].update(
            num_cpus=0.2, resources={"models": 1}, autoscaling={"min_replicas": 1, "max_replicas": 1}
        )
    args["gateway"]["autoscaling"] = {"min_replicas": 1, "max_replicas": 1}
    args["audio"]["model"] = {
        "engine": "faster-whisper",
        "model": "whisper-tiny.en",
        "compute_type": "int8",
        "cpu_threads": 1,
    }
    args["search"]["uri"] = "${MMSERVE_SEARCH_URI}"  # read from the runtime_env where the app is built
    args["fusion"]["store"] = str(base / "heads")
    return config


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("raystart")
    python = node_python(base)
    cannot = subprocess.run(
        [python, "-c", "import deployments"],
        cwd=base,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert cannot.returncode != 0 and "No module named 'deployments'" in cannot.stderr, cannot.stderr
    nodes = RayNodes(python, base)
    try:
        nodes.start_head(num_cpus=1, resources={"head": 1})
        nodes.wait_for(1)
        nodes.add_worker(num_cpus=2, resources={"models": 8})
        listed = nodes.wait_for(2)
        yield nodes, base, listed
    finally:
        served = serve_cli(nodes, "shutdown", "--yes", timeout=120)
        left = nodes.stop()
        print(f"\nserve shutdown rc={served.returncode}; processes left after the nodes stopped: {left}")
        assert not left, left


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/v1/stats", timeout=30).json()["VisionEncoder"].get("classify", {})


def _classify_burst(url: str, n: int = 12) -> None:
    import concurrent.futures

    photo = assets.photo("coffee")
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        list(
            pool.map(
                lambda _: httpx.post(
                    f"{url}/v1/classify", files={"image": ("c.jpg", photo)}, timeout=60
                ).raise_for_status(),
                range(n),
            )
        )


def _all_replaced(nodes: RayNodes, old: dict[str, list[dict]]) -> bool:
    """Each model deployment runs one replica, and none of the old ones."""
    now = replica_actors(nodes)
    return all(len(now[d]) == 1 and now[d][0]["id"] not in {r["id"] for r in old[d]} for d in MODELS)


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or getattr(ip, "ipv4_mapped", None) is not None and ip.ipv4_mapped.is_loopback


def _report(name: str, row: dict) -> None:
    print(f"\nRAY START {name}: {json.dumps(row)}")


def test_ray_start_serve_deploy_and_rolling_updates_under_load(cluster):
    nodes, base, listed = cluster
    head = next(n["node_id"] for n in listed if n["is_head_node"])
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    config = cluster_config(base, zip_path=package(base / "mmserve-r1.zip", "r1"), http_port=http_port)

    deployed_s = deploy(nodes, config, base / "config.yaml")
    with Client(url, timeout=60) as client:
        assert client.classify(assets.photo("chelsea"), top_k=1).predictions[0].label == "tiger cat"
        assert assets.wer(assets.EN_SENTENCE, client.transcribe(assets.speech(assets.EN_SENTENCE)).text) < 0.4
    v1 = replica_actors(nodes)
    _report(
        "deployed",
        {
            "serve_deploy_to_running_s": deployed_s,
            "replica_nodes": {
                d: ["head" if r["node"] == head else "worker" for r in rs] for d, rs in v1.items()
            },
        },
    )
    assert all(r["node"] != head for d in MODELS for r in v1[d]), v1  # the models run on the second raylet
    assert {n["node_ip"] for n in listed} == {"127.0.0.1"}, listed
    # Found, not fixed: Serve replica processes here listen on '::' (every interface), which the
    # embedded single-node test (tests/graph/test_exposure.py) does not see; reported, not asserted.
    exposed = sorted(
        {p.split()[0] for a, p in nodes.listening().items() if not _loopback(a.rpartition(":")[0])}
    )
    _report("processes listening off loopback", {"processes": exposed})
    for d in MODELS:
        assert len(v1[d]) == 1 and Path(f"/proc/{v1[d][0]['pid']}/cwd/RELEASE").read_text() == "r1"

    # 1. A new user_config (VisionEncoder batches of at most 2): replicas reconfigured in place.
    _classify_burst(url)
    before = _stats(url)
    config["applications"][0]["deployments"] = [
        {"name": "VisionEncoder", "user_config": {"max_batch_size": 2, "batch_wait_timeout_s": 0.05}}
    ]
    with Load(url, workers=1, timeout_s=60, limit_s=DEPLOY_LIMIT_S) as load:
        time.sleep(2)
        updated_s = deploy(nodes, config, base / "config.yaml")
        time.sleep(2)
        tally = load.stop()
    _classify_burst(url)
    after = _stats(url)
    _report("user_config update under load", {**tally.row(), "update_to_running_s": updated_s})
    assert replica_actors(nodes) == v1, "a user_config change must not restart any replica"
    grew = {size: after[size] - before.get(size, 0) for size in after if after[size] != before.get(size, 0)}
    assert grew and max(int(size) for size in grew) <= 2, (before, after)
    assert tally.failed == 0 and tally.hung == 0 and tally.succeeded > 3, tally.row()

    # 2. A new code release (another working_dir zip): every replica replaced, one at a time per deployment.
    config["applications"][0]["runtime_env"]["working_dir"] = package(base / "mmserve-r2.zip", "r2").as_uri()
    with Load(url, workers=1, timeout_s=60, limit_s=DEPLOY_LIMIT_S) as load:
        time.sleep(2)
        rolled_s = deploy(nodes, config, base / "config.yaml", until=lambda: _all_replaced(nodes, v1))
        time.sleep(2)
        tally = load.stop()
    v2 = replica_actors(nodes)
    _report("code release r1 -> r2 under load", {**tally.row(), "update_to_running_s": rolled_s})
    for d in MODELS:
        assert not {r["id"] for r in v2[d]} & {r["id"] for r in v1[d]}, f"{d} kept an old replica"
        assert [Path(f"/proc/{r['pid']}/cwd/RELEASE").read_text() for r in v2[d]] == ["r2"]
    assert tally.failed == 0 and tally.hung == 0 and tally.succeeded > 3, tally.row()
