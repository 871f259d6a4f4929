"""Rate limits: the headers in every form servers send them, and pacing by what they state."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from openai_server import FakeOpenAIServer, RateLimits

from self_instruct.errors import is_throttled
from self_instruct.executor import live_stats
from self_instruct.llm.base import Request
from self_instruct.llm.engine import Engine, RetryPolicy
from self_instruct.llm.openai_backend import OpenAIBackend, openai_error
from self_instruct.llm.ratelimit import Allowance, Gate, Limits, duration, limits, retry_after

# Headers as OpenAI's API sends them with an answer (values from its documentation's example).
OPENAI = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("6ms", 0.006),
        ("1h2m3.5s", 3723.5),
        ("7.66s", 7.66),
        ("20", 20.0),
        ("0.5", 0.5),
        ("0s", 0.0),
        ("soon", None),
        ("1s later", None),
        ("", None),
        (None, None),
    ],
)
def test_durations_in_go_form_or_seconds(text, seconds):
    got = duration(text)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_the_limits_of_an_answer():
    assert limits(OPENAI) == Limits(60, 150000, 59, 149984, 1.0, 360.0)
    assert limits(httpx.Headers({k.upper(): v for k, v in OPENAI.items()})).remaining_tokens == 149984
    assert not limits({"content-type": "application/json"}).stated
    assert limits({"x-ratelimit-remaining-requests": "n/a"}).remaining_requests is None


def test_retry_after_in_every_form():
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "2"}) == 0.25  # the finer one wins
    assert retry_after({"Retry-After": "Fri, 15 Jan 2027 08:00:30 GMT"}, now=now) == pytest.approx(30.0)
    assert retry_after({"retry-after": "Fri, 15 Jan 2027 07:59:00 GMT"}, now=now) == 0.0  # in the past
    assert retry_after({"retry-after": "-3"}) == 0.0
    assert retry_after({"retry-after": "whenever"}) is None
    assert retry_after({"retry-after-ms": "x"}) is None
    assert retry_after({}) is None


# -- pacing: the budgets and the window, on a clock the test moves -----------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stated_budget_is_kept_between_answers():
    clock = Clock()
    a = Allowance()
    assert a.delay(1, clock.now) == 0  # nothing stated yet: no pace
    marks = [a.charge(1) for _ in range(3)]
    # The first request's answer: 600 a minute (10 a second), 2 left, full again in 0.8 s.
    a.learn(2, 0.8, 600, marks[0], clock.now)
    assert a.available(clock.now) == 0  # the two sent after it used what was left
    assert a.delay(1, clock.now) == pytest.approx(0.1)  # one refills in a tenth of a second
    clock.now += 0.35
    assert a.available(clock.now) == pytest.approx(3.5)
    clock.now += 10
    assert a.available(clock.now) == pytest.approx(10 - 2)  # full at 10, the 2 sent since still count
    a.learn(9, 0.1, 600, marks[1], clock.now)  # a later request's answer
    assert a.available(clock.now) == pytest.approx(9 - 1)  # the one sent after it still counts
    a.learn(5, 0.5, 600, marks[0], clock.now)  # an answer to a request sent earlier: says less
    assert a.remaining == 9
    # More than the whole budget (full at 10): waits for a full one only, less what is in flight.
    assert a.delay(50, clock.now) == pytest.approx(0.2)


def test_a_budget_without_a_limit_holds_until_its_reset():
    a = Allowance()
    mark = a.charge(1)
    a.learn(0, 2.0, None, mark, 0.0)
    assert a.delay(1, 0.5) == pytest.approx(1.5)
    assert a.delay(1, 2.0) == 0


def test_the_window_halves_once_per_burst_and_grows_back_by_one():
    clock = Clock()
    gate = Gate(16, 32, clock)
    tickets = [gate.take(10) for _ in range(8)]  # FIRST: at most 8 before the first answer
    assert gate.delay(10) == float("inf")
    gate.done(tickets[0], None, throttled=True, retry_after=0.5)
    assert gate.window == 8 and gate.cool_until == clock.now + 0.5
    assert gate.delay(10) == pytest.approx(0.5)  # room for one, but every request waits the 429's wait
    gate.done(tickets[1], None, throttled=True, retry_after=0.5)
    assert gate.window == 8  # sent before the cut: the same burst, not cut again
    clock.now += 0.5
    assert gate.delay(10) == 0
    later = gate.take(10)
    gate.done(later, None, throttled=True, retry_after=None)  # sent after the cut: cut again
    assert gate.window == 4 and gate.cool_until == clock.now + 1.0  # no Retry-After: a second
    gate.done(tickets[2], None, failed=True)  # a 500: neither cuts nor widens
    assert gate.window == 4
    for t in tickets[3:7]:  # a window's worth of successes in a row: one more
        gate.done(t, None)
    assert gate.window == 5
    assert gate.describe() == {"window": 5, "window_low": 4, "window_high": 16, "throttled": 3}
    small = Gate(1, 1, clock)
    small.done(small.take(1), None, throttled=True, retry_after=0)
    assert small.window == 1  # never below one


def test_the_gate_waits_for_the_budget_its_endpoint_states():
    clock = Clock()
    gate = Gate(64, 64, clock)
    first = gate.take(100)
    headers = {**OPENAI, "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
    gate.done(first, limits(headers), throttled=False, retry_after=None)
    assert gate.delay(100) == pytest.approx(1.0)  # 60 a minute, none left: one a second
    clock.now += 1.0
    assert gate.delay(100) == 0
    assert gate.delay(200_000) == pytest.approx(0)  # tokens: more than the budget waits for a full one
    assert gate.describe()["limit_requests_per_minute"] == 60


# -- against a real server that enforces limits it does not tell the client ---------------------


def _send(urls: list[str], n: int, concurrency: int, max_tokens: int = 5, prompt: str = "Say hi to {i}."):
    backend = OpenAIBackend("m", base_urls=urls, api="completions", max_concurrency=concurrency)
    engine = Engine(backend, concurrency=concurrency, retry=RetryPolicy(8, 0.05, 2.0))
    requests = [Request(prompt=prompt.format(i=i), max_tokens=max_tokens) for i in range(n)]

    async def go():
        try:
            return await engine.run(requests, stage="s")
        finally:
            await backend.close()

    responses = asyncio.run(go())
    assert all(r.ok for r in responses)
    return {e["url"]: e for e in backend.describe()["endpoints"]}


def test_requests_are_paced_by_the_budget_the_server_states():
    limits_ = RateLimits(rpm=1200, burst=1.0)  # 20 a second, 20 at most at once; the client is not told
    with FakeOpenAIServer(latency=0.05, limits=limits_) as server:
        [endpoint] = _send([server.base_url], 100, concurrency=32).values()
    # Without pacing, 32 at once against a budget of 20 is a burst of 429s, and more after it.
    assert server.counts["rate_limited"] <= 1
    assert server.counts["answered"] == 100
    assert endpoint["limit_requests_per_minute"] == 1200 and endpoint["paced"] > 0


def test_tokens_are_paced_too():
    limits_ = RateLimits(tpm=12000, burst=1.0)  # 200 tokens a second; each request counts 22
    with FakeOpenAIServer(latency=0.05, limits=limits_) as server:
        [endpoint] = _send(
            [server.base_url], 60, concurrency=16, max_tokens=20, prompt="x" * 40 + " {i}"
        ).values()
    assert server.counts["rate_limited"] <= 1
    assert server.counts["answered"] == 60
    assert endpoint["limit_tokens_per_minute"] == 12000


def test_a_fleet_shares_work_by_what_each_endpoint_grants():
    fast, slow = RateLimits(rpm=2400, burst=1.0), RateLimits(rpm=600, burst=1.0)  # 4 to 1
    with (
        FakeOpenAIServer(latency=0.05, limits=fast) as a,
        FakeOpenAIServer(latency=0.05, limits=slow) as b,
    ):
        endpoints = _send([a.base_url, b.base_url], 200, concurrency=32)
    share = a.counts["answered"] / 200
    assert 0.7 <= share <= 0.9, share  # 0.8 is each one's share of the capacity
    assert a.counts["rate_limited"] + b.counts["rate_limited"] <= 2
    assert sum(e["requests"] - e.get("throttled", 0) for e in endpoints.values()) == 200


def test_a_503_that_says_overloaded_slows_down_like_a_429():
    request = httpx.Request("POST", "http://127.0.0.1/v1/completions")
    overloaded = openai.InternalServerError(
        "The engine is currently overloaded, please try again later",
        response=httpx.Response(503, request=request, headers={"retry-after-ms": "300"}),
        body=None,
    )
    error = openai_error(overloaded)
    assert str(error).startswith("503 overloaded") and is_throttled(str(error))
    assert error.retry_after == 0.3
    down = openai.InternalServerError(
        "Service Unavailable", response=httpx.Response(503, request=request), body=None
    )
    assert not is_throttled(str(openai_error(down)))  # a server that is down is failing, not slowing


def test_requests_sent_earlier_and_still_in_flight_are_taken_as_not_counted():
    clock = Clock()
    gate = Gate(8, 8, clock)
    early, late = gate.take(1), gate.take(1)
    # The later one is answered first: the earlier one may reach the server after it.
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "5"}
    gate.done(late, limits(headers), throttled=False, retry_after=None)
    assert gate.requests.available(clock.now) == 4
    gate.done(
        early, limits({**headers, "x-ratelimit-remaining-requests": "4"}), throttled=False, retry_after=None
    )
    assert gate.requests.available(clock.now) == 4  # older in sending order: says less, ignored


def test_a_share_of_the_budget_for_one_of_several_senders():
    backend = OpenAIBackend("m", base_urls=["http://127.0.0.1:9/v1"], max_concurrency=8)
    backend.share_budgets(0.25)  # one Ray worker of four
    gate = backend.endpoints[0].gate
    gate.clock = clock = Clock()
    gate.done(gate.take(1), limits(OPENAI), throttled=False, retry_after=None)
    assert gate.requests.available(clock.now) == pytest.approx(59 / 4)
    assert gate.describe()["limit_requests_per_minute"] == 15


def test_the_progress_bar_shows_the_window_the_endpoints_grant():
    backend = OpenAIBackend(
        "m", base_urls=["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], max_concurrency=64
    )
    engine = Engine(backend, concurrency=64)
    assert live_stats(engine, "bootstrap")["win"] == "64/64"  # 32 each to start
    backend.endpoints[0].gate.window = 8.0  # cut twice by 429s
    assert live_stats(engine, "bootstrap")["win"] == "40/64"
