"""Keep Serve's replica gRPC servers on loopback in the embedded, single-machine Ray.

Ray Serve 2.60 starts a gRPC server in every replica for inter-deployment calls and binds it to
``[::]:0``, every interface, whatever the node IP (``serve/_private/replica.py``,
``_on_initialized``); no setting moves it. Ray's token interceptor guards it, but the embedded
default is meant to listen on nothing but loopback. :func:`install`, Ray's
``worker_process_setup_hook`` for the embedded Ray (:func:`graphs.local_ray.start`), runs in each
worker process before any replica starts and makes such a wildcard bind a 127.0.0.1 bind. On a
real cluster the hook is not installed: there replicas on other nodes must reach each other.
"""

from __future__ import annotations

import sys

HOOK = "graphs.loopback_grpc.install"
WILDCARDS = ("[::]", "0.0.0.0")
LOOPBACK = "127.0.0.1"


def loopback_address(address: str) -> str:
    """``[::]:0`` -> ``127.0.0.1:0``; any other address as it is."""
    host, _, port = address.rpartition(":")
    return f"{LOOPBACK}:{port}" if host in WILDCARDS else address


def install() -> None:
    from ray._common import tls_utils

    original = getattr(tls_utils.add_port_to_grpc_server, "wrapped", tls_utils.add_port_to_grpc_server)

    def add_port_on_loopback(server, address):
        return original(server, loopback_address(address))

    add_port_on_loopback.wrapped = original
    tls_utils.add_port_to_grpc_server = add_port_on_loopback
    replica = sys.modules.get("ray.serve._private.replica")  # imported its own reference already
    if replica is not None:
        replica.add_port_to_grpc_server = add_port_on_loopback
