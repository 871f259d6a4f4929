"""What a server says about its rate limits, read from its answer's headers.

OpenAI and most compatible servers (vLLM behind a gateway, Azure OpenAI, OpenRouter, LiteLLM) send
with every answer:

    x-ratelimit-limit-requests: 10000        x-ratelimit-limit-tokens: 2000000
    x-ratelimit-remaining-requests: 9999     x-ratelimit-remaining-tokens: 1999975
    x-ratelimit-reset-requests: 6ms          x-ratelimit-reset-tokens: 1m30.5s

(the resets as Go durations, or plain seconds), and with a 429 or 503 how long to wait:
``retry-after-ms: 250``, ``retry-after: 2`` or ``retry-after: Wed, 21 Oct 2026 07:28:00 GMT``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration(text: str | None) -> float | None:
    """Seconds in a Go duration ("1h2m3.5s", "6ms", "0s") or a plain number of seconds; None when
    it is neither."""
    if text is None:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers by lower-case name (one pass; a plain dict may have any capitals)."""
    return {k.lower(): v for k, v in headers.items()}


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before trying again: ``retry-after-ms``, else ``retry-after`` in seconds or
    as an HTTP date; None when the server gives no (readable) wait."""
    headers = _lower(headers)
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Limits:
    """An endpoint's rate limits as its last answer stated them (None: not stated)."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests: float | None = None  # seconds until the request budget is full again
    reset_tokens: float | None = None

    @property
    def stated(self) -> bool:
        return any(v is not None for v in vars(self).values())


def limits(headers: Mapping[str, str]) -> Limits:
    """The ``x-ratelimit-*`` headers of an answer."""
    lower = _lower(headers)
    get = lambda name: lower.get(f"x-ratelimit-{name}")  # noqa: E731
    return Limits(
        limit_requests=_int(get("limit-requests")),
        limit_tokens=_int(get("limit-tokens")),
        remaining_requests=_int(get("remaining-requests")),
        remaining_tokens=_int(get("remaining-tokens")),
        reset_requests=duration(get("reset-requests")),
        reset_tokens=duration(get("reset-tokens")),
    )


# -- pacing an endpoint ------------------------------------------------------------------------


class Allowance:
    """One of an endpoint's budgets (requests or tokens) as its headers last stated it, kept
    current between answers by what was sent since.

    A stated limit is taken as per minute (OpenAI's are), so the budget refills at ``limit / 60`` a
    second up to what the reset says is full (``remaining + rate x reset``, at most the limit).
    Providers' resets do not say how fast it refills (OpenAI documents 16 tokens used with a reset
    of 6m0s), so the rate is never taken from them. A limit per day (Groq's requests) is thus
    overestimated near its end, where 429s and the window take over. Without a limit,
    ``remaining`` is all there is until the reset passes.

    The state is taken when the answer arrives; the server counted the request when it arrived,
    before the answer's latency, so the budget is underestimated by about latency x rate: a steady
    sender still goes at the full rate, with that much left unused at the server."""

    def __init__(self) -> None:
        self.sent = 0.0  # units sent through this budget so far
        self.known = False
        self.remaining = 0.0  # as last stated
        self.mark = 0.0  # ``sent`` just after the request whose answer stated it went out
        self.counted = 0.0  # of ``sent``, what that statement counted
        self.at = 0.0  # when it was stated
        self.rate = 0.0  # units a second it refills (0: not stated)
        self.full = math.inf  # what it holds when full
        self.reset_at = 0.0
        # The part of the endpoint's budget this process may use: several processes sending to one
        # endpoint (Ray workers) each take their share of the concurrency's part of what it states.
        self.share = 1.0

    def charge(self, units: float) -> float:
        """Count a request's units as sent; returns its mark, for ``learn`` when it is answered."""
        self.sent += units
        return self.sent

    def learn(
        self,
        remaining: int | None,
        reset: float | None,
        limit: int | None,
        mark: float,
        now: float,
        pending: float = 0.0,
    ) -> None:
        """The budget stated by the answer to the request charged at ``mark``. ``pending``: the
        units of requests sent before it and not answered yet; they may have reached the server
        after it (they go over other connections), so they are taken as not counted. An answer
        older (in sending order) than the one already learned from says less: it is ignored."""
        if remaining is None or (self.known and mark < self.mark):
            return
        self.known = True
        self.remaining = remaining * self.share
        self.mark, self.counted, self.at = mark, mark - pending, now
        self.rate = limit * self.share / 60 if limit else 0.0
        self.full = math.inf
        if limit:  # full when the reset has passed at this rate; never more than the limit says
            self.full = max(limit * self.share, self.remaining)
            if reset is not None:
                self.full = min(self.full, self.remaining + self.rate * reset)
        self.reset_at = now + (reset or 0.0)

    def available(self, now: float) -> float:
        if not self.known:
            return math.inf
        if self.rate:
            level = min(self.full, self.remaining + self.rate * (now - self.at))
        elif now >= self.reset_at:
            return math.inf  # reset, to a limit nobody stated: the next answer will say
        else:
            level = self.remaining
        return level - (self.sent - self.counted)

    def delay(self, units: float, now: float) -> float:
        """Seconds until ``units`` fit (0: now). A request larger than the whole budget waits for
        a full one."""
        units = min(units, self.full)
        short = units - self.available(now)
        if short <= 0:
            return 0.0
        if self.rate:
            return short / self.rate
        return max(self.reset_at - now, 1e-3)


@dataclass
class Ticket:
    """A request let through a ``Gate``: its marks in the budgets, for learning from its answer."""

    sent: int
    requests: float
    tokens: float
    size: float  # its tokens


class Gate:
    """One endpoint's pace: an adaptive concurrency window and the budgets its headers state.

    - The window starts at the endpoint's share of the concurrency. A 429 (or a 503 that says the
      server is overloaded) halves it, not below 1, once per burst: answers to requests sent before
      the last cut do not cut it again. Each ``window`` successes in a row grow it by one, up to
      ``ceiling`` (additive increase, multiplicative decrease, as TCP does).
    - Until the endpoint's first answer at most ``FIRST`` requests go to it: a server that states
      its budget says it before a burst can overrun a small one. This costs at most one answer's
      latency at the start.
    - A request is let through when the window has room, no cool-down is running (a 429's
      Retry-After holds every request to the endpoint, not only the one refused) and the stated
      request and token budgets hold it.
    """

    FIRST = 8

    def __init__(self, window: int, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.window = float(min(max(1, window), self.ceiling))
        self.clock = clock
        self._pending: dict[int, Ticket] = {}  # requests in flight, in sending order
        self.answered = False
        self.cool_until = 0.0
        self.requests, self.tokens = Allowance(), Allowance()
        self._sent = 0  # requests let through
        self._cut_at = 0  # ``_sent`` when the window was last cut
        self._streak = 0
        # What the session record shows: the smallest and largest windows, 429s, requests held back.
        self.low = self.high = self.window
        self.throttled = 0
        self.paced = 0

    def delay(self, tokens: float) -> float:
        """Seconds until a request of ``tokens`` may go (0: now; inf: when a request in flight ends)."""
        if self.in_flight >= (int(self.window) if self.answered else min(int(self.window), self.FIRST)):
            return math.inf
        now = self.clock()
        return max(self.cool_until - now, self.requests.delay(1, now), self.tokens.delay(tokens, now), 0.0)

    def take(self, tokens: float) -> Ticket:
        """Let a request through (``delay`` said 0)."""
        self._sent += 1
        ticket = Ticket(self._sent, self.requests.charge(1), self.tokens.charge(tokens), tokens)
        self._pending[ticket.sent] = ticket
        return ticket

    def done(
        self,
        ticket: Ticket,
        limits: Limits | None,
        *,
        throttled: bool = False,
        failed: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """A request's answer (or error) came back: learn the budgets it states, and cut the window
        (throttled) or widen it (answered; another error does neither)."""
        del self._pending[ticket.sent]
        self.answered = True
        now = self.clock()
        if limits is not None and limits.stated:
            older = [t for t in self._pending.values() if t.sent < ticket.sent]
            self.requests.learn(
                limits.remaining_requests,
                limits.reset_requests,
                limits.limit_requests,
                ticket.requests,
                now,
                pending=len(older),
            )
            self.tokens.learn(
                limits.remaining_tokens,
                limits.reset_tokens,
                limits.limit_tokens,
                ticket.tokens,
                now,
                pending=sum(t.size for t in older),
            )
        if throttled:
            self.throttled += 1
            self._streak = 0
            self.cool_until = max(self.cool_until, now + (retry_after if retry_after is not None else 1.0))
            if ticket.sent > self._cut_at:  # once per burst
                self.window = max(1.0, self.window / 2)
                self._cut_at = self._sent
                self.low = min(self.low, self.window)
            return
        if failed:
            return
        self._streak += 1
        if self._streak >= self.window and self.window < self.ceiling:
            self.window += 1
            self._streak = 0
            self.high = max(self.high, self.window)

    def release(self, ticket: Ticket) -> None:
        """A request let through that never reached an answer (cancelled)."""
        del self._pending[ticket.sent]

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def describe(self) -> dict:
        out: dict[str, float] = {
            "window": int(self.window),
            "window_low": int(self.low),
            "window_high": int(self.high),
        }
        if self.throttled:
            out["throttled"] = self.throttled
        if self.paced:
            out["paced"] = self.paced
        for name, a in (("requests", self.requests), ("tokens", self.tokens)):
            if a.known and a.rate:
                out[f"limit_{name}_per_minute"] = round(a.rate * 60)
        return out
