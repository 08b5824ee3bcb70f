"""A crowd of closed-loop clients, one per loopback address, cheap enough that 200 of them fit on
the same 2 cores as the server: raw HTTP/1.1 over asyncio streams (a prebuilt request, the status
line and Content-Length read back), each client on its own keep-alive connection.

Every request is recorded as (started, finished, status) on one clock; a probe from an address of
its own times ``/readyz`` throughout. Loopback only, bounded in time."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


def crowd_addresses(n: int, *, first_octet: int = 2) -> list[str]:
    """``n`` distinct loopback source addresses (127.<first_octet>.x.y)."""
    return [f"127.{first_octet}.{i // 250}.{1 + i % 250}" for i in range(n)]


def post(path: str, body: bytes, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


@dataclass
class Record:
    started: float
    finished: float
    status: int

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass
class CrowdResult:
    requests: list[Record] = field(default_factory=list)
    probes: list[Record] = field(default_factory=list)
    failures: int = 0  # connections that broke or answered nothing

    def of(self, status: int) -> list[Record]:
        return [r for r in self.requests if r.status == status]


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on the connection and read its whole response; the status code."""
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return int(status_line.split(b" ")[1])


class Crowd:
    """``addresses`` clients sending ``request`` in a closed loop to ``port`` for ``seconds``.

    ``honour_retry_after``: a refused client waits as Retry-After asks (a well-behaved client, as the
    mmserve client is), else it sends again at once (a client that ignores it)."""

    def __init__(
        self,
        port: int,
        request: bytes,
        addresses: list[str],
        *,
        seconds: float,
        honour_retry_after_s: float = 0.0,
        probe: bytes | None = None,
        probe_address: str = "127.0.0.9",
    ) -> None:
        self.port, self.request, self.addresses, self.seconds = port, request, addresses, seconds
        self.retry_after_s, self.probe, self.probe_address = honour_retry_after_s, probe, probe_address
        self.result = CrowdResult()

    async def _open(self, address: str):
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(address, 0))

    async def _client(
        self, address: str, until: float, request: bytes, out: list[Record], pause_s: float = 0.0
    ) -> None:
        connection = None
        while time.monotonic() < until:
            try:
                connection = connection or await self._open(address)
                started = time.monotonic()
                status = await asyncio.wait_for(_exchange(*connection, request), 30)
                out.append(Record(started, time.monotonic(), status))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError):
                self.result.failures += 1
                connection = None
                continue
            wait = pause_s or (self.retry_after_s if status in (429, 503) else 0.0)
            if wait:
                await asyncio.sleep(wait)

    async def run(self) -> CrowdResult:
        until = time.monotonic() + self.seconds
        clients = [self._client(a, until, self.request, self.result.requests) for a in self.addresses]
        if self.probe is not None:
            clients.append(
                self._client(self.probe_address, until, self.probe, self.result.probes, pause_s=0.25)
            )
        await asyncio.gather(*clients)
        return self.result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
