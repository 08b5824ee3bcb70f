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
    return {
        "image": {"answered": 100, "embedded": image_embedded},
        "text": {"answered": 200, "embedded": text_embedded},
        "cache_hits": {"answered": 500, "embedded": hits_embedded},
    }


def test_guard_passes_a_run_whose_deployments_did_the_work():
    assert guard(_served(100, 200, 1)) == []


def test_guard_fails_a_run_measured_on_something_else():
    failures = guard(_served(3, 200, 1))  # a cache (or a stub) answered the image sweep
    assert len(failures) == 1 and failures[0].startswith("image:")
    assert guard(_served(100, 120, 1))[0].startswith("text:")
    assert guard(_served(100, 200, 40))[0].startswith("cache_hits:")  # the cache-hit line reached the model


def test_guard_allows_each_extra_gateway_one_cold_burst_of_cache_misses():
    from benchmarks.loadgen import Point

    served = _served(100, 200, 17)
    served["cache_hits"]["points"] = [
        Point(
            mode="closed",
            load=16,
            requests=500,
            errors=0,
            throughput=1.0,
            p50_ms=1,
            p90_ms=1,
            p99_ms=1,
            p999_ms=1,
            windows=2,
        )
    ]
    assert guard(served, gateways=2) == []  # the warm-up, then 16 in flight at the cold second gateway
    served["cache_hits"]["embedded"] = 18
    assert guard(served, gateways=2)[0].startswith("cache_hits:")
    served["cache_hits"]["embedded"] = 2
    assert guard(served)[0].startswith("cache_hits:")  # one gateway: its warm-up filled the only cache


def test_raw_grid_spans_the_cores():
    from benchmarks.image_throughput import grid_cells

    assert grid_cells(2) == [(1, 1), (1, 2), (2, 1), (2, 2)]  # as ever on 2 cores
    cells = grid_cells(16)
    assert (16, 1) in cells and (1, 16) in cells and all(8 <= t * w <= 32 for t, w in cells)
    assert grid_cells(16, [4], [1, 4]) == [(4, 1), (4, 4)]


def test_served_layout_grows_with_the_cores():
    from argparse import Namespace

    from benchmarks.image_throughput import AUDIO_MODEL, ray_cpus, served_args, served_layout
    from config.args import AppArgs

    assert served_layout(2) == {
        "gateway_replicas": 1,
        "vision_replicas": 1,
        "vision_cpus": 2.0,
        "text_replicas": 1,
        "text_cpus": 2.0,
    }
    big = served_layout(16)
    assert big["gateway_replicas"] == 4 and big["vision_replicas"] * big["vision_cpus"] == 8
    args = Namespace(
        vision_cpus=None,
        text_cpus=None,
        gateway_replicas=3,
        vision_replicas=None,
        text_replicas=None,
        max_batch=16,
        vision_model="{}",
        text_model="{}",
        audio_model=AUDIO_MODEL,
    )
    app = AppArgs.model_validate(served_args(args))
    assert app.gateway.autoscaling.max_replicas == 3 and app.gateway.autoscaling.min_replicas == 3
    assert ray_cpus(app) >= sum(d.num_cpus * d.autoscaling.max_replicas for d in app.deployments().values())


def test_batch_counters_of_replicas_add_up():
    from benchmarks.image_throughput import merged_sizes

    assert merged_sizes([{"embed": {"1": 3, "4": 1}}, {"embed": {"4": 2}, "classify": {"2": 1}}]) == {
        "embed": {"1": 3, "4": 3},
        "classify": {"2": 1},
    }


def test_transport_guard_names_the_sweep_the_model_did_not_do():
    row = {"round": 1, "transport": "bytes", "concurrency": 16, "answered": 100}
    assert transport_guard([{**row, "embedded": 100}]) == []
    assert transport_guard([{**row, "embedded": 100}, {**row, "embedded": 10}]) == [
        "round 1 bytes c=16: 100 answered, 10 embedded"
    ]
