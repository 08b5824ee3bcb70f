"""The handle-call wrapper without Ray: deadlines cancel the call (504), a replica lost under a call
is retried once, cancellation reaches the call and is never swallowed."""
from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from deployments.gateway import calls
from models.errors import DeadlineExceeded, InvalidInput


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
    with pytest.raises(ActorDiedError):
        await calls.call(_Method(_died, _died))  # once, not forever


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

    good, lost = _Method(_ok), _Method(_died, _died)
    good.deployment_name, lost.deployment_name = "AnsweringEncoder", "LostEncoder"
    assert await calls.call(good) == "ok"
    with pytest.raises(ActorDiedError):
        await calls.call(lost)
    assert liveness.recently("AnsweringEncoder") and not liveness.recently("LostEncoder")
