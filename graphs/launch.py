"""Run a Serve config file on an embedded local Ray, failing fast on what cannot be scheduled.

    python -m graphs.launch serve_config.yaml

``serve run CONFIG`` would log the resource guard's error but keep waiting on a failed app; this
launcher builds each application in-process (so ``build_app``'s validation and the guard raise
here), exits with status 2 and the message, and otherwise serves until interrupted. For clusters
use ``serve deploy``: the guard then marks the app DEPLOY_FAILED with the same message.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import yaml
from pydantic import ValidationError

from graphs import local_ray
from graphs.guard import UnschedulableError

EXIT_UNSCHEDULABLE = 2


def load_config(path: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not config.get("applications"):
        raise SystemExit(f"{path}: not a Serve config file (no 'applications')")
    return config


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus scrape port (/metrics)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    # Private to this machine: every Ray port on 127.0.0.1 and token auth on (see graphs/local_ray.py).
    context = local_ray.start(metrics_port=args.metrics_port)
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
