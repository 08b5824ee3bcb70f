"""The launcher's honesty about the config file (Ray-free: nothing here may start Ray)."""

from __future__ import annotations

import pytest
import yaml

from graphs import launch


def _config(tmp_path, **app) -> str:
    raw = yaml.safe_load(open("serve_config.yaml"))
    raw["applications"][0].update(app)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("the launcher started Ray for a config it should refuse")

    monkeypatch.setattr(launch.local_ray, "start", refuse)


def test_a_deployments_section_is_refused_before_ray_starts(tmp_path, capsys, no_ray):
    path = _config(tmp_path, deployments=[{"name": "VisionEncoder", "num_replicas": 3}])
    assert launch.main([path]) == launch.EXIT_UNSUPPORTED
    err = capsys.readouterr().err
    assert "'deployments:' section" in err and "'args'" in err and "mmserve" in err


def test_runtime_env_goes_to_ray_init(tmp_path, monkeypatch):
    seen = {}

    def start(**kwargs):  # the launcher's private local Ray; ray.init gets the same keywords
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(launch.local_ray, "start", start)
    env = {"working_dir": ".", "env_vars": {"MMSERVE_X": "1"}}
    with pytest.raises(RuntimeError, match="stop here"):
        launch.main([_config(tmp_path, runtime_env=env)])
    assert seen["runtime_env"] == env


def test_the_shipped_configs_are_accepted():
    for path in ["serve_config.yaml", "configs/gpu_cluster.yaml"]:
        launch.job_runtime_env(yaml.safe_load(open(path)))


def test_different_runtime_envs_per_application_are_refused():
    raw = yaml.safe_load(open("serve_config.yaml"))
    second = dict(
        raw["applications"][0], name="other", route_prefix="/other", runtime_env={"env_vars": {"A": "1"}}
    )
    raw["applications"].append(second)
    with pytest.raises(launch.UnsupportedConfig, match="different runtime_env"):
        launch.job_runtime_env(raw)


def test_a_taken_metrics_port_is_a_clear_message_not_a_ray_timeout(tmp_path, capsys, monkeypatch):
    import socket

    monkeypatch.setattr(launch.local_ray, "_init_private", lambda *a, **k: pytest.fail("ray.init was called"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert launch.main([_config(tmp_path), "--metrics-port", str(port)]) == launch.EXIT_NO_RAY
    assert f"mmserve: the metrics port {port} on 127.0.0.1 is taken" in capsys.readouterr().err
