"""The embedded single-machine Ray, private to this machine: every Ray port on 127.0.0.1, token auth on.

Ray's GCS, raylet, worker and agent ports run code for whoever reaches them; with auth off that
is remote code execution for anyone on the network (ShadowRay, CVE-2023-48022). This module
starts the local Ray that ``python -m graphs.launch`` (``make serve``), the tests and the
benchmarks use, so that:

- the node IP is 127.0.0.1, which makes Ray 2.60 bind the GCS, raylet, object manager, core
  workers, dashboard agent (gRPC, HTTP, metrics export), runtime-env agent and the autoscaler's
  and dashboard's metrics servers to loopback (it binds all interfaces for any other node IP).
  ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough: Ray replaces a loopback
  address with the machine's routable one unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
  (despite its name, on Linux too it means "single machine, node IP = loopback");
- ``RAY_AUTH_MODE=token``: every gRPC and HTTP entry point wants the token, which Ray reads
  from ``RAY_AUTH_TOKEN``, else from the file ``RAY_AUTH_TOKEN_PATH`` names, else from
  ``~/.ray/auth_token``. We use the file (the default one unless ``RAY_AUTH_TOKEN_PATH`` names
  another), created at first start with mode 0600, so that ``ray status`` and drivers
  of the same user find it and no process environment carries the token itself. A
  ``RAY_AUTH_TOKEN`` already set is used as is.

Ray's system temp folder (``RAY_TMPDIR``: session folders, logs, sockets) is ``/tmp/mmserve-ray-<uid>``,
mode 0700 (:func:`private_tmp_dir`): Ray makes its own folders 0777 and its logs world-readable.

Nothing here imports Ray at module import, so callers can run :func:`prepare` before Ray is
imported anywhere.
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from graphs import loopback_grpc, ray_startup

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# Ray 2.60: when "0", services.get_node_ip_address() answers 127.0.0.1, so the node IP (and with
# it every bind address) is loopback; read once when `ray` is imported.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Serve's controller replaces a dead HTTP proxy only after three failed health checks; Ray's 10 s
# period left the port closed for about 24 s after a proxy died, a 1 s period about 6 s. A 0.25 s
# period (four tiny actor calls a second; a dead proxy fails them at once, a busy one only by timing
# out) brings it back in about 4 s (issue 22 #7: within 5 s). Set it to override.
# Serve's proxy answers a request whose gateway replica died under it with uvicorn's plain-text 500;
# this callback (Serve's supported hook) wraps the proxy's app in a middleware that answers 503 +
# Retry-After in the error shape instead (deployments/gateway/proxy_errors.py).
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
SERVE_DEFAULTS = {
    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "0.25",
    PROXY_CALLBACK_ENV: "deployments.gateway.proxy_errors:middlewares",
}
# Ray's system temp folder (its default is $TMPDIR or /tmp). Ray makes its own folder in it and every
# session folder below 0777, and writes world-readable logs there; the embedded Ray's goes in a
# folder of its user's, mode 0700, so none of it is reachable by other users whatever modes Ray gives.
TMPDIR_ENV = "RAY_TMPDIR"
# Ray's unix sockets live at <tmp>/ray/session_<date>_<time>_<pid>/sockets/plasma_store: about 75
# bytes below the temp folder, and Linux allows 107 in all.
MAX_TMPDIR_BYTES = 32


class PrivateRayError(RuntimeError):
    """The embedded Ray could not be made private (loopback + token); it is not left running."""


def default_token_path() -> Path:
    """Where Ray itself looks when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""
    return Path.home() / ".ray" / "auth_token"


def token_path(environ: MutableMapping[str, str] = os.environ) -> Path:
    return Path(environ[TOKEN_PATH_ENV]).expanduser() if environ.get(TOKEN_PATH_ENV) else default_token_path()


def ensure_token(path: Path) -> Path:
    """A token file at ``path`` readable by its owner only: created (256 random bits) if missing,
    tightened to 0600 if group or others could read it. Refuses an empty file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        logger.info("generated a Ray auth token in %s (mode 0600)", path)
        return path
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o600)
        logger.warning("%s was mode %o; made it 0600 (a Ray auth token is a password)", path, mode)
    if not path.read_text().strip():
        raise PrivateRayError(f"{path} is empty: delete it to have a new Ray auth token generated")
    return path


def private_dir_name() -> str:
    return f"mmserve-ray-{os.getuid()}"


def ensure_private_dir(path: Path) -> Path:
    """``path`` as a folder of this user's that no one else may enter (0700): created if missing,
    tightened if it is ours but open to others; refused when it is a link, not a folder, or another
    user's (in a shared /tmp they could have made it first, to read what Ray writes)."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PrivateRayError(
            f"{path} is not a folder (a link?): remove it, or set {TMPDIR_ENV} to a private folder"
        )
    if info.st_uid != os.getuid():
        raise PrivateRayError(
            f"{path} belongs to uid {info.st_uid}, who could read the Ray session kept in it: "
            f"remove it, or set {TMPDIR_ENV} to a folder of your own"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        path.chmod(0o700)
        logger.warning("%s was mode %o; made it 0700 (Ray's session logs and sockets live in it)", path, mode)
    return path


def private_tmp_dir(environ: MutableMapping[str, str] = os.environ) -> Path:
    """The embedded Ray's system temp folder: ``mmserve-ray-<uid>`` (0700) in ``RAY_TMPDIR`` if set,
    else in /tmp; a ``RAY_TMPDIR`` that already names such a folder (an earlier :func:`prepare`) is
    kept. Refuses a base too long for Ray's unix socket paths below it."""
    given = environ.get(TMPDIR_ENV)
    if given and Path(given).name == private_dir_name():
        return ensure_private_dir(Path(given))
    folder = Path(given or "/tmp") / private_dir_name()
    if len(str(folder).encode()) > MAX_TMPDIR_BYTES:
        raise PrivateRayError(
            f"{folder} is too long: Ray's unix sockets below it would pass Linux's 107 bytes; "
            f"set {TMPDIR_ENV} to a shorter folder"
        )
    return ensure_private_dir(folder)


def read_token(environ: MutableMapping[str, str] = os.environ) -> str:
    """The token a client of this machine's Ray must present."""
    return environ.get(TOKEN_ENV) or token_path(environ).read_text().strip()


def client_env(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """What another process of this machine (a driver, ``ray status``) needs in
    its environment to reach the embedded Ray: the token, and loopback as its own node IP (else
    it looks for the cluster's raylet at the machine's routable address and finds none)."""
    env = {AUTH_MODE_ENV: "token", SINGLE_MACHINE_ENV: "0"}
    if environ.get(TOKEN_ENV):
        env[TOKEN_ENV] = environ[TOKEN_ENV]
    else:
        env[TOKEN_PATH_ENV] = str(token_path(environ))
    return env


def prepare(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the environment a private local Ray needs (inherited by every Ray process it starts).
    Call it before ``import ray`` where possible; :func:`start` calls it too."""
    previous = environ.get(AUTH_MODE_ENV)
    if previous not in (None, "token"):
        logger.warning("%s=%s ignored: the embedded Ray always runs with token auth", AUTH_MODE_ENV, previous)
    environ[AUTH_MODE_ENV] = "token"
    environ[SINGLE_MACHINE_ENV] = "0"
    for name, value in SERVE_DEFAULTS.items():
        environ.setdefault(name, value)
    environ[TMPDIR_ENV] = str(private_tmp_dir(environ))
    if not environ.get(TOKEN_ENV):
        environ[TOKEN_PATH_ENV] = str(ensure_token(token_path(environ)))


def _align_imported_ray() -> None:
    """If ``ray`` was imported before :func:`prepare`, it read the old environment at import: make
    this process see single-machine mode and token auth too (what Ray's own token-auth default
    does with RayConfig). :func:`start` checks the outcome, so a Ray upgrade that moves these
    fails closed rather than open."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    if "ray._raylet" in sys.modules:
        from ray._raylet import Config

        Config.initialize("")


def _check_private(context: Any) -> None:
    from ray._raylet import AuthenticationMode, get_authentication_mode

    node_ip = context.address_info.get("node_ip_address")
    if node_ip != LOOPBACK:
        raise PrivateRayError(
            f"the local Ray's node IP is {node_ip}, not {LOOPBACK}: its ports would listen on every interface"
        )
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        raise PrivateRayError("the local Ray started without token authentication")


def start(*, metrics_port: int | None = None, **init_kwargs: Any):
    """Start the embedded single-machine Ray, private to this machine; returns ray.init's context.

    ``metrics_port`` is Ray's Prometheus export port (``_metrics_export_port``), on 127.0.0.1; Ray
    picks one when it is None (``context.address_info["metrics_export_port"]``). A node that does not
    come up in Ray's 30 s is reported, cleaned up and started once more (graphs/ray_startup.py).
    Other keyword arguments go to ``ray.init`` (num_cpus, num_gpus, log_to_driver...)."""
    if metrics_port is not None:
        _check_free(metrics_port, "metrics")
        init_kwargs["_metrics_export_port"] = metrics_port
    init_kwargs["runtime_env"] = _with_loopback_hook(init_kwargs.get("runtime_env"))
    return ray_startup.start_retrying_once(
        lambda: _init_private(stop, include_dashboard=False, **init_kwargs),
        undo=_undo_failed_start,
        error=PrivateRayError,
    )


def _with_loopback_hook(runtime_env: dict | None) -> dict:
    """``runtime_env`` (copied: Ray edits what it is given) with the hook that keeps replica gRPC
    servers on loopback (graphs/loopback_grpc.py), unless it names a setup hook of its own."""
    runtime_env = copy.deepcopy(runtime_env or {})
    if runtime_env.get("worker_process_setup_hook", loopback_grpc.HOOK) != loopback_grpc.HOOK:
        logger.warning(
            "runtime_env names its own worker_process_setup_hook: Serve's replica gRPC servers "
            "will listen on every interface (token-guarded); call %s from your hook to keep them "
            "on loopback",
            loopback_grpc.HOOK,
        )
    runtime_env.setdefault("worker_process_setup_hook", loopback_grpc.HOOK)
    return runtime_env


def _check_free(port: int, what: str) -> None:
    """Refuse a port something already listens on: Ray's raylet dies on it, and ``ray.init`` reports only
    that the node timed out."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to Ray too
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise PrivateRayError(
                f"the {what} port {port} on {LOOPBACK} is taken ({exc.strerror}): choose another"
            ) from None


def _undo_failed_start(processes: list) -> None:
    """Stop what a timed-out ``ray.init`` left: the node's own processes."""
    import ray

    ray.shutdown()
    ray_startup.stop(processes)


def connect(address: str, **init_kwargs: Any):
    """Connect this process, as a driver, to a private Ray already running on this machine (a
    multi-node test cluster, or ``ray start`` with the environment :func:`client_env` gives): the
    same environment and the same checks as :func:`start`. Disconnect with ``ray.shutdown()``."""
    return _init_private(_disconnect, address=address, **init_kwargs)


def _init_private(leave: Callable[[Any], None], **init_kwargs: Any):
    """``ray.init`` in the private environment, checked: loopback node IP and token auth, else
    ``leave(context)`` undoes it and :class:`PrivateRayError` is raised."""
    prepare()
    _align_imported_ray()
    import ray

    if ray.is_initialized():
        raise PrivateRayError("Ray is already initialised in this process; stop it first")
    context = ray.init(**init_kwargs)
    try:
        _check_private(context)
    except PrivateRayError:
        leave(context)
        raise
    return context


def _disconnect(_context) -> None:
    import ray

    ray.shutdown()


def stop(context) -> None:
    """Shut the local Ray down and delete its session dir (logs, sockets) in the private temp folder."""
    import ray

    ray.shutdown()
    session_dir = context.address_info.get("session_dir")
    if session_dir:
        shutil.rmtree(session_dir, ignore_errors=True)
        latest = Path(session_dir).parent / "session_latest"
        if latest.is_symlink() and os.readlink(latest) == session_dir:
            latest.unlink(missing_ok=True)
