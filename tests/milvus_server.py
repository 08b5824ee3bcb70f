"""A real Milvus server for tests: Milvus 2.3.5 standalone (embedded etcd, local storage), as the
``milvus`` PyPI package ships it (a test dependency), with authentication on (user ``root``,
password ``Milvus``). Clients reach it at ``http://127.0.0.1:<port>``; note that Milvus binds its
gRPC ports on every interface (it has no bind-address setting), for as long as a test runs.

It is an old Milvus (January 2024) in one process, not the distributed Milvus that the Helm chart
installs; what that leaves unproven is in docs/search.md (Visual search)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.assets import free_port

TOKEN = "root:Milvus"


def _ready(uri: str) -> bool:
    from pymilvus import MilvusClient

    try:
        MilvusClient(uri=uri, token=TOKEN, timeout=2).list_collections()
        return True
    except Exception:  # noqa: BLE001 - still starting
        return False


@contextlib.contextmanager
def milvus_server(data_dir: Path, *, start_limit_s: float = 120) -> Iterator[str]:
    """Run Milvus over ``data_dir`` until the block ends; yields its URI (the token is ``TOKEN``)."""
    port = free_port()
    log = open(data_dir.parent / f"milvus-{port}.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, milvus; sys.exit(milvus.main())",
            "--data",
            str(data_dir),
            "--proxy-port",
            str(port),
            "--authorization-enabled",
            "true",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # its own group: stopped whole below
    uri = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while not _ready(uri):
            if server.poll() is not None or time.monotonic() - started > start_limit_s:
                raise RuntimeError(f"Milvus did not start: {Path(log.name).read_text()[-3000:]}")
            time.sleep(1)
        yield uri
    finally:
        _stop(server)
        log.close()


def _stop(server: subprocess.Popen) -> None:
    """SIGINT (the wrapper then stops Milvus), then the group this test started, if anything is left."""
    with contextlib.suppress(ProcessLookupError):
        server.send_signal(signal.SIGINT)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()
