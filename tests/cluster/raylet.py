"""A second raylet joining a Ray cluster on 127.0.0.1: what ``ray start --address ADDR --block``
does, for the one case Ray 2.60's CLI refuses. ``ray start --address`` will not join while
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the setting that keeps a node IP of 127.0.0.1), and with it
``1`` it rewrites both 127.0.0.1 addresses (the head's and its own) to the machine's routable one.
Across machines, ``ray start --address <head>:<port>`` is the command; on one machine, this is.

    python tests/cluster/raylet.py --address 127.0.0.1:6380 --num-cpus 2 --resources '{"models": 8}'

Run it with the environment the head got (token auth, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``;
``graphs.local_ray.client_env``). It imports only Ray, so it runs where mmserve cannot be
imported; SIGTERM or SIGINT stops the node and every process it started, as ``--block`` does.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", required=True, help="the head's GCS, host:port")
    parser.add_argument("--num-cpus", type=float, default=1)
    parser.add_argument("--num-gpus", type=float, default=0)
    parser.add_argument("--resources", type=json.loads, default={})
    parser.add_argument("--dashboard-agent-listen-port", type=int, default=None, help="default: a free one")
    args = parser.parse_args(argv)

    import ray._private.node
    from ray._private.parameter import RayParams

    params = RayParams(
        gcs_address=args.address,
        node_ip_address="127.0.0.1",
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        resources=args.resources,
        node_manager_port=0,
        min_worker_port=0,
        max_worker_port=0,
        include_log_monitor=False,
        dashboard_agent_listen_port=args.dashboard_agent_listen_port,
    )
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"raylet {node.node_id} joined {args.address} at 127.0.0.1", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)


if __name__ == "__main__":
    main()
