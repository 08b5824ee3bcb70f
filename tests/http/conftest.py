"""Fixtures of the HTTP tests: the mmserve client against the session's served app."""

import pytest

from clients.client import Client


@pytest.fixture(scope="module")
def client(base_url):
    with Client(base_url, timeout=120) as c:
        yield c
