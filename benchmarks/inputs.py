"""Distinct benchmark inputs, so that no cache answers them: crops and re-encodings of the test
photos, numbered sentences. Shared by the throughput benchmarks and the soak.

Every item differs from every other (checked), and a benchmark that wants to beat the gateway's
embedding cache asks for more items than the cache holds (``more_than_cache``).
"""

from __future__ import annotations

import io
import itertools

# the colour photos of tests/assets.py (scikit-image and scikit-learn ship them)
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "china", "flower")
SENTENCES = (
    "a tabby cat naps on the window sill",
    "a cup of espresso on a white saucer",
    "the rocket waits on its launch pad",
    "an astronaut smiles in front of the flag",
    "a temple roof in the morning light",
    "a dahlia flower in full bloom",
)


def _sources(enlarge: int) -> list:
    from PIL import Image

    from tests.assets import photo

    images = [Image.open(io.BytesIO(photo(name))).convert("RGB") for name in PHOTOS]
    return [i.resize((i.width * enlarge, i.height * enlarge), Image.LANCZOS) for i in images]


def distinct_photos(n: int, enlarge: int = 1) -> list[bytes]:
    """``n`` different JPEGs: the test photos (``enlarge`` times their size: 4 makes camera-sized
    uploads of 1.8 to 2.6k px) cropped by a box that moves with the index and re-encoded at a
    quality that cycles through 76..95 (the photos stay recognisable)."""
    sources, out, seen = _sources(enlarge), [], set()
    for i in itertools.count():
        if len(out) == n:
            return out
        base, k = sources[i % len(sources)], i // len(sources)
        w, h = base.size
        box = (k % 37, (k * 7) % 41, w - (k * 3) % 29, h - (k * 5) % 31)
        buf = io.BytesIO()
        base.crop(box).save(buf, format="JPEG", quality=76 + k % 20)
        data = buf.getvalue()
        if data not in seen:
            seen.add(data)
            out.append(data)
    raise AssertionError("unreachable")


def distinct_texts(n: int) -> list[str]:
    """``n`` different short sentences (a caption and its number)."""
    return [f"{SENTENCES[i % len(SENTENCES)]}, picture number {i}" for i in range(n)]


def more_than_cache(cache_size: int, margin: int = 64) -> int:
    """How many distinct items defeat an LRU cache of ``cache_size`` entries, whatever the order."""
    return cache_size + margin


class Cycle:
    """Hands out the items in turn (wrapping), counting how many it handed out."""

    def __init__(self, items: list) -> None:
        if not items:
            raise ValueError("nothing to cycle through")
        self.items, self.handed = items, 0

    def next(self):
        item = self.items[self.handed % len(self.items)]
        self.handed += 1
        return item
