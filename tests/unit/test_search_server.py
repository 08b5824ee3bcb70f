"""VectorStore's server code path (``search.uri: http://...``, a token) against a real Milvus server
(tests/milvus_server.py: Milvus 2.3.5 standalone, authentication on): two processes share one
index, as two SearchIndex replicas do, which a Milvus Lite file cannot offer; what one writes, the
other reads at once (counts included); a wrong token is refused."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from config.args import AppArgs
from models.errors import Unavailable
from models.search import Item, VectorStore
from tests.milvus_server import TOKEN, milvus_server

REPO = Path(__file__).resolve().parents[2]
DIM = 8

# A second process: sees what the first wrote, adds its own rows, re-adds one of the first's.
_OTHER = textwrap.dedent("""
    import sys
    import numpy as np
    from models.search import Item, VectorStore
    store = VectorStore(uri=sys.argv[1], token=sys.argv[2])
    assert not store.is_local
    rows = np.eye(8, dtype=np.float32)
    hits = store.search("acme", "shared", rows[3], space="space-a", top_k=1)
    added = store.add("acme", "shared", [Item(id=f"p{i}", vector=rows[i], metadata={"by": "other"}) for i in (4, 5)]
                      + [Item(id="p0", vector=rows[0], metadata={"by": "other"})], encoder="enc-a")
    print(hits[0].id, added, store.count("acme", "shared"))
""")


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory):
    with milvus_server(tmp_path_factory.mktemp("milvus") / "data") as uri:
        yield uri


def test_two_processes_share_one_index_on_a_server(server_uri):
    store = VectorStore(uri=server_uri, token=TOKEN)
    assert not store.is_local
    rows = np.eye(DIM, dtype=np.float32)
    store.create("acme", "shared", encoder="enc-a", space="space-a", dim=DIM)
    assert store.add(
        "acme",
        "shared",
        [Item(id=f"p{i}", vector=rows[i], metadata={"by": "first"}) for i in range(4)],
        encoder="enc-a",
    ) == (4, 0)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER, server_uri, TOKEN],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the other process found the first's row, added two, and saw p0 was already there
    assert done.stdout.split() == ["p3", "(2,", "1)", "6"]
    hits = store.search(
        "acme", "shared", rows[5], space="space-a", top_k=1
    )  # no flush: a server searches growing segments
    assert (hits[0].id, hits[0].metadata) == ("p5", {"by": "other"})
    assert store.count("acme", "shared") == 6
    assert store.delete("acme", "shared", ["p0", "p1"]) == 2
    assert store.count("acme", "shared") == 4 and store.has("acme", "shared", ["p0", "p2"]) == {"p2"}
    store.drop("acme", "shared")


def test_a_wrong_token_is_refused(server_uri):
    with pytest.raises(Unavailable, match="cannot open the vector store"):
        VectorStore(uri=server_uri, token="root:wrong")


def test_a_server_uri_from_the_environment_lets_search_scale_out(monkeypatch, server_uri):
    monkeypatch.setenv("MILVUS_URI", server_uri)
    args = AppArgs.model_validate({"search": {"uri": "${MILVUS_URI}", "autoscaling": {"max_replicas": 3}}})
    assert args.search.uri == server_uri
    assert args.search.serve_options()["autoscaling_config"]["max_replicas"] == 3
    with pytest.raises(ValueError, match="one process at a time"):
        monkeypatch.setenv("MILVUS_URI", "/srv/search.db")
        AppArgs.model_validate({"search": {"uri": "${MILVUS_URI}", "autoscaling": {"max_replicas": 3}}})
