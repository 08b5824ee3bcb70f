"""The throughput benchmarks measure what they name: distinct inputs, and a guard that fails a run
whose deployment did not do the work (read from its batch counters)."""
import io

from PIL import Image

from benchmarks.image_throughput import guard, transport_guard
from benchmarks.inputs import Cycle, distinct_photos, distinct_texts, more_than_cache


def test_inputs_are_distinct_and_real_photos():
    photos = distinct_photos(40)
    assert len(set(photos)) == 40
    sizes = {Image.open(io.BytesIO(p)).size for p in photos}
    assert len(sizes) > 6 and all(w > 200 and h > 200 for w, h in sizes)  # crops, not thumbnails
    assert len(set(distinct_texts(500))) == 500
    assert more_than_cache(4096) > 4096


def test_cycle_wraps_and_counts():
    cycle = Cycle(["a", "b"])
    assert [cycle.next() for _ in range(3)] == ["a", "b", "a"] and cycle.handed == 3


def _served(image_embedded: int, text_embedded: int, hits_embedded: int) -> dict:
    return {"image": {"answered": 100, "embedded": image_embedded},
            "text": {"answered": 200, "embedded": text_embedded},
            "cache_hits": {"answered": 500, "embedded": hits_embedded}}


def test_guard_passes_a_run_whose_deployments_did_the_work():
    assert guard(_served(100, 200, 1)) == []


def test_guard_fails_a_run_measured_on_something_else():
    failures = guard(_served(3, 200, 1))  # a cache (or a stub) answered the image sweep
    assert len(failures) == 1 and failures[0].startswith("image:")
    assert guard(_served(100, 120, 1))[0].startswith("text:")
    assert guard(_served(100, 200, 40))[0].startswith("cache_hits:")  # the cache-hit line reached the model


def test_transport_guard_names_the_sweep_the_model_did_not_do():
    row = {"round": 1, "transport": "bytes", "concurrency": 16, "answered": 100}
    assert transport_guard([{**row, "embedded": 100}]) == []
    assert transport_guard([{**row, "embedded": 100}, {**row, "embedded": 10}]) == \
        ["round 1 bytes c=16: 100 answered, 10 embedded"]
