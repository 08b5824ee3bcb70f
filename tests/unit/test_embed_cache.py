import threading

import numpy as np
import pytest

from models.embed_cache import EmbedCache


def vec(x: float) -> np.ndarray:
    return np.full(4, x, dtype=np.float32)


def test_lru_eviction_keeps_recently_used():
    cache = EmbedCache(capacity=2)
    cache.put("m", "a", vec(1))
    cache.put("m", "b", vec(2))
    assert cache.get("m", "a") is not None  # 'a' is now the most recent
    cache.put("m", "c", vec(3))  # evicts 'b'
    assert cache.get("m", "b") is None
    np.testing.assert_array_equal(cache.get("m", "a"), vec(1))
    np.testing.assert_array_equal(cache.get("m", "c"), vec(3))
    assert len(cache) == 2
    cache.put("m", "a", vec(9))  # overwrite refreshes, does not grow
    assert len(cache) == 2
    np.testing.assert_array_equal(cache.get("m", "a"), vec(9))


def test_keys_include_the_model():
    cache = EmbedCache(capacity=4)
    cache.put("clip", "h", vec(1))
    assert cache.get("minilm", "h") is None
    np.testing.assert_array_equal(cache.get("clip", "h"), vec(1))


def test_clear_forgets_everything():
    cache = EmbedCache(capacity=3)
    cache.put("m", "a", vec(1))
    assert len(cache) == 1 and cache.get("m", "a") is not None
    cache.clear()
    assert len(cache) == 0 and cache.get("m", "a") is None


def test_values_are_copied_in_and_out():
    cache = EmbedCache(capacity=2)
    original = vec(1)
    cache.put("m", "a", original)
    original[:] = 5  # the caller's array changes after put
    got = cache.get("m", "a")
    np.testing.assert_array_equal(got, vec(1))
    got[:] = 7  # and the array a caller got is theirs to change
    np.testing.assert_array_equal(cache.get("m", "a"), vec(1))
    assert cache.get("m", "a").flags.writeable


def test_capacity_zero_disables():
    cache = EmbedCache(capacity=0)
    cache.put("m", "a", vec(1))
    assert cache.get("m", "a") is None
    assert len(cache) == 0
    with pytest.raises(ValueError):
        EmbedCache(capacity=-1)


def test_threads_never_exceed_capacity():
    cache = EmbedCache(capacity=50)

    def work(worker: int) -> None:
        for i in range(2000):
            cache.put("m", f"{worker}-{i % 120}", vec(i))
            cache.get("m", f"{(worker + 1) % 4}-{i % 120}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50
