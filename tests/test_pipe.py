"""The engine's Pipe and circuit breaker, in process: the order of answers, a fatal error in the
middle of a stream, requests left to finish, and when the breaker opens. Every ordering is made
explicit with events, never with sleeps."""

from __future__ import annotations

import asyncio

import pytest

from self_instruct.llm.base import BackendBase, EndpointDown, FatalError, Request, Response, TransientError
from self_instruct.llm.engine import Breaker, Engine, RetryPolicy


class Gated(BackendBase):
    """Answers request ``n`` (its prompt) once the test opens ``gates[n]``; a prompt in ``fatal``
    raises FatalError when its gate opens. Records what started, finished and was cancelled."""

    name, model, api, max_concurrency = "gated", "gated-model", "completions", 64

    def __init__(self, n: int, fatal: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.gates = {str(i): asyncio.Event() for i in range(n)}
        self.fatal = fatal
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []

    async def complete(self, request: Request) -> Response:
        self.started.append(request.prompt)
        try:
            await self.gates[request.prompt].wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.prompt)
            raise
        if request.prompt in self.fatal:
            raise FatalError(f"400 bad request: {request.prompt}")
        self.finished.append(request.prompt)
        return Response(text=f"answer {request.prompt}", finish_reason="stop", prompt_tokens=1)

    async def close(self) -> None:
        pass


def req(i: int) -> Request:
    return Request(prompt=str(i), max_tokens=4)


async def settle() -> None:
    """Let every task that can run, run (the event loop's queue drained a few times over)."""
    for _ in range(10):
        await asyncio.sleep(0)


def streaming(backend: Gated, n: int, concurrency: int):
    """An engine on ``backend`` whose usage records are kept, and a pipe with requests 0..n-1 sent."""
    engine = Engine(backend, concurrency=concurrency)
    usage: list[dict] = []
    engine.usage = usage.append
    pipe = engine.pipe("s")
    for i in range(n):
        pipe.send(req(i))
    return engine, pipe, usage


def test_answers_come_in_the_order_sent_whatever_order_they_finish_in():
    async def main():
        backend = Gated(4)
        _, pipe, usage = streaming(backend, 4, concurrency=4)
        await settle()
        assert pipe.in_flight == 4 and not pipe.head_ready()
        for i in (3, 1, 2):  # the last ones first
            backend.gates[str(i)].set()
        await settle()
        assert backend.finished == ["3", "1", "2"] and not pipe.head_ready()
        backend.gates["0"].set()
        answers = [(await pipe.take()).text for _ in range(4)]
        assert answers == ["answer 0", "answer 1", "answer 2", "answer 3"]
        assert await pipe.close() == 0
        # Each request is on record as sent before its answer, under the same number.
        sent = [r["request"] for r in usage if r.get("event") == "sent"]
        done = [r["request"] for r in usage if r.get("event") != "sent"]
        assert sorted(sent) == sorted(done) == [1, 2, 3, 4]

    asyncio.run(main())


def test_a_fatal_error_anywhere_stops_the_stream_at_once():
    async def main():
        backend = Gated(5, fatal={"3"})
        _, pipe, usage = streaming(backend, 5, concurrency=5)
        await settle()
        backend.gates["3"].set()  # the oldest (0) is still out: take() must not wait for it
        with pytest.raises(FatalError, match="400 bad request: 3"):
            await pipe.take()
        await pipe.close(cancel=True)
        assert sorted(backend.cancelled) == ["0", "1", "2", "4"] and backend.finished == []
        ended = {r["request"]: r for r in usage if r.get("event") != "sent"}
        assert sum(r["cancelled"] for r in ended.values()) == 4
        assert [r["finish_reason"] for r in ended.values() if not r["cancelled"]] == ["error"]

    asyncio.run(main())


def test_requests_left_in_a_closed_pipe_finish_and_are_counted():
    async def main():
        backend = Gated(3)
        engine, pipe, usage = streaming(backend, 3, concurrency=3)
        backend.gates["0"].set()
        assert (await pipe.take()).text == "answer 0"
        assert await pipe.close() == 2  # sent and never taken: left to finish
        drained = asyncio.ensure_future(engine.drain())
        await settle()
        assert not drained.done()
        backend.gates["1"].set()
        backend.gates["2"].set()
        await drained
        assert sorted(backend.finished) == ["0", "1", "2"]
        assert sum(1 for r in usage if r.get("event") != "sent" and r.get("ok")) == 3

    asyncio.run(main())


def test_concurrency_caps_what_is_at_the_server():
    async def main():
        backend = Gated(5)
        _, pipe, _ = streaming(backend, 5, concurrency=2)
        await settle()
        assert backend.started == ["0", "1"] and pipe.in_flight == 5
        backend.gates["0"].set()
        await settle()
        assert backend.started == ["0", "1", "2"]
        for gate in backend.gates.values():
            gate.set()
        assert [(await pipe.take()).text for _ in range(5)] == [f"answer {i}" for i in range(5)]
        await pipe.close()

    asyncio.run(main())


# --- the breaker -----------------------------------------------------------------------------------


def test_the_breaker_opens_when_the_share_of_failures_reaches_its_rate():
    breaker = Breaker(window=4, rate=0.75)
    for ok in (True, False, False):
        breaker.record(ok, "" if ok else "500 server error: boom")
    with pytest.raises(EndpointDown, match=r"3 of the last 4 attempts failed \(500 server error x3\)"):
        breaker.record(False, "500 server error: boom")


def test_the_breaker_stays_closed_below_its_rate_and_before_its_window_is_full():
    breaker = Breaker(window=4, rate=0.75)
    for _ in range(3):
        breaker.record(False, "500 server error")  # three failures, but the window is not full yet
    with pytest.raises(EndpointDown):  # the fourth outcome fills it: 3 of 4 failed, the rate
        breaker.record(True)
    breaker = Breaker(window=4, rate=0.75)
    for ok in (False, True, False, True, False, True):
        breaker.record(ok, "" if ok else "500")  # never more than 2 of the last 4


def test_rate_limiting_is_not_failing_and_window_zero_is_off():
    breaker = Breaker(window=2, rate=0.5)
    for _ in range(10):
        breaker.record(False, "429 rate limited: slow down")
    off = Breaker(window=0, rate=0.5)
    for _ in range(10):
        off.record(False, "500")


def test_an_engine_whose_endpoint_keeps_failing_stops_through_its_breaker():
    class Failing(Gated):
        async def complete(self, request: Request) -> Response:
            raise TransientError("503 server error: overloaded")

    async def main():
        engine = Engine(Failing(0), concurrency=1, retry=RetryPolicy(2, 0.0, 0.0), breaker=Breaker(5, 1.0))
        with pytest.raises(EndpointDown, match="5 of the last 5 attempts failed"):
            await engine.run([req(i) for i in range(4)], stage="s")

    asyncio.run(main())


def test_one_failure_classification_for_the_engine_the_breaker_and_the_manifest():
    from self_instruct.manifest import failure_causes

    error = "503 server error: overloaded, try later (after 3 attempts)"

    class Failing(Gated):
        async def complete(self, request: Request) -> Response:
            raise TransientError(error.split(" (after")[0])

    async def main():
        breaker = Breaker(2, 1.0)
        engine = Engine(Failing(0), concurrency=1, retry=RetryPolicy(0, 0.0, 0.0), breaker=breaker)
        [response] = await engine.run([req(0)], stage="s")
        return engine, breaker, response

    engine, breaker, response = asyncio.run(main())
    assert engine.stats["s"]["error:503 server error"] == 1
    assert dict(breaker.causes) == {"503 server error": 1}
    assert failure_causes([{"error": response.error}]) == "503 server error x1"
    throttled = Breaker(1, 1.0)
    throttled.record(False, "429 rate limited: slow down")  # a window of one would open on a failure
