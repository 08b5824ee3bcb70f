"""A request whose input kills the replica that runs it (issue 22), sent again and again beside
normal traffic, through the real Gateway and real Ray: the gateway's quarantine (``calls.py``)
lets it cost at most the replica it killed and the one its single retry reached, answers it 422
``poison_request``, refuses every later copy at once without sending it, and normal traffic to the
same deployment all succeeds.

Prove it can fail: make ``Quarantine.died`` never hold an input and the poison answers 503 every
time, each repeat takes seconds (it kills replicas), and normal traffic gets 503s."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import ray
from ray import serve

from config.args import Autoscaling, GatewayArgs
from tests.chaos.load import IMAGE
from tests.stub_backends import POISON_TEXT, crash_on_poison, stub_gateway, stub_models

pytestmark = pytest.mark.slow

APP, TEXT = "poison", "CrashText"


def _text_replicas() -> set[str]:
    """The live named replica actors of the crashing deployment (a replacement has a new name)."""
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    return {n for n in names if f"SERVE_REPLICA::{APP}#{TEXT}#" in n}


def _wait_replicas(want: int, limit_s: float = 90) -> set[str]:
    started = time.monotonic()
    while len(live := _text_replicas()) != want:
        assert time.monotonic() - started < limit_s, f"{TEXT} has {len(live)} replicas, not {want}"
        time.sleep(0.2)
    return live


@pytest.fixture(scope="module")
def poison_url(ray_cluster):
    vision, audio = stub_models("PoisonQuiet", modalities=("image", "audio"))
    text = crash_on_poison(name=TEXT, replicas=2)
    args = GatewayArgs(
        num_cpus=0,
        max_ongoing_requests=32,
        autoscaling=Autoscaling(min_replicas=1, max_replicas=1),
        settings={"max_inflight": 24, "embed_cache_size": 0, "poison_quarantine_s": 300},
    )
    serve.run(stub_gateway(vision, text, audio, args, name="PoisonGateway"), name=APP, route_prefix=f"/{APP}")
    _wait_replicas(2)
    yield f"http://127.0.0.1:{ray_cluster['port']}/{APP}"
    serve.delete(APP)


class _Traffic:
    """Normal requests in a loop until stopped: text embeddings (distinct texts, and one text sent
    over and over, which must never be taken for a poison) and image classification."""

    def __init__(self, url: str) -> None:
        self.url, self.stop, self.answers, self.lock = url, threading.Event(), [], threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(kind,), daemon=True)
            for kind in ("distinct", "same", "image")
        ]

    def _send(self, http: httpx.Client, kind: str, n: int) -> httpx.Response:
        if kind == "image":
            return http.post("/v1/classify", files={"image": ("i.png", IMAGE)}, data={"top_k": "1"})
        text = f"a normal text {n}" if kind == "distinct" else "the same normal text"
        return http.post("/v1/embeddings/text", json={"texts": [text]})

    def _loop(self, kind: str) -> None:
        with httpx.Client(base_url=self.url, timeout=90) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                r = self._send(http, kind, n)
                with self.lock:
                    self.answers.append((kind, r.status_code, r.text[:200]))
                time.sleep(0.02)

    def __enter__(self) -> _Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)


class _Census:
    """Every name the crashing deployment's replicas had while the test ran, sampled every 0.1 s (a
    replacement takes seconds to start, so none goes unseen): those not alive at the end died."""

    def __init__(self) -> None:
        self.seen, self.stop = set(_text_replicas()), threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            self.seen |= _text_replicas()

    def __enter__(self) -> _Census:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)

    def died(self) -> set[str]:
        return self.seen - _text_replicas()


def _poison(url: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    r = httpx.post(f"{url}/v1/embeddings/text", json={"texts": [POISON_TEXT]}, timeout=90)
    return r, time.perf_counter() - started


def test_a_poison_request_is_quarantined_and_normal_traffic_is_unaffected(poison_url):
    _wait_replicas(2)
    with _Census() as census, _Traffic(poison_url) as traffic:
        time.sleep(1.0)
        first, first_s = _poison(poison_url)
        after_first = _wait_replicas(2)  # replaced: the deaths the first one cost are all counted
        repeats = [_poison(poison_url) for _ in range(5)]
        time.sleep(2.0)
    died = census.died()
    row = {
        "first": [first.status_code, round(first_s, 2)],
        "repeats": [[r.status_code, round(s, 3)] for r, s in repeats],
        "replicas_died": len(died),
        "normal": len(traffic.answers),
        "normal_not_200": [a for a in traffic.answers if a[1] != 200][:5],
    }
    print(f"\nPOISON {row}")
    assert first.status_code == 422 and first.json()["error"]["type"] == "poison_request", first.text
    assert all(r.status_code == 422 and r.json()["error"]["type"] == "poison_request" for r, _ in repeats), (
        row
    )
    # Refused without being sent: had a repeat reached a replica, that replica would have died.
    assert _text_replicas() == after_first, "a repeat of a held input reached a replica"
    assert all(s < 2.0 for _, s in repeats), row  # no wait for a replica (loaded 2-core box: not 0.1 s)
    # The first copy kills the replica it reached; its one retry (alone among retries) kills at most one
    # more. Nothing after that: however often it is sent, the poison costs two replicas at most.
    assert 1 <= len(died) <= 2, row
    assert len(traffic.answers) > 30 and not row["normal_not_200"], row
