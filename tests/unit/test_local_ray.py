"""The embedded Ray's token file and environment (graphs/local_ray.py), without starting Ray."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

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
    assert env["RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S"] == "0.25"
    env = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok"), "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "7"}
    local_ray.prepare(env)
    assert env["RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S"] == "7"


def test_prepare_names_the_proxy_callback_that_exists():
    from deployments.gateway import proxy_errors

    env = {"RAY_AUTH_TOKEN": "given"}
    local_ray.prepare(env)
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == proxy_errors.CALLBACK


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
    assert env == {
        "RAY_AUTH_MODE": "token",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok"),
    }


TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of the raylet "
    "failed to startup or the GCS has become overloaded."
)


@pytest.fixture
def failing_starts(monkeypatch, tmp_path):
    """local_ray.start with ray.init replaced: each call makes a Ray session folder under ``tmp_path``
    (and another Ray of this machine makes one of its own meanwhile); it raises the given errors in
    turn, its raylet log naming the cause, then succeeds. The node found and what was undone are
    recorded instead of killing anything."""
    calls, undone = [], []
    current = {}

    def arrange(*errors):
        queue = list(errors)

        def init(leave, **kwargs):
            calls.append(kwargs)
            (tmp_path / f"session_2026-01-01_00-00-0{len(calls)}_000000_99").mkdir()  # not ours
            session = tmp_path / f"session_2026-01-01_00-00-0{len(calls)}_000000_1"
            (session / "logs").mkdir(parents=True)
            current["session"] = session
            if queue:
                (session / "logs" / "raylet.out").write_text(
                    "starting\nCheck failed: bind: Address already in use\n"
                )
                raise queue.pop(0)
            return SimpleNamespace(address_info={"session_dir": str(session)})

        monkeypatch.setattr(local_ray, "_init_private", init)
        monkeypatch.setattr(
            local_ray.ray_startup, "own_node", lambda before: (current["session"], [f"node {len(calls)}"])
        )
        monkeypatch.setattr(local_ray, "_undo_failed_start", lambda processes: undone.extend(processes))
        return calls, undone

    return arrange, tmp_path


def _session_names(root):
    return sorted(p.name for p in root.glob("session_*"))


def test_a_node_that_times_out_once_is_reported_undone_and_started_again(failing_starts, caplog):
    arrange, root = failing_starts
    calls, undone = arrange(TIMEOUT)
    context = local_ray.start(num_cpus=1)
    assert len(calls) == 2 and undone == ["node 1"]
    assert "Address already in use" in caplog.text  # the raylet's own words reach the log
    # the failed start's folder is gone; the live one and the other Ray's stay
    assert _session_names(root) == [
        "session_2026-01-01_00-00-01_000000_99",
        Path(context.address_info["session_dir"]).name,
        "session_2026-01-01_00-00-02_000000_99",
    ]


def test_a_node_that_times_out_twice_fails_with_what_it_logged(failing_starts):
    arrange, root = failing_starts
    calls, undone = arrange(TIMEOUT, TIMEOUT)
    with pytest.raises(local_ray.PrivateRayError, match="Address already in use"):
        local_ray.start(num_cpus=1)
    assert len(calls) == 2 and undone == ["node 1", "node 2"]
    assert _session_names(root) == [
        "session_2026-01-01_00-00-01_000000_99",
        "session_2026-01-01_00-00-02_000000_99",
    ]


def test_the_failed_node_is_found_among_this_processs_children_only(tmp_path):
    """own_node names the session of the node this process started (its new direct children name it
    in their command lines), not one a grandchild runs, as a launcher subprocess's Ray would, nor one
    this process ran before."""
    import psutil

    from graphs import ray_startup

    ours, theirs = (
        tmp_path / "session_2026-01-01_00-00-00_000000_1",
        tmp_path / "session_2026-01-01_00-00-00_000000_2",
    )
    sleep = "import time; time.sleep(60)"
    before = ray_startup.child_pids()  # e.g. the session's own Ray when the whole suite runs
    node = subprocess.Popen([sys.executable, "-c", sleep, f"--session-dir={ours}"])
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time; subprocess.Popen([sys.executable, "
            f"'-c', {sleep!r}, '--log-dir=' + os.environ['THEIRS']]); time.sleep(60)",
        ],
        env={**os.environ, "THEIRS": f"{theirs}/logs"},
    )  # the launcher's own args name none
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(launcher.pid).children()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        session, processes = ray_startup.own_node(before)
        assert session == ours and [p.pid for p in processes] == [node.pid]
        assert ray_startup.stop(processes) == [node.pid] and node.wait(5) is not None
        assert launcher.poll() is None  # not touched
    finally:
        for proc in (node, launcher):
            proc.kill()


def test_other_start_errors_are_not_retried(failing_starts):
    arrange, _ = failing_starts
    calls, undone = arrange(ValueError("bad num_cpus"))
    with pytest.raises(ValueError):
        local_ray.start(num_cpus=-1)
    assert len(calls) == 1 and not undone


def test_a_metrics_port_in_use_is_refused_before_ray_starts(monkeypatch):
    import socket

    monkeypatch.setattr(local_ray, "_init_private", lambda *a, **k: pytest.fail("ray.init was called"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(
            local_ray.PrivateRayError, match=f"metrics port {taken.getsockname()[1]} .* taken"
        ):
            local_ray.start(metrics_port=taken.getsockname()[1])


def test_wildcard_grpc_binds_become_loopback_binds():
    from graphs.loopback_grpc import loopback_address

    assert loopback_address("[::]:0") == "127.0.0.1:0"
    assert loopback_address("0.0.0.0:5000") == "127.0.0.1:5000"
    assert loopback_address("10.0.0.7:5000") == "10.0.0.7:5000"  # a chosen address is left alone


def test_the_embedded_ray_gets_the_loopback_hook_and_the_callers_runtime_env_is_left_alone(caplog):
    from graphs import loopback_grpc

    given = {"env_vars": {"A": "1"}}
    env = local_ray._with_loopback_hook(given)
    assert env == {"env_vars": {"A": "1"}, "worker_process_setup_hook": loopback_grpc.HOOK}
    env["env_vars"]["B"] = "2"  # what Ray does to the dict it gets
    assert given == {"env_vars": {"A": "1"}}
    theirs = local_ray._with_loopback_hook({"worker_process_setup_hook": "mine.setup"})
    assert theirs["worker_process_setup_hook"] == "mine.setup" and "every interface" in caplog.text


@pytest.fixture
def short_tmp():
    """A folder short enough for Ray's socket paths below it (pytest's tmp_path is not)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="mr", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def test_the_embedded_rays_temp_folder_is_its_users_alone(short_tmp, tmp_path):
    """Ray makes its folders 0777 and its logs world-readable: they live in a 0700 folder of ours."""
    env = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok"), "RAY_TMPDIR": str(short_tmp)}
    local_ray.prepare(env)
    folder = Path(env["RAY_TMPDIR"])
    assert folder == short_tmp / f"mmserve-ray-{os.getuid()}"
    assert mode(folder) == 0o700 and folder.stat().st_uid == os.getuid()
    local_ray.prepare(env)  # the conftest, then start(): the same folder, not one inside it
    assert env["RAY_TMPDIR"] == str(folder)


def test_an_open_temp_folder_is_closed_and_a_foreign_one_refused(short_tmp):
    tmp_path = short_tmp
    folder = tmp_path / f"mmserve-ray-{os.getuid()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    local_ray.private_tmp_dir({"RAY_TMPDIR": str(tmp_path)})
    assert mode(folder) == 0o700
    folder.rmdir()
    folder.symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # someone's link in a shared /tmp
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(local_ray.PrivateRayError, match="not a folder"):
        local_ray.private_tmp_dir({"RAY_TMPDIR": str(tmp_path)})
    if os.getuid() == 0:  # made first by another user
        folder.unlink()
        folder.mkdir(mode=0o700)
        os.chown(folder, 4242, 4242)
        with pytest.raises(local_ray.PrivateRayError, match="belongs to uid 4242"):
            local_ray.private_tmp_dir({"RAY_TMPDIR": str(tmp_path)})


def test_a_temp_folder_too_long_for_rays_sockets_is_refused(tmp_path):
    with pytest.raises(local_ray.PrivateRayError, match="107 bytes"):
        local_ray.private_tmp_dir({"RAY_TMPDIR": "/tmp/" + "x" * 40})
    assert not Path("/tmp/" + "x" * 40).exists()


def test_a_failed_worker_nodes_folder_is_kept_because_it_is_the_heads(monkeypatch, tmp_path):
    """A worker node added to a test cluster (tests/cluster) writes into the head's session folder: a
    retried worker start must not remove it."""
    from graphs import ray_startup

    session = tmp_path / "session_2026-01-01_00-00-01_000000_1"
    (session / "logs").mkdir(parents=True)
    monkeypatch.setattr(ray_startup, "own_node", lambda before: (session, ["worker node"]))
    attempts, undone = [], []

    def start():
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise TIMEOUT
        return "node"

    node = ray_startup.start_retrying_once(start, undo=undone.extend, remove_failed_session=False)
    assert (node, attempts, undone) == ("node", [0, 1], ["worker node"])
    assert session.is_dir()
