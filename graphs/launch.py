"""Run a Serve config file on an embedded local Ray, failing fast on what cannot be scheduled.

    python -m graphs.launch serve_config.yaml

``serve run CONFIG`` would log the resource guard's error but keep waiting on a failed app; this
launcher builds each application in-process (so ``build_app``'s validation and the guard raise
here), exits with status 2 and the message, and otherwise serves until interrupted. For clusters
use ``serve deploy``: the guard then marks the app DEPLOY_FAILED with the same message.
The config's ``runtime_env`` (working_dir, py_modules, env_vars) becomes the job's, for every
worker; a ``deployments:`` section is refused (options belong in ``args``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from config.serve_file import load_serve_config
from config.tracing import TracingConfig, with_tracing
from graphs import local_ray
from graphs.guard import UnschedulableError

EXIT_UNSCHEDULABLE = 2
EXIT_UNSUPPORTED = 2
EXIT_NO_RAY = 3


class UnsupportedConfig(ValueError):
    """The config names something this launcher would otherwise silently ignore."""


def job_runtime_env(config: dict) -> dict | None:
    """What the launcher honours of the config beyond ``args``: refuses a ``deployments:``
    section (the options live in ``args``, where the resource guard checks them), and returns the
    applications' ``runtime_env`` (working_dir, py_modules, env_vars...) for ``ray.init``, with the
    file's ``tracing_config`` as the variables every Serve process reads (``config.tracing``). One
    driver runs every application, so they must share it."""
    for app in config["applications"]:
        if app.get("deployments"):
            raise UnsupportedConfig(
                f"application '{app.get('name')}' has a 'deployments:' section, which mmserve does not "
                "apply: set resources, autoscaling and limits per modality in its 'args' (README "
                '"Configuration"), where the resource guard checks them'
            )
    envs = [app.get("runtime_env") or {} for app in config["applications"]]
    if any(env != envs[0] for env in envs):
        raise UnsupportedConfig(
            "the applications have different runtime_env; the launcher runs them "
            "in one Ray job, so give them the same one (or use `serve deploy`)"
        )
    tracing = TracingConfig.model_validate(config.get("tracing_config") or {})
    return with_tracing(envs[0] or None, tracing)


def deploy(config: dict) -> None:
    """Build every application first (validation and the guard raise here, before anything
    starts), then start Serve with the file's HTTP options and run them."""
    import importlib

    from ray import serve

    built = []
    for app in config["applications"]:
        module, _, attr = app["import_path"].partition(":")
        built.append((app, getattr(importlib.import_module(module), attr)(app.get("args") or {})))
    serve.start(http_options=config.get("http_options"), proxy_location=config.get("proxy_location"))
    for app, application in built:
        serve.run(application, name=app["name"], route_prefix=app.get("route_prefix", "/"))


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus scrape port (/metrics)")
    args = parser.parse_args(argv)
    config = load_serve_config(args.config).raw
    try:
        runtime_env = job_runtime_env(config)
    except (UnsupportedConfig, ValidationError) as exc:
        print(f"mmserve: {args.config}: {exc}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    # Private to this machine: every Ray port on 127.0.0.1 and token auth on (see graphs/local_ray.py).
    try:
        context = local_ray.start(metrics_port=args.metrics_port, runtime_env=runtime_env)
    except local_ray.PrivateRayError as exc:  # a taken port, or a node that would not start
        print(f"mmserve: {exc}", file=sys.stderr)
        return EXIT_NO_RAY
    from ray import serve

    try:
        deploy(config)
        print("mmserve is serving; Ctrl-C to stop", flush=True)
        _wait_for_signal()
        return 0
    except (UnschedulableError, ValidationError) as exc:
        print(f"mmserve: {exc}", file=sys.stderr)
        return EXIT_UNSCHEDULABLE
    finally:
        serve.shutdown()
        local_ray.stop(context)


if __name__ == "__main__":
    sys.exit(main())
