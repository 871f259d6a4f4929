"""Rate-limit headers in every form servers send them."""

from __future__ import annotations

import httpx
import pytest

from self_instruct.llm.ratelimit import Limits, duration, limits, retry_after

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
