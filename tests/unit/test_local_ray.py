"""The embedded Ray's token file and environment (graphs/local_ray.py), without starting Ray."""
import stat
import subprocess
import sys

import pytest

from graphs import local_ray


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_generates_an_owner_only_token(tmp_path):
    path = tmp_path / "ray" / "auth_token"
    local_ray.ensure_token(path)
    token = path.read_text()
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert len(token) == 64 and int(token, 16) > 0  # 256 random bits, hex
    local_ray.ensure_token(path)
    assert path.read_text() == token  # later starts keep it: clients configured with it go on working


def test_a_readable_token_file_is_tightened(tmp_path):
    path = tmp_path / "auth_token"
    path.write_text("secret")
    path.chmod(0o644)
    local_ray.ensure_token(path)
    assert mode(path) == 0o600
    assert path.read_text() == "secret"


def test_an_empty_token_file_is_refused(tmp_path):
    path = tmp_path / "auth_token"
    path.write_text("\n")
    with pytest.raises(local_ray.PrivateRayError, match="empty"):
        local_ray.ensure_token(path)


def test_prepare_turns_auth_on_and_the_node_ip_to_loopback(tmp_path):
    env = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}
    local_ray.prepare(env)
    assert env["RAY_AUTH_MODE"] == "token"  # an old `RAY_AUTH_MODE=disabled` in the shell does not win
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert mode(tmp_path / "tok") == 0o600
    assert local_ray.read_token(env) == (tmp_path / "tok").read_text()


def test_prepare_shortens_the_proxy_health_check_unless_the_user_set_it(tmp_path):
    env = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}
    local_ray.prepare(env)
    assert env["RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S"] == "1"
    env = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok"), "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "7"}
    local_ray.prepare(env)
    assert env["RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S"] == "7"


def test_prepare_uses_a_token_given_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"RAY_AUTH_TOKEN": "given"}
    local_ray.prepare(env)
    assert "RAY_AUTH_TOKEN_PATH" not in env
    assert not (tmp_path / ".ray").exists()
    assert local_ray.read_token(env) == "given"


def test_the_launcher_and_this_module_import_no_ray():
    """prepare() must be able to run before Ray reads the environment at import."""
    code = "import sys, graphs.local_ray, graphs.launch; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_client_of_this_machine_gets_the_token_and_loopback(tmp_path):
    env = local_ray.client_env({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")})
    assert env == {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                   "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}
