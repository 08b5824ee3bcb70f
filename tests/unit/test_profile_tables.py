"""The py-spy tables and flame graph of ``--profile`` and the ingress helpers of ``--ingress`` (no Ray)."""

from __future__ import annotations

from collections import Counter

from benchmarks import ingress_modes, pyspy
from benchmarks.image_throughput import ingress_ms, without_option

ROUTE = "handle (deployments/gateway/routes/embeddings.py)"
STACKS = Counter(
    {
        ("main (ray/worker.py)", ROUTE, "dumps (json/encoder.py)"): 6,
        ("main (ray/worker.py)", ROUTE): 2,
        ("main (ray/worker.py)", "submit (concurrent/futures/thread.py)"): 2,
    }
)


def test_collapsed_stacks_are_read_back(tmp_path):
    path = tmp_path / "x.collapsed.txt"
    path.write_text("a (x.py);b (y.py) 3\na (x.py) 1\nnot a stack line\n")
    assert pyspy.read_stacks(path) == Counter({("a (x.py)", "b (y.py)"): 3, ("a (x.py)",): 1})


def test_self_time_counts_innermost_frames_only():
    assert pyspy.self_time(STACKS) == [
        ("dumps (json/encoder.py)", 6),
        (ROUTE, 2),
        ("submit (concurrent/futures/thread.py)", 2),
    ]


def test_inclusive_counts_each_frame_once_per_stack_and_own_keeps_mmserve_code():
    assert pyspy.inclusive(STACKS)[:2] == [("main (ray/worker.py)", 10), (ROUTE, 8)]
    assert pyspy.inclusive(STACKS, own=True) == [(ROUTE, 8)]
    recursive = Counter({("f (a.py)", "f (a.py)", "g (b.py)"): 3})
    assert dict(pyspy.inclusive(recursive)) == {"f (a.py)": 3, "g (b.py)": 3}


def test_table_spreads_the_measured_cpu_over_the_samples():
    table = pyspy.table("Gateway", STACKS, requests=10, cpu_ms=5.0, rate=100)
    assert table["sampled_ms_per_request"] == 10.0  # 10 samples at 100 Hz over 10 requests
    top = table["top_self"][0]
    assert (top["share"], top["cpu_ms_per_request"], top["ms_per_request"]) == (0.6, 3.0, 6.0)
    assert "| 1 | 60.0% | 3.0 | 6.00 | `dumps (json/encoder.py)` |" in pyspy.markdown([table])


def test_flame_graph_draws_every_frame_with_its_samples():
    svg = pyspy.svg(STACKS, "Gateway <1>")
    assert svg.startswith("<svg") and "Gateway &lt;1&gt;" in svg
    assert svg.count("<rect") == 4  # main, the route, dumps, submit
    assert f"{ROUTE} (8 samples)" in svg


def test_only_the_named_processes_are_sampled_and_the_gateway_with_gil():
    assert pyspy._target("ray::ServeReplica:bench:Gateway") is True
    assert pyspy._target("ray::ServeReplica:bench:VisionEncoder") is False
    assert pyspy._target("ray::ServeController") is None
    names = ["ray::ServeReplica:b:VisionEncoder", "ray::ServeReplica:b:VisionEncoder"]
    assert pyspy.label(names[0], 42, names) == "b_VisionEncoder_42"


def test_listeners_off_loopback_are_reported():
    rows = [
        {"address": "127.0.0.1:8000", "process": "ray::ProxyActor", "pid": 1},
        {"address": "[::ffff:127.0.0.1]:4000", "process": "raylet", "pid": 2},
        {"address": "0.0.0.0:8404", "process": "haproxy", "pid": 3},
        {"address": "*:9101", "process": "haproxy", "pid": 3},
    ]
    assert [r["address"] for r in ingress_modes.off_loopback(rows)] == ["0.0.0.0:8404", "*:9101"]


def test_the_error_shape_is_recognised():
    assert ingress_modes._shape('{"error": {"type": "x", "message": "y", "param": null}}')
    assert not ingress_modes._shape("<html><body><h1>400 Bad request</h1></body></html>")


def test_ingress_children_get_the_command_line_less_the_mode_list():
    argv = ["--ingress", "proxy", "direct", "--window", "4", "--profile"]
    assert without_option(argv, "--ingress") == ["--window", "4", "--profile"]


def test_ingress_cpu_adds_the_proxy_or_haproxy_and_its_manager():
    ms = {"Gateway": 9.0, "ray::ProxyActor": 0.4, "ray::HAProxyManager": 0.5, "haproxy": 0.6}
    assert ingress_ms(ms) == 1.5


def test_buckets_take_each_stack_once_by_the_first_matching_rule():
    stacks = Counter(
        {
            ("run (ray/replica.py)", "RequestLimits.__call__ (deployments/gateway/limits.py)", "x (a.py)"): 3,
            ("RequestLimits.__call__ (deployments/gateway/limits.py)", "Metric._record (ray/metrics.py)"): 1,
            ("_chain_future (asyncio/futures.py)",): 2,
        }
    )
    assert dict(pyspy.buckets(stacks)) == {
        "mmserve: middlewares and routes (the rest of the app)": 3,
        pyspy.OTHER: 2,
        "metrics (ray.util.metrics)": 1,
    }
