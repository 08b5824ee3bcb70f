"""The packaged text encoder (all-MiniLM-L6-v2) on inputs far beyond its token limit."""

from __future__ import annotations

import numpy as np
import pytest

from models.registry import TextModelSpec, load_text

SENTENCE = "the quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def minilm():
    return load_text(TextModelSpec())


@pytest.mark.slow
def test_ten_megabyte_text_is_cut_before_tokenising(minilm, monkeypatch):
    huge = (SENTENCE * (10_000_000 // len(SENTENCE) + 1))[:10_000_000]
    seen: list[int] = []
    tokenizer = minilm.tokenizer
    monkeypatch.setattr(
        minilm, "tokenizer", lambda texts, **kw: seen.extend(map(len, texts)) or tokenizer(texts, **kw)
    )
    vec = minilm.embed([huge])
    # the tokenizer saw a cut string (the whole one took 13 s and ~1.5 GB)
    assert seen and max(seen) <= minilm.max_length * minilm.chars_per_token
    # the model reads the first max_length tokens: any prefix that holds them embeds the same
    prefix = huge[:3000]  # ~440 tokens, past the 256-token limit
    np.testing.assert_allclose(vec, minilm.embed([prefix]), atol=1e-6)
    assert not np.allclose(vec, minilm.embed([huge[:200]]), atol=1e-3)  # a prefix under the limit differs
    assert minilm.tokens([huge])[0].shape == (minilm.max_length, minilm.token_dim)
