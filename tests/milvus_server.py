"""Milvus Lite's gRPC server (``milvus-lite server``, from the milvus-lite package we already
install) on 127.0.0.1: the stand-in for a Milvus server in tests. It speaks Milvus's wire protocol
to pymilvus over ``http://host:port``, so the store's server code path runs as it would against
Milvus, and several processes can share its indexes. It is not Milvus: one process, Lite's engine
(brute-force search in Python), no authentication (a token is accepted and ignored), no
distributed segments; the README says what that leaves unproven."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from tests.assets import free_port


@contextlib.contextmanager
def milvus_lite_server(data_dir: Path, *, start_limit_s: float = 60) -> Iterator[str]:
    """Run the server over ``data_dir`` until the block ends; yields its URI."""
    port = free_port()
    log = open(data_dir.parent / f"milvus-lite-{port}.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
                               "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if server.poll() is not None or time.monotonic() - started > start_limit_s:
                raise RuntimeError(f"milvus-lite server did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
