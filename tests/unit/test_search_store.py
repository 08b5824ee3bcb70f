"""VectorStore on a real Milvus Lite file in tmp_path (no Ray, no server)."""

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from api.schemas import content_id
from models.errors import Incompatible, InvalidInput, NotFound
from models.search import (
    Item,
    VectorStore,
    check_index_name,
    collection_name,
    is_local_uri,
    literal,
    where_expression,
)

DIM = 16
REPO = Path(__file__).resolve().parents[2]


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def items(vectors: np.ndarray, **meta) -> list[Item]:
    return [Item(id=f"v{i}", vector=v, metadata={"n": i, **meta}) for i, v in enumerate(vectors)]


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "search.db")


@pytest.fixture
def store(db_path):
    opened = VectorStore(uri=db_path)
    yield opened
    opened.close(release_file=True)


@pytest.fixture
def cats(store):
    """Tenant 'acme' with a 16-d index 'cats' holding 40 unit vectors."""
    store.create("acme", "cats", encoder="enc-a", space="space-a", dim=DIM)
    vectors = unit_rows(40)
    store.add("acme", "cats", items(vectors), encoder="enc-a")
    return vectors


def test_names_are_checked_and_mapped_injectively():
    assert check_index_name("my-index_2") == "my-index_2"
    for bad in ("", "2cats", "Cats", "a b", "a" * 49, 'x"; drop', None):
        with pytest.raises(InvalidInput) as err:
            check_index_name(bad)
        assert err.value.param == "name"
    assert collection_name("a__b", "c") != collection_name("a", "b__c")
    assert collection_name("a-b", "c") != collection_name("a_b", "c")
    assert content_id(b"abc") == content_id(b"abc") != content_id(b"abd")
    assert len(content_id(b"")) == 64


def test_create_list_describe_drop(store):
    info = store.create("acme", "cats", encoder="enc-a", space="space-a", dim=DIM)
    assert (info.name, info.encoder, info.space, info.dim, info.count) == ("cats", "enc-a", "space-a", DIM, 0)
    assert info.created > 1_600_000_000
    assert store.create("acme", "cats", encoder="enc-a", space="space-a", dim=DIM) == info  # idempotent
    with pytest.raises(Incompatible, match="already exists"):
        store.create("acme", "cats", encoder="enc-b", space="space-a", dim=DIM)
    with pytest.raises(Incompatible, match="already exists"):
        store.create("acme", "cats", encoder="enc-a", space="space-a", dim=DIM + 1)
    store.create("acme", "dogs", encoder="enc-a", space="space-a", dim=DIM)
    assert [i.name for i in store.list("acme")] == ["cats", "dogs"]
    assert store.describe("acme", "dogs").dim == DIM
    store.drop("acme", "cats")
    assert [i.name for i in store.list("acme")] == ["dogs"]
    with pytest.raises(NotFound):
        store.describe("acme", "cats")
    with pytest.raises(NotFound):
        store.drop("acme", "cats")


def test_tenant_isolation(store, cats):
    with pytest.raises(NotFound) as missing:
        store.describe("bob", "nothing-here")
    assert store.list("bob") == []
    calls = {
        "describe": lambda: store.describe("bob", "cats"),
        "search": lambda: store.search("bob", "cats", cats[0], encoder="enc-a"),
        "delete": lambda: store.delete("bob", "cats", ["v0"]),
        "has": lambda: store.has("bob", "cats", ["v0"]),
        "count": lambda: store.count("bob", "cats"),
        "add": lambda: store.add("bob", "cats", items(cats[:1]), encoder="enc-a"),
        "drop": lambda: store.drop("bob", "cats"),
    }
    for call in calls.values():
        with pytest.raises(NotFound) as err:
            call()
        # the same words as for a name nobody has: no hint that another tenant holds it
        assert err.value.message == missing.value.message.replace("nothing-here", "cats")
        assert err.value.param == "index"
    assert store.count("acme", "cats") == 40
    # bob may have his own 'cats', separate from acme's
    store.create("bob", "cats", encoder="enc-b", space="space-b", dim=4)
    assert store.count("bob", "cats") == 0 and store.describe("acme", "cats").encoder == "enc-a"


def test_readd_is_idempotent(store, cats):
    assert store.add("acme", "cats", items(cats[:10]), encoder="enc-a") == (0, 10)
    fresh = unit_rows(3, seed=9)
    batch = [
        Item(id="new1", vector=fresh[0], metadata={}),
        Item(id="new1", vector=fresh[1], metadata={}),
        Item(id="v0", vector=fresh[2], metadata={}),
    ]
    assert store.add("acme", "cats", batch, encoder="enc-a") == (1, 2)
    assert store.count("acme", "cats") == 41
    assert store.has("acme", "cats", ["v0", "new1", "absent"]) == {"v0", "new1"}
    top = store.search("acme", "cats", cats[0], encoder="enc-a", top_k=1)[0]
    assert top.id == "v0" and top.score == pytest.approx(1.0, abs=1e-5)  # v0 was not overwritten


def test_concurrent_adds_of_the_same_items_add_each_once(store, cats):
    batch = items(unit_rows(30, seed=7))
    batch = [Item(id=f"t{item.id}", vector=item.vector, metadata=item.metadata) for item in batch]
    results: list[tuple[int, int]] = []

    def add() -> None:
        results.append(store.add("acme", "cats", batch, encoder="enc-a"))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [(0, 30), (0, 30), (0, 30), (30, 0)]
    assert store.count("acme", "cats") == 70


def test_dim_and_encoder_mismatch(store, cats):
    with pytest.raises(Incompatible) as err:
        store.add("acme", "cats", items(unit_rows(2, dim=DIM + 1)), encoder="enc-a")
    assert f"{DIM}-d" in err.value.message and f"{DIM + 1}-d" in err.value.message
    with pytest.raises(Incompatible) as err:
        store.add("acme", "cats", items(cats[:2]), encoder="enc-b")
    assert "enc-a" in err.value.message and "enc-b" in err.value.message
    with pytest.raises(Incompatible) as err:
        store.search("acme", "cats", cats[0], encoder="enc-b")
    assert "enc-a" in err.value.message and "enc-b" in err.value.message and f"{DIM}-d" in err.value.message
    with pytest.raises(Incompatible, match="space-b"):
        store.search("acme", "cats", cats[0], space="space-b")
    with pytest.raises(Incompatible, match=f"{DIM + 3}-d"):
        store.search("acme", "cats", np.ones(DIM + 3), space="space-a")
    with pytest.raises(InvalidInput):
        store.search("acme", "cats", np.zeros(DIM), space="space-a")
    assert store.count("acme", "cats") == 40


def test_ranking_matches_numpy_cosine(store):
    store.create("acme", "rank", encoder="e", space="s", dim=DIM)
    rng = np.random.default_rng(3)
    raw = rng.standard_normal((300, DIM)).astype(np.float32) * rng.uniform(0.1, 10, (300, 1))  # not unit
    store.add(
        "acme", "rank", [Item(id=f"r{i}", vector=v, metadata={}) for i, v in enumerate(raw)], encoder="e"
    )
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    for query in rng.standard_normal((5, DIM)).astype(np.float32):
        sims = unit @ (query / np.linalg.norm(query))
        expected = np.argsort(-sims)[:10]
        hits = store.search("acme", "rank", query, space="s", top_k=10)
        assert [h.id for h in hits] == [f"r{i}" for i in expected]
        np.testing.assert_allclose([h.score for h in hits], sims[expected], atol=1e-5)


def test_metadata_filter_and_types(store):
    store.create("acme", "meta", encoder="e", space="s", dim=DIM)
    vectors = unit_rows(12, seed=4)
    rows = [
        Item(
            id=f"m{i}",
            vector=v,
            metadata={"source": ["skimage", "web", "scan"][i % 3], "page": i, "ok": i % 2 == 0, "w": i / 4},
        )
        for i, v in enumerate(vectors)
    ]
    store.add("acme", "meta", rows, encoder="e")
    hits = store.search("acme", "meta", vectors[0], space="s", top_k=12, where={"source": "skimage"})
    assert sorted(h.id for h in hits) == ["m0", "m3", "m6", "m9"]
    assert all(h.metadata["source"] == "skimage" for h in hits)
    assert hits[0].metadata == {"source": "skimage", "page": 0, "ok": True, "w": 0.0}
    assert [h.id for h in store.search("acme", "meta", vectors[0], space="s", where={"page": 7})] == ["m7"]
    odd_web = store.search(
        "acme", "meta", vectors[0], space="s", top_k=12, where={"source": "web", "ok": False}
    )
    assert sorted(h.id for h in odd_web) == ["m1", "m7"]
    assert [h.id for h in store.search("acme", "meta", vectors[0], space="s", where={"w": 2.5})] == ["m10"]
    assert store.search("acme", "meta", vectors[0], space="s", where={"absent": "x"}) == []


def test_filter_injection_matches_literally(store):
    store.create("acme", "inj", encoder="e", space="s", dim=DIM)
    vectors = unit_rows(6, seed=5)
    evil = 'x" or id != "'
    tricky = 'back\\slash "quoted"\nline'
    metas = [{"k": evil}, {"k": tricky}] + [{"k": "plain"}] * 4
    store.add(
        "acme",
        "inj",
        [Item(id=f"i{i}", vector=v, metadata=m) for i, (v, m) in enumerate(zip(vectors, metas))],
        encoder="e",
    )
    assert [h.id for h in store.search("acme", "inj", vectors[3], space="s", top_k=6, where={"k": evil})] == [
        "i0"
    ]
    assert [
        h.id for h in store.search("acme", "inj", vectors[3], space="s", top_k=6, where={"k": tricky})
    ] == ["i1"]
    assert (
        store.search("acme", "inj", vectors[3], space="s", top_k=6, where={"k": 'nomatch" or id != "'}) == []
    )
    assert store.search("acme", "inj", vectors[3], space="s", top_k=6, where={"k": "x\\"}) == []
    for bad_where in (
        {'k"] == "plain" or id != "': "x"},
        {"k": ["a"]},
        {"k": {"$ne": 1}},
        {"k": "a\x00b"},
        {"k": float("nan")},
        {"$meta": "x"},
        "k == 1",
    ):
        with pytest.raises(InvalidInput):
            store.search("acme", "inj", vectors[3], space="s", where=bad_where)
    with pytest.raises(InvalidInput):
        store.has("acme", "inj", ['a" or id != "'])
    assert literal(evil) == '"x\\" or id != \\""'
    assert where_expression({"k": True, "n": 3}) == '$meta["m_k"] == true and $meta["m_n"] == 3'


def test_delete_and_count(store, cats):
    assert store.delete("acme", "cats", ["v0", "v1", "v0", "absent"]) == 2
    assert store.count("acme", "cats") == 38
    assert store.describe("acme", "cats").count == 38
    assert store.has("acme", "cats", ["v0", "v1", "v2"]) == {"v2"}
    assert all(
        h.id not in ("v0", "v1") for h in store.search("acme", "cats", cats[0], encoder="enc-a", top_k=40)
    )
    assert store.delete("acme", "cats", []) == 0
    assert store.add("acme", "cats", items(cats[:2]), encoder="enc-a") == (2, 0)  # deleted ids may come back
    assert store.count("acme", "cats") == 40


def test_persistence_across_reopen(db_path, cats, store):
    expected = store.search("acme", "cats", cats[5], encoder="enc-a", top_k=3, where={"n": 5})
    info = store.describe("acme", "cats")
    store.close(release_file=True)  # stop the in-process Lite server: the next open reads the files
    reopened = VectorStore(uri=db_path)
    try:
        assert reopened.list("acme") == [info]
        assert reopened.search("acme", "cats", cats[5], encoder="enc-a", top_k=3, where={"n": 5}) == expected
        assert reopened.add("acme", "cats", items(cats[:3]), encoder="enc-a") == (0, 3)
    finally:
        reopened.close(release_file=True)


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from models.errors import Unavailable
    from models.search import VectorStore
    try:
        store = VectorStore(uri=sys.argv[1])
    except Unavailable as exc:
        print("UNAVAILABLE", exc.message)
        raise SystemExit(0)
    print("OPEN", store.count("acme", "cats"), store.search("acme", "cats", np.ones(16), space="space-a")[0].id)
""")


def _child(db_path: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, db_path], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_one_process_per_local_file(db_path, cats, store):
    assert store.is_local
    held = _child(db_path)
    assert held.startswith("UNAVAILABLE") and "another process" in held
    store.close(release_file=True)
    assert _child(db_path).startswith("OPEN 40 v")


def test_uris():
    assert is_local_uri("/data/search.db") and is_local_uri("search.db")
    assert not is_local_uri("http://milvus:19530") and not is_local_uri("https://x.zillizcloud.com")
    with pytest.raises(InvalidInput):
        VectorStore(uri="/tmp/search.sqlite")
