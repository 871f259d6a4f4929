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

import re
import time
from collections.abc import Mapping
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


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict with other capitals
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before trying again: ``retry-after-ms``, else ``retry-after`` in seconds or
    as an HTTP date; None when the server gives no (readable) wait."""
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
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
    get = lambda name: _header(headers, f"x-ratelimit-{name}")  # noqa: E731
    return Limits(
        limit_requests=_int(get("limit-requests")),
        limit_tokens=_int(get("limit-tokens")),
        remaining_requests=_int(get("remaining-requests")),
        remaining_tokens=_int(get("remaining-tokens")),
        reset_requests=duration(get("reset-requests")),
        reset_tokens=duration(get("reset-tokens")),
    )
