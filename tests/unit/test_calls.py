"""The handle-call wrapper without Ray: deadlines cancel the call (504), a replica lost under a call
is retried once, cancellation reaches the call and is never swallowed, and an input that was in
flight when two replicas died is held (422 poison_request) and then refused without being sent."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from deployments.gateway import calls, quarantine
from models.errors import DeadlineExceeded, InvalidInput, PoisonRequest


@pytest.fixture(autouse=True)
def fresh_quarantine(monkeypatch):
    """Each test its own quarantine (the module's is per gateway process) and a clock it can move."""
    clock = [1000.0]
    held = quarantine.Quarantine(ttl_s=60, capacity=8, clock=lambda: clock[0])
    monkeypatch.setattr(calls, "QUARANTINE", held)
    return clock


class _Response:
    def __init__(self, run) -> None:
        self.run, self.cancelled = run, False

    def __await__(self):
        return self.run().__await__()

    def cancel(self) -> None:
        self.cancelled = True


class _Method:
    """A handle method whose n-th call runs ``behaviours[n]`` (an async function)."""

    def __init__(self, *behaviours) -> None:
        self.behaviours, self.responses = list(behaviours), []

    def remote(self, *args, **kwargs) -> _Response:
        response = _Response(self.behaviours[len(self.responses)])
        self.responses.append(response)
        return response


async def _slow():
    await asyncio.sleep(5)


async def _ok():
    return "ok"


async def _died():
    raise ActorDiedError()


async def _full():
    raise BackPressureError(num_queued_requests=3, max_queued_requests=2)


async def test_a_call_past_the_deadline_is_cancelled_and_answers_504():
    calls.start_deadline(0.2)
    method = _Method(_slow)
    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        await calls.call(method)
    assert 0.15 < time.perf_counter() - started < 0.5
    assert method.responses[0].cancelled


async def test_no_call_starts_once_the_deadline_passed():
    calls.start_deadline(0.0)
    method = _Method(_ok)
    with pytest.raises(DeadlineExceeded):
        await calls.call(method)
    assert method.responses == []


async def test_a_replica_lost_under_a_call_is_retried_once():
    calls.start_deadline(5)
    assert await calls.call(_Method(_died, _ok)) == "ok"
    twice = _Method(_died, _died)
    with pytest.raises(PoisonRequest):  # two replicas died with it: held, not retried a second time
        await calls.call(twice)
    assert len(twice.responses) == 2


async def test_calls_that_may_not_run_twice_and_refusals_are_not_retried():
    calls.start_deadline(5)
    method = _Method(_died, _ok)
    with pytest.raises(ActorDiedError):
        await calls.call(method, retry=False)
    full = _Method(_full, _ok)
    with pytest.raises(BackPressureError):
        await calls.call(full)
    assert len(method.responses) == 1 and len(full.responses) == 1


async def test_cancelling_the_request_cancels_its_call_and_propagates():
    calls.start_deadline(5)
    method = _Method(_slow)
    task = asyncio.ensure_future(calls.call(method))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert method.responses[0].cancelled


def test_the_caller_may_shorten_the_deadline_never_extend_it():
    assert calls.request_timeout(None, 60) == 60
    assert calls.request_timeout("0.2", 60) == 0.2
    assert calls.request_timeout("600", 60) == 60
    for bad in ("soon", "-1", "0", "nan", "inf"):
        with pytest.raises(InvalidInput):
            calls.request_timeout(bad, 60)


async def test_a_call_that_returned_marks_its_deployment_as_answering():
    """What /readyz reads (deployments/gateway/liveness.py): only a call that returned counts."""
    from deployments.gateway import liveness

    good, lost = _Method(_ok), _Method(_died)
    good.deployment_name, lost.deployment_name = "AnsweringEncoder", "LostEncoder"
    assert await calls.call(good) == "ok"
    with pytest.raises(ActorDiedError):
        await calls.call(lost, retry=False)
    assert liveness.recently("AnsweringEncoder") and not liveness.recently("LostEncoder")


# ---- poison-request quarantine -------------------------------------------------------------------
def _death_on(replica: str):
    """A behaviour: the call's replica ``replica`` dies under it."""

    async def die():
        exc = ActorDiedError()
        exc.actor_id = replica
        raise exc

    return die


class _Named(_Method):
    deployment_name, method_name = "AudioModel", "transcribe"


async def test_an_input_that_kills_two_replicas_is_held_then_refused_without_being_sent():
    calls.start_deadline(5)
    first = _Named(_death_on("A"), _death_on("B"))
    with pytest.raises(PoisonRequest) as caught:
        await calls.call(first, b"poison", {"language": "x"})
    assert caught.value.error_type == "poison_request" and len(first.responses) == 2
    again = _Named(_ok)
    with pytest.raises(PoisonRequest):
        await calls.call(again, b"poison", {"language": "x"})
    assert again.responses == []  # refused at once: never reached a replica
    other = _Named(_ok)
    assert await calls.call(other, b"innocent", {"language": "x"}) == "ok"  # only that input is held


async def test_a_suspect_that_kills_again_in_a_later_request_is_held_without_a_retry():
    calls.start_deadline(5)
    with pytest.raises(ActorDiedError):
        await calls.call(_Named(_death_on("A")), b"poison", retry=False)  # suspect after one death
    later = _Named(_death_on("B"), _ok)  # sent after it became suspect
    with pytest.raises(PoisonRequest):
        await calls.call(later, b"poison")
    assert len(later.responses) == 1  # the second death holds it: no retry to spread it


async def test_an_innocent_input_caught_in_a_replica_death_is_retried_and_cleared():
    calls.start_deadline(5)
    assert await calls.call(_Named(_death_on("A"), _ok), b"cat") == "ok"
    assert not calls.QUARANTINE.watching("AudioModel.transcribe")
    # cleared: a later death with the same input is a first death again (retried), not a second one
    assert await calls.call(_Named(_death_on("B"), _ok), b"cat") == "ok"


def test_copies_of_one_input_on_the_replica_that_died_are_one_death_not_two():
    q = quarantine.Quarantine(ttl_s=60, clock=lambda: 5.0)
    assert not q.died("m", "fp", "A", sent_at=5.0)
    assert not q.died("m", "fp", "A", sent_at=5.0)  # a second copy on A, sent at that moment: not held
    assert q.died("m", "fp", "B", sent_at=5.0)


def test_deaths_are_named_by_the_replica_ray_reports():
    named = ActorDiedError()
    named.actor_id = "abc123"
    assert calls.dead_replica(named) == "abc123"
    unnamed = [calls.dead_replica(ActorDiedError()) for _ in range(3)]
    assert len(set(unnamed)) == 3  # each its own: never taken for the same replica


async def test_a_copy_already_in_flight_when_its_input_became_suspect_is_not_held_for_dying(fresh_quarantine):
    """The bystander: one copy of an innocent input dies with a poison on replica A (suspect); another
    copy, sent before that, dies on B when the poison's retry kills B. It is retried, not held."""
    calls.start_deadline(5)
    release = asyncio.Event()

    async def dies_on_b_later():
        await release.wait()
        await _death_on("B")()

    bystander = asyncio.ensure_future(calls.call(_Named(dies_on_b_later, _ok), b"cat"))
    await asyncio.sleep(0.01)  # sent now
    fresh_quarantine[0] += 1
    with pytest.raises(ActorDiedError):
        await calls.call(_Named(_death_on("A")), b"cat", retry=False)  # the input becomes suspect
    release.set()
    assert await bystander == "ok"


async def test_retries_after_a_death_run_one_at_a_time_per_method():
    """A poison's retry kills a second replica: an innocent retry must not be on it at that moment
    (it would see its own second death and be held)."""
    calls.start_deadline(5)
    running, most = [0], [0]

    async def tracked():
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(0.05)
        running[0] -= 1
        return "ok"

    results = await asyncio.gather(
        *(calls.call(_Named(_death_on("A"), tracked), f"victim {i}") for i in range(4))
    )
    assert results == ["ok"] * 4 and most[0] == 1


async def test_a_held_input_is_sent_again_after_the_ttl(fresh_quarantine):
    calls.start_deadline(5)
    with pytest.raises(PoisonRequest):
        await calls.call(_Named(_death_on("A"), _death_on("B")), b"poison")
    fresh_quarantine[0] += 61
    assert await calls.call(_Named(_ok), b"poison") == "ok"


async def test_the_normal_path_hashes_nothing(monkeypatch):
    hashed = []
    monkeypatch.setattr(calls, "fingerprint", lambda *a: hashed.append(a) or "fp")
    calls.start_deadline(5)
    assert await calls.call(_Named(_ok), b"x" * 1000) == "ok"
    assert hashed == []
    assert await calls.call(_Named(_death_on("A"), _ok), b"y") == "ok"
    assert len(hashed) == 1  # only once a replica died under it


async def test_a_known_content_hash_is_the_fingerprint_and_nothing_is_read_again(monkeypatch):
    calls.start_deadline(5)
    with pytest.raises(PoisonRequest):
        await calls.call(_Named(_death_on("A"), _death_on("B")), b"poison", content="sha-1")
    read = []
    monkeypatch.setattr(calls, "off_loop", lambda *a: read.append(a))
    again = _Named(_ok)
    with pytest.raises(PoisonRequest):  # other argument objects, the same content: held
        await calls.call(again, b"another copy", content="sha-1")
    assert again.responses == [] and read == []
    assert await calls.call(_Named(_ok), b"poison", content="sha-2") == "ok"


def test_fingerprints_tell_inputs_and_methods_apart_and_take_surrogates():
    audio = np.zeros(16000, np.float32)
    base = quarantine.fingerprint("AudioModel.transcribe", (audio, {"language": "\ud800"}), {})
    assert base == quarantine.fingerprint("AudioModel.transcribe", (audio.copy(), {"language": "\ud800"}), {})
    louder = audio.copy()
    louder[0] = 1.0
    for other in [
        quarantine.fingerprint("AudioModel.features", (audio, {"language": "\ud800"}), {}),
        quarantine.fingerprint("AudioModel.transcribe", (louder, {"language": "\ud800"}), {}),
        quarantine.fingerprint("AudioModel.transcribe", (audio, {"language": "en"}), {}),
        quarantine.fingerprint("AudioModel.transcribe", ([b"ab"], {}), {}),
        quarantine.fingerprint("AudioModel.transcribe", ([b"a", b"b"], {}), {}),
    ]:
        assert other != base
    assert quarantine.fingerprint("m", ([b"ab"],), {}) != quarantine.fingerprint("m", ([b"a", b"b"],), {})


def test_the_quarantine_is_bounded_per_method():
    q = quarantine.Quarantine(ttl_s=60, capacity=3)
    for n in range(10):
        q.died("m", f"fp{n}", "A", sent_at=0.0)
        q.died("m", f"fp{n}", "B", sent_at=q.clock())
    assert [q.held("m", f"fp{n}") for n in range(10)] == [False] * 7 + [True] * 3


class _Items:
    """A streamed call's items, one every ``delay`` s, ``n`` of them; its replica dies after ``die_after``."""

    def __init__(
        self, n: int, *, delay: float = 0.0, die_after: int | None = None, replica: str = "A"
    ) -> None:
        self.n, self.delay, self.die_after, self.replica = n, delay, die_after, replica
        self.sent, self.cancelled = 0, False

    async def __anext__(self) -> int:
        if self.sent == self.die_after:
            exc = ActorDiedError()
            exc.actor_id = self.replica
            raise exc
        if self.sent == self.n:
            raise StopAsyncIteration
        await asyncio.sleep(self.delay)
        self.sent += 1
        return self.sent

    def cancel(self) -> None:
        self.cancelled = True


class _StreamOf(_Named):
    """A generator method of a handle: each ``options(stream=True).remote()`` sends the next stream."""

    method_name = "transcribe_stream"

    def __init__(self, *streams: _Items) -> None:
        super().__init__()
        self.streams = list(streams)

    def options(self, **options):
        assert options == {"stream": True}
        return self

    def remote(self, *args, **kwargs) -> _Items:
        stream = self.streams[len(self.responses)]
        self.responses.append(stream)
        return stream


async def _drain(method, *args) -> list:
    return [item async for item in calls.stream(method, *args)]


async def test_a_streamed_call_yields_every_item_and_is_not_cancelled():
    calls.start_deadline(5)
    method = _StreamOf(_Items(3))
    assert await _drain(method, b"audio") == [1, 2, 3] and not method.responses[0].cancelled


async def test_a_stream_past_the_deadline_is_cancelled_and_answers_504():
    calls.start_deadline(0.25)
    method, got = _StreamOf(_Items(10, delay=0.1)), []
    with pytest.raises(DeadlineExceeded):
        async for item in calls.stream(method, b"audio"):
            got.append(item)
    assert 1 <= len(got) < 10 and method.responses[0].cancelled


async def test_leaving_a_stream_early_cancels_it_on_the_replica():
    calls.start_deadline(5)
    method = _StreamOf(_Items(10))
    items = calls.stream(method, b"audio")
    assert await anext(items) == 1
    await items.aclose()  # the client went away
    assert method.responses[0].cancelled and method.responses[0].sent == 1


async def test_a_stream_whose_replicas_die_twice_holds_its_input_then_refuses_it_unsent():
    calls.start_deadline(5)
    first = _StreamOf(_Items(3, die_after=1, replica="A"))
    with pytest.raises(ActorDiedError):  # not retried: its first item may be out already
        await _drain(first, b"poison")
    second = _StreamOf(_Items(3, die_after=0, replica="B"))
    with pytest.raises(PoisonRequest):
        await _drain(second, b"poison")
    third = _StreamOf(_Items(3))
    with pytest.raises(PoisonRequest):
        await _drain(third, b"poison")
    assert third.responses == []  # refused at once: never sent
