"""The dashboards and alerts in configs/observability/ are checked against the code and with the real
tools: every metric a query names is one deployments/metrics.py defines (so renaming a metric fails
here), and Debian's promtool checks the rules and runs their unit tests. No skip: without promtool
this fails (``make test-deps`` installs Debian's ``prometheus`` package, which has it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deployments import metrics
from models.errors import DeadlineExceeded, Forbidden, Overloaded, Throttled, Unauthorized

HERE = Path(__file__).resolve().parents[2] / "configs" / "observability"
DASHBOARD = HERE / "grafana-dashboard.json"
ALERTS = HERE / "alerts.yml"
NAME = re.compile(r"\b(ray_[a-z0-9_]+)")


def _exprs(panels: list) -> list[str]:
    found = []
    for panel in panels:
        found += [target["expr"] for target in panel.get("targets", [])]
        found += _exprs(panel.get("panels", []))
    return found


def _dashboard_exprs() -> list[str]:
    return _exprs(json.loads(DASHBOARD.read_text())["panels"])


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (make test-deps)")
    return found


def test_every_dashboard_query_names_metrics_the_code_defines():
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    unknown = {name for expr in exprs for name in NAME.findall(expr)} - metrics.exported_names()
    assert not unknown, f"the dashboard queries metrics no code defines: {sorted(unknown)}"


def test_every_metric_the_code_defines_is_on_the_dashboard():
    shown = {name for expr in _dashboard_exprs() for name in NAME.findall(expr)}
    missing = [
        name
        for name in metrics.METRICS
        if not any(s == metrics.PREFIX + name or s.startswith(metrics.PREFIX + name + "_") for s in shown)
    ]
    assert not missing, f"metrics no dashboard panel shows: {missing}"


def test_every_alert_expression_names_metrics_the_code_defines():
    names = {name for expr in _rule_exprs() for name in NAME.findall(expr)}
    assert names and not names - metrics.exported_names(), sorted(names - metrics.exported_names())


def test_dashboard_panels_have_unique_ids_titles_and_the_datasource_variable():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_promtool_checks_the_rules():
    done = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_rule_tests_fire_each_alert_and_leave_healthy_series_quiet():
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tests = yaml.safe_load((HERE / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if not case.get("exp_alerts")
    }
    assert fired == alerts, f"alerts no test fires: {sorted(alerts - fired)}"
    # healthy series sit beside the firing ones too (the alert lists only the unhealthy label set)
    assert {"MMServeErrorBudgetFastBurn", "MMServeNoReadyReplica"} <= quiet
    done = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yml"], cwd=HERE, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (Overloaded("at capacity"), "budget"),
        (DeadlineExceeded("late"), "deadline"),
        (Throttled("slow down"), "tenant_rate"),
        (Throttled("too many", reason="tenant_concurrency"), "tenant_concurrency"),
        (Throttled("bad keys", reason="auth"), "auth"),
        (Unauthorized("no key"), "auth"),
        (Forbidden("disabled"), "auth"),
        (ValueError("not a refusal"), None),
    ],
)
def test_refusal_reasons(error, reason):
    assert metrics.refusal_reason(error) == reason


def test_serve_back_pressure_is_queue_full_and_a_lost_replica_no_refusal():
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    assert (
        metrics.refusal_reason(BackPressureError(num_queued_requests=3, max_queued_requests=2))
        == "queue_full"
    )
    assert metrics.refusal_reason(ActorDiedError()) is None
    assert set(metrics.REFUSAL_REASONS) == {
        "budget",
        "queue_full",
        "deadline",
        "tenant_rate",
        "tenant_concurrency",
        "auth",
    }


def test_batch_arrivals_give_each_call_its_wait_and_stay_bounded():
    arrivals = metrics.BatchArrivals(capacity=3)
    arrivals.arrived("a", 1.0)
    arrivals.arrived("a", 2.0)  # one request entering the batch twice
    arrivals.arrived("b", 4.0)
    assert arrivals.waited(["a", "b", "unknown"], 5.0) == [4.0, 1.0]
    assert arrivals.waited(["a"], 6.0) == [4.0]
    assert arrivals.waited(["a", "b"], 7.0) == []
    for key in "wxyz":
        arrivals.arrived(key, 1.0)
    assert arrivals.waited(["w"], 2.0) == []  # forgotten: over capacity, oldest first
    assert arrivals.waited(["z"], 2.0) == [1.0]


def test_metric_names_follow_prometheus_conventions():
    for name, spec in metrics.METRICS.items():
        assert name.startswith("mmserve_")
        if spec.kind == "counter":
            assert name.endswith("_total"), name
        if spec.kind == "histogram" and name != "mmserve_batch_size":
            assert name.endswith("_seconds"), name
        assert not {"request_id", "key", "api_key"} & set(spec.labels), name


def test_a_timed_batch_method_is_still_a_method_to_serve():
    """Serve finds a batched method's ``self`` through ``__wrapped__``; the timing wrapper keeps it,
    and keeps the setters ``reconfigure`` calls."""
    from ray import serve
    from ray.serve._private.utils import extract_self_if_method_call

    async def _embed_batch(self, items: list) -> list:
        return items

    class Replica:
        pass

    Replica._embed_batch = metrics.timed_batch(serve.batch(_embed_batch))
    replica = Replica()
    assert extract_self_if_method_call([replica, 1], _embed_batch) is replica
    assert callable(replica._embed_batch.set_max_batch_size)
    assert callable(replica._embed_batch.set_batch_wait_timeout_s)


def test_a_handle_calls_labels_are_strings_ray_accepts():
    """A DeploymentHandle answers an unknown attribute (``method_name``) with another handle: a tag
    value Ray refuses, so queue waits were never recorded until the labels came from its options."""
    from types import SimpleNamespace

    class Handle:  # DeploymentHandle's shape (a real one needs a running Serve)
        deployment_name = "VisionEncoder"

        def __init__(self, method_name: str = "__call__") -> None:
            self.handle_options = SimpleNamespace(method_name=method_name)

        def __getattr__(self, name: str) -> Handle:
            return Handle(name)

    method = Handle().embed
    assert not isinstance(method.method_name, str)  # the trap
    assert metrics.call_labels(method) == {"target": "VisionEncoder", "method": "embed", "modality": "image"}
    assert metrics.call_labels(object()) == {"target": "?", "method": "?", "modality": "other"}
