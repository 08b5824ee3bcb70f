"""What a client may send as its X-Request-ID (deployments/request_ids.py)."""

import pytest

from deployments.request_ids import MAX_LENGTH, keep_well_formed, well_formed


@pytest.mark.parametrize("value", [b"a", b"req-1", b"A.b_c:d-9", b"x" * MAX_LENGTH])
def test_well_formed_ids_are_kept(value):
    assert well_formed(value)
    assert keep_well_formed([(b"X-Request-ID", value)]) == [(b"X-Request-ID", value)]


@pytest.mark.parametrize(
    "value",
    [b"", b"x" * (MAX_LENGTH + 1), b"a" * 10_000, b"a\nb", b"a b", "caf\u00e9".encode("latin-1"), b"<x>"],
)
def test_malformed_ids_are_dropped(value):
    assert not well_formed(value)
    assert keep_well_formed([(b"host", b"h"), (b"x-request-id", value)]) == [(b"host", b"h")]


def test_only_the_first_id_is_kept():
    headers = [(b"x-request-id", b"one"), (b"x-request-id", b"two"), (b"accept", b"*/*")]
    assert keep_well_formed(headers) == [(b"x-request-id", b"one"), (b"accept", b"*/*")]
