"""The KubeRay manifest (configs/k8s/rayservice.yaml): rendered from configs/gpu_cluster.yaml, a
valid Serve config with valid app args, and hostable by the node shapes its worker groups declare.
Ray-free: nothing here starts Ray (the Serve schema is only imported)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from config.args import AppArgs
from graphs import guard
from graphs.app import demands
from tools import render

MANIFEST = Path("configs/k8s/rayservice.yaml")
ENV = {"MILVUS_URI": "http://milvus.mmserve.svc:19530", "MILVUS_TOKEN": ""}


def _docs() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def _service() -> dict:
    return _docs()["RayService"]


def _serve_config() -> dict:
    return yaml.safe_load(_service()["spec"]["serveConfigV2"])


def _app_args(env: dict = ENV, monkeypatch=None) -> AppArgs:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return AppArgs.model_validate(_serve_config()["applications"][0]["args"])


# --- rendered, never drifting -----------------------------------------------------------------


def test_embedded_serve_config_is_the_rendered_one():
    assert MANIFEST.read_text() == render.rendered(), "run `mmserve render k8s`"


def test_an_edit_to_either_side_is_caught(tmp_path):
    source = tmp_path / "gpu.yaml"
    source.write_text(Path("configs/gpu_cluster.yaml").read_text().replace("max_heads: 16", "max_heads: 8"))
    assert render.rendered(source, MANIFEST) != MANIFEST.read_text()
    edited = tmp_path / "rayservice.yaml"
    edited.write_text(MANIFEST.read_text().replace("max_heads: 16", "max_heads: 8"))
    with pytest.raises(render.RenderError, match="not rendered from"):
        render.render_k8s(render.SOURCE, edited, check=True)
    render.render_k8s(render.SOURCE, edited)  # re-rendering repairs it, touching nothing else
    assert edited.read_text() == MANIFEST.read_text()


def test_render_rewrites_host_paths_and_milvus_to_the_pods():
    args = _serve_config()["applications"][0]["args"]
    assert args["gateway"]["settings"]["tenants_file"] == render.TENANTS_FILE
    assert args["fusion"]["store"].startswith(render.MODEL_STORE + "/")
    assert (args["search"]["uri"], args["search"]["token"]) == ("${MILVUS_URI}", "${MILVUS_TOKEN}")
    source = yaml.safe_load(Path("configs/gpu_cluster.yaml").read_text())["applications"][0]["args"]
    assert _docs()["ConfigMap"]["data"]["MILVUS_URI"] == source["search"]["uri"]


def test_a_milvus_lite_source_is_refused(tmp_path):
    source = tmp_path / "gpu.yaml"
    text = Path("configs/gpu_cluster.yaml").read_text()
    source.write_text(
        re.sub(r"uri: \S+", "uri: /data/search.db", text).replace(
            "max_replicas: 4, target_ongoing_requests: 16}\n      fusion", "max_replicas: 1}\n      fusion"
        )
    )
    with pytest.raises(render.RenderError, match="Milvus server"):
        render.pod_serve_config(source)


def test_cli_render_check(capsys):
    from tools.cli import main

    assert main(["render", "k8s", "--check"]) == 0


# --- a valid Serve config with valid app args -------------------------------------------------


def test_serve_config_v2_validates_as_a_serve_config():
    schema = ServeDeploySchema.model_validate(_serve_config())
    assert [a.import_path for a in schema.applications] == ["graphs.app:build_app"]
    assert schema.http_options.port == 8000


def test_app_args_validate_with_the_pod_environment(monkeypatch):
    args = _app_args(monkeypatch=monkeypatch)
    assert args.search.uri == ENV["MILVUS_URI"] and args.search.autoscaling.max_replicas > 1
    assert args.gateway.settings.tenants_file is not None


def test_an_unset_milvus_uri_is_an_error_not_a_local_file(monkeypatch):
    monkeypatch.delenv("MILVUS_URI", raising=False)
    monkeypatch.setenv("MILVUS_TOKEN", "")
    with pytest.raises(ValueError, match="MILVUS_URI is not set"):
        AppArgs.model_validate(_serve_config()["applications"][0]["args"])


# --- the cluster's shape -----------------------------------------------------------------------

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _bytes(quantity: str) -> float:
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity)


def _node(group: dict) -> dict[str, float]:
    """The Ray resources one pod of a group declares: rayStartParams, else its container limits."""
    params = group["rayStartParams"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    return {
        "CPU": float(params.get("num-cpus", limits["cpu"])),
        "GPU": float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))),
        "memory": _bytes(limits["memory"]),
    }


def _groups() -> dict[str, dict]:
    cluster = _service()["spec"]["rayClusterConfig"]
    return {g["groupName"]: g for g in cluster["workerGroupSpecs"]}


def _nodes(count: str) -> list[dict[str, float]]:
    head = _node(_service()["spec"]["rayClusterConfig"]["headGroupSpec"])
    return [head] + [_node(g) for g in _groups().values() for _ in range(g[count])]


def _at_max(args: AppArgs) -> list[guard.ReplicaDemand]:
    """Every deployment at its autoscaling maximum."""
    return [
        guard.ReplicaDemand(d.deployment, d.per_replica, deployment.autoscaling.max_replicas)
        for d, deployment in zip(demands(args), args.deployments().values())
    ]


def test_groups_declare_what_the_issue_asks():
    cluster = _service()["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True and cluster["authOptions"] == {"mode": "token"}
    pinned = re.search(r'"ray\[serve\]==([\d.]+)"', Path("pyproject.toml").read_text()).group(1)
    assert cluster["rayVersion"] == pinned
    gpu = _groups()["gpu"]
    resources = gpu["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["rayStartParams"]["num-gpus"] == "1"
    for group in _groups().values():
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_min_replicas_fit_the_min_nodes(monkeypatch):
    """The autoscaler adds nodes for the headroom, so only the initial replicas must fit the min nodes."""
    at_min = [dataclasses.replace(d, max_replicas=0) for d in demands(_app_args(monkeypatch=monkeypatch))]
    assert guard.problems(at_min, _nodes("minReplicas")) == []


def test_max_replicas_fit_the_max_nodes(monkeypatch):
    args = _app_args(monkeypatch=monkeypatch)
    at_max = _at_max(args)
    assert {d.deployment: d.min_replicas for d in at_max}["AudioModel"] == 4
    assert guard.problems(at_max, _nodes("maxReplicas")) == []
    assert guard.problems(at_max, _nodes("minReplicas")) != []  # the autoscaler's nodes are needed


def test_a_deployment_bigger_than_any_group_is_named(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    raw = _serve_config()["applications"][0]["args"]
    raw["audio"]["num_gpus"] = 2
    raw["fusion"]["num_cpus"] = 8
    found = guard.problems(demands(AppArgs.model_validate(raw)), _nodes("maxReplicas"))
    assert any("'AudioModel'" in f and "GPU=2 (largest node has 1)" in f for f in found)
    assert any("'FusionHead'" in f and "CPU=8 (largest node has 4)" in f for f in found)


# --- what reaches the pods from outside ----------------------------------------------------------


def test_network_policy_admits_only_the_serve_port_from_outside():
    policy = _docs()["NetworkPolicy"]["spec"]
    labels = policy["podSelector"]["matchLabels"]
    cluster = _service()["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert group["template"]["metadata"]["labels"].items() >= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    for rule in policy["ingress"]:
        inside = rule.get("from") and all("podSelector" in p for p in rule["from"])
        ports = {p["port"] for p in rule.get("ports", [])}
        assert inside or ports == {8000}, rule


def test_every_pod_mounts_the_tenants_secret_and_the_store():
    cluster = _service()["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        spec = group["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert (
            volumes[mounts[str(Path(render.TENANTS_FILE).parent)]]["secret"]["secretName"]
            == "mmserve-tenants"
        )
        assert (
            volumes[mounts[render.MODEL_STORE]]["persistentVolumeClaim"]["claimName"]
            == _docs()["PersistentVolumeClaim"]["metadata"]["name"]
        )
        env = spec["containers"][0]
        assert {"configMapRef": {"name": _docs()["ConfigMap"]["metadata"]["name"]}} in env["envFrom"]
        assert any(e["name"] == "MILVUS_TOKEN" for e in env["env"])
