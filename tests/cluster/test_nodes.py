"""Several Ray nodes on one machine (``ray.cluster_utils.Cluster``; every node at 127.0.0.1, token
auth on): where replicas land, autoscaling onto a second node, losing a node under load, draining
one. The head runs Serve's controller, the HTTP proxy and the gateway, and no model; two worker
nodes have one *logical* GPU each (Ray schedules fractional ``num_gpus`` on them; nothing uses
CUDA), one of them a custom ``speech`` resource. The models are stand-ins (``BatchedStub``: real
``@serve.batch`` machinery, a sleep for a forward pass; the model does not matter for placement)
behind the real Gateway, configured through the real ``DeploymentArgs``.

The tests run in order on one cluster: placement, autoscaling, node loss, drain.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from types import SimpleNamespace

import pytest
import ray
from ray import serve

from clients.client import Client
from config.args import Autoscaling, DeploymentArgs, GatewayArgs, SearchArgs
from deployments.search import SearchIndex
from graphs import local_ray, ray_startup
from tests.assets import free_port
from tests.chaos.load import Load, png
from tests.milvus_server import TOKEN, milvus_server
from tests.serve_state import replicas
from tests.stub_backends import stub_gateway, stub_model

pytestmark = pytest.mark.slow

APP = "nodes"
HEAD = {"num_cpus": 1, "resources": {"head": 1}}  # control plane and gateway: no GPU, no model resource
GPU_NODE = {"num_cpus": 1, "num_gpus": 1}
SPEECH_NODE = {**GPU_NODE, "resources": {"speech": 1}}
NAMES = {"image": "VisionEncoder", "text": "TextEncoder", "audio": "AudioModel"}
GPUS = {"image": 0.25, "text": 0.125, "audio": 0.5}
DELAY_S = {"image": 0.05, "text": 0.05, "audio": 0.3}
RECOVERY_LIMIT_S = 90


def _fixed(n: int) -> Autoscaling:
    return Autoscaling(min_replicas=n, max_replicas=n)


def _model_args(modality: str, **overrides) -> DeploymentArgs:
    options = {
        "num_cpus": 0,
        "num_gpus": GPUS[modality],
        "max_ongoing_requests": 8,
        "graceful_shutdown_wait_loop_s": 0.2,
        "autoscaling": _fixed(1),
        **overrides,
    }
    return DeploymentArgs(**options)


# Placement and autoscaling: audio only where 'speech' is, two vision replicas, text scales 1 -> 2
# replicas on load, at most one per node.
PLACED = {
    "image": _model_args("image", autoscaling=_fixed(2)),
    "text": _model_args(
        "text",
        max_replicas_per_node=1,
        autoscaling=Autoscaling(
            min_replicas=1,
            max_replicas=2,
            target_ongoing_requests=1,
            upscale_delay_s=1,
            downscale_delay_s=600,
        ),
    ),
    "audio": _model_args("audio", resources={"speech": 0.5}),
}
# Node loss and drain: every modality on both GPU nodes (0.875 GPU per node).
REDUNDANT = {m: _model_args(m, autoscaling=_fixed(2), max_replicas_per_node=1) for m in NAMES}


def _deploy(models: dict[str, DeploymentArgs], *, search: SearchArgs | None = None) -> None:
    bound = {m: stub_model(m, args, name=NAMES[m], delay_s=DELAY_S[m]) for m, args in models.items()}
    gateway = GatewayArgs(
        num_cpus=0,
        resources={"head": 0.01},
        autoscaling=_fixed(1),
        settings={"max_inflight": 48, "embed_cache_size": 0},
    )
    optional = (
        {}
        if search is None
        else {"search": SearchIndex.options(**search.serve_options()).bind(search.uri, search.token)}
    )
    serve.run(
        stub_gateway(bound["image"], bound["text"], bound["audio"], gateway, name="Gateway", **optional),
        name=APP,
        route_prefix=f"/{APP}",
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if ray.is_initialized():
        pytest.fail(
            "a Ray is already connected in this process; tests/cluster must run first (tests/conftest.py)"
        )
    local_ray.prepare()  # token auth and loopback, inherited by every node's processes
    with (
        pytest.MonkeyPatch.context() as env,
        milvus_server(tmp_path_factory.mktemp("milvus") / "data") as uri,
    ):
        for pushed_by in ("HANDLE", "REPLICA"):  # autoscaling metrics every second, not every 10 s
            env.setenv(f"RAY_SERVE_{pushed_by}_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "1")
        yield from _cluster(uri)


def _cluster(milvus_uri: str):
    from ray.cluster_utils import Cluster

    nodes = Cluster()
    session_dir = None
    try:
        head = _add_node(nodes, include_dashboard=False, **HEAD)
        session_dir = head.get_session_dir_path()
        workers = {"gpu-a": _add_node(nodes, **GPU_NODE), "gpu-b": _add_node(nodes, **SPEECH_NODE)}
        nodes.wait_for_nodes()
        local_ray.connect(nodes.address, log_to_driver=False)
        assert ray.get_runtime_context().get_node_id() == head.node_id  # the driver is on the head
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": local_ray.LOOPBACK, "port": port})
        names = {head.node_id: "head", **{n.node_id: name for name, n in workers.items()}}
        yield SimpleNamespace(
            nodes=nodes,
            workers=workers,
            names=names,
            head=head,
            milvus_uri=milvus_uri,
            url=f"http://127.0.0.1:{port}/{APP}",
        )
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        nodes.shutdown()  # every node this test added, the head last
        if session_dir:
            shutil.rmtree(session_dir, ignore_errors=True)


def _add_node(nodes, **options):
    """One node on loopback. Ray gives its raylet 30 s to register, which a busy 2-core CI machine
    once missed for the head (stop 31's CI run): a node that times out is reported, stopped and started
    once more, as graphs.local_ray does for the embedded Ray. A worker node shares the head's session
    folder, so only a failed head's folder is removed."""
    return ray_startup.start_retrying_once(
        lambda: nodes.add_node(node_ip_address=local_ray.LOOPBACK, **options),
        what="a test cluster node",
        remove_failed_session=nodes.head_node is None,
    )


def _add_gpu_node(cluster, name: str):
    node = _add_node(cluster.nodes, **GPU_NODE)
    cluster.workers[name] = node
    cluster.names[node.node_id] = name
    return node


def _where(cluster) -> dict[str, list[str]]:
    """Each deployment's replicas, by the name of the node each runs on."""
    return {
        d: sorted(cluster.names.get(r.node_id, r.node_id) for r in replicas(APP, d))
        for d in (*NAMES.values(), "Gateway")
    }


def _running(deployment: str) -> dict[str, int]:
    states = serve.status().applications[APP].deployments[deployment].replica_states
    return {getattr(s, "value", str(s)): n for s, n in states.items() if n}


def _report(name: str, row: dict) -> None:
    print(f"\nCLUSTER {name}: {json.dumps(row)}")


def _wait_healthy(
    cluster, *, replicas_each: int, avoid: str | None = None, limit_s: float = RECOVERY_LIMIT_S
) -> float:
    """Seconds until every model deployment runs ``replicas_each`` replicas (none on ``avoid``) and
    the app is RUNNING."""
    started = time.monotonic()
    while True:
        where = _where(cluster)
        if (
            serve.status().applications[APP].status == "RUNNING"
            and all(_running(d) == {"RUNNING": replicas_each} for d in NAMES.values())
            and all(len(where[d]) == replicas_each and avoid not in where[d] for d in NAMES.values())
        ):
            return round(time.monotonic() - started, 1)
        assert time.monotonic() - started < limit_s, f"not healthy after {limit_s}s: {where}"
        time.sleep(0.25)


def _accounted(tally) -> None:
    assert tally.sent == tally.succeeded + tally.refused + tally.failed, tally.row()
    assert tally.failed == 0 and tally.hung == 0, tally.row()
    assert tally.succeeded > 20, tally.row()


def _gpus_in_use(cluster) -> dict[str, float]:
    """GPU each node has handed out, as Ray's resource accounting reports it."""
    total, free = (
        ray._private.state.total_resources_per_node(),
        ray._private.state.available_resources_per_node(),
    )
    return {
        cluster.names[n]: round(r.get("GPU", 0) - free.get(n, {}).get("GPU", 0), 3)
        for n, r in total.items()
        if r.get("GPU")
    }


# ---- placement -----------------------------------------------------------------------------------
def test_each_modality_lands_where_its_resources_say(cluster):
    _deploy(PLACED)
    where = _where(cluster)
    demand = Counter()
    for modality, deployment in NAMES.items():
        for node in where[deployment]:
            demand[node] += GPUS[modality]
    deadline = time.monotonic() + 10
    while (used := _gpus_in_use(cluster)) != dict(demand) and time.monotonic() < deadline:
        time.sleep(0.25)  # Ray's resource view follows the raylets' reports
    _report("placement", {"replicas": where, "gpu_in_use": used})
    assert where["Gateway"] == ["head"] and all("head" not in where[d] for d in NAMES.values()), where
    assert where["AudioModel"] == ["gpu-b"], where  # the one node with the 'speech' resource
    assert len(where["VisionEncoder"]) == 2 and len(where["TextEncoder"]) == 1, where
    # 2 x 0.25 + 0.125 + 0.5 = 1.125 GPU: more than one node holds, so both GPU nodes are used
    assert set(demand) == {"gpu-a", "gpu-b"} and max(demand.values()) <= 1.0, demand
    assert used == dict(demand), (
        f"Ray's GPU accounting {used} differs from the replicas' requests {dict(demand)}"
    )


# ---- autoscaling -----------------------------------------------------------------------------------
def test_text_load_adds_a_text_replica_on_the_other_node_only(cluster):
    before = {d: replicas(APP, d) for d in (*NAMES.values(), "Gateway")}
    first_text_node = before["TextEncoder"][0].node_id
    started = time.monotonic()
    with Load(cluster.url, kinds=("text",), workers=6, timeout_s=20, limit_s=120) as load:
        while _running("TextEncoder") != {"RUNNING": 2}:
            assert time.monotonic() - started < 60, (
                f"TextEncoder did not scale out: {_running('TextEncoder')}"
            )
            time.sleep(0.25)
        scaled_s = round(time.monotonic() - started, 1)
        time.sleep(1)
        tally = load.stop()
    after = {d: replicas(APP, d) for d in before}
    added = [r for r in after["TextEncoder"] if r not in before["TextEncoder"]]
    _report(
        "autoscaling text 1 -> 2",
        {**tally.row(), "scaled_out_after_s": scaled_s, "replicas": _where(cluster)},
    )
    assert len(added) == 1 and added[0].node_id != first_text_node, _where(cluster)  # max_replicas_per_node=1
    assert cluster.names[added[0].node_id] in ("gpu-a", "gpu-b")
    for deployment in ("VisionEncoder", "AudioModel", "Gateway"):
        assert after[deployment] == before[deployment], f"{deployment} changed without load on it"
    _accounted(tally)


# ---- two SearchIndex replicas, one Milvus server ----------------------------------------------------
def test_two_search_replicas_on_two_nodes_share_one_milvus_server(cluster):
    """With a server URI SearchIndex scales out: an index created and filled through whichever
    replica answered is found by every query, whichever replica answers it."""
    serve.delete(APP)
    search = SearchArgs(
        uri=cluster.milvus_uri, token=TOKEN, num_cpus=0, autoscaling=_fixed(2), max_replicas_per_node=1
    )
    _deploy(REDUNDANT, search=search)
    where = _where(cluster)
    search_nodes = [r.node_id for r in replicas(APP, "SearchIndex")]
    _report(
        "redundant app", {"replicas": where, "SearchIndex": sorted(cluster.names[n] for n in search_nodes)}
    )
    assert all(where[d] == ["gpu-a", "gpu-b"] for d in NAMES.values()), where
    assert len(set(search_nodes)) == 2, search_nodes
    with Client(cluster.url, timeout=30) as client:
        client.create_index("shared")
        added = client.add_images("shared", [png(seed) for seed in range(6)])
        assert added.added == 6, added
        counts = [len(client.query("shared", text=f"query {i}", top_k=10).hits) for i in range(12)]
    assert counts == [6] * 12, counts


# ---- node loss ---------------------------------------------------------------------------------------
def test_losing_a_node_under_load_fails_no_request(cluster):
    assert all(_where(cluster)[d] == ["gpu-a", "gpu-b"] for d in NAMES.values()), _where(cluster)
    with Load(cluster.url, workers=2, timeout_s=20, limit_s=150) as load:
        time.sleep(3)
        lost = time.monotonic()
        cluster.nodes.remove_node(cluster.workers.pop("gpu-b"), allow_graceful=False)  # kill -9 every process
        time.sleep(5)  # serving from one node meanwhile
        sent_on_one_node = load.tally.sent
        _add_gpu_node(cluster, "gpu-c")
        node_up_s = round(time.monotonic() - lost - 5, 1)
        healthy_s = _wait_healthy(cluster, replicas_each=2, avoid="gpu-b")
        time.sleep(2)
        tally = load.stop()
    where = _where(cluster)
    _report(
        "node loss (remove_node gpu-b, allow_graceful=False) under mixed load",
        {
            **tally.row(),
            "sent_before_replacement": sent_on_one_node,
            "replacement_node_up_s": node_up_s,
            "healthy_after_node_added_s": healthy_s,
            "replicas": where,
        },
    )
    assert all(where[d] == ["gpu-a", "gpu-c"] for d in NAMES.values()), where
    _accounted(tally)


# ---- graceful drain ----------------------------------------------------------------------------------
def _drain(cluster, node, *, deadline_s: int) -> None:
    """``ray drain-node`` as an operator (or KubeRay, before it deletes a pod) runs it."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "drain-node",
            f"--address={cluster.nodes.address}",
            f"--node-id={node.node_id}",
            "--reason=DRAIN_NODE_REASON_PREEMPTION",
            "--reason-message=mmserve drain test",
            f"--deadline-remaining-seconds={deadline_s}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_draining_a_node_moves_its_replicas_without_failures(cluster):
    _add_gpu_node(cluster, "gpu-d")
    with Load(cluster.url, workers=2, timeout_s=20, limit_s=150) as load:
        time.sleep(3)
        _drain(cluster, cluster.workers["gpu-c"], deadline_s=120)
        moved_s = _wait_healthy(cluster, replicas_each=2, avoid="gpu-c")
        time.sleep(2)
        tally = load.stop()
    where = _where(cluster)
    _report("drain gpu-c under mixed load", {**tally.row(), "moved_after_s": moved_s, "replicas": where})
    assert all(where[d] == ["gpu-a", "gpu-d"] for d in NAMES.values()), where
    _accounted(tally)
    cluster.nodes.remove_node(cluster.workers.pop("gpu-c"))  # empty now: its pod can go
