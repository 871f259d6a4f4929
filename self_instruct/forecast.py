"""A stage's forecast: what reaching its target will take, from what its first requests did.

Once a stage has applied ``MIN_REQUESTS`` answers this session and made progress, the observed
yield (units of progress per request: instructions accepted, tasks classified, ...) and rate
(requests per second) project the requests, tokens, cost and time still needed, with a range from
the spread of the yield per request (a 95% normal interval on its mean). The executor prints the
first forecast once (with the progress bars), keeps the time left current in the bar, and records
the first forecast and the session's actuals in the manifest, so every run shows how good it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

MIN_REQUESTS = 30


def _spent(stats: Mapping[str, float] | None) -> tuple[float, float]:
    if not stats:
        return 0.0, 0.0
    return stats.get("prompt_tokens", 0) + stats.get("completion_tokens", 0), stats.get("cost_usd", 0.0)


def _human_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


class Forecast:
    def __init__(self, stage: str, done: int, stats: Callable[[], Mapping[str, float] | None]) -> None:
        """``stats``: the stage's counts in the engine as they are now (tokens, cost)."""
        self.stage, self.stats = stage, stats
        self.start_done = self.last_done = done
        self.total = done
        self.n = 0  # answers applied this session, and the sums of their progress and its square
        self.sum = self.sum_sq = 0.0
        self.t0 = time.perf_counter()
        self.tokens0, self.cost0 = _spent(stats())
        self.first: dict | None = None

    def applied(self, done: int, total: int) -> str | None:
        """Count one applied answer; returns the forecast's line the first time there is one."""
        delta = done - self.last_done
        self.n += 1
        self.sum += delta
        self.sum_sq += delta * delta
        self.last_done, self.total = done, total
        if self.first is None and self.n >= MIN_REQUESTS and done > self.start_done:
            self.first = self.project()
            return self.line(self.first)
        return None

    def project(self) -> dict:
        """Requests, tokens, cost and seconds still needed: [low, expected, high]."""
        n = self.n
        mean = self.sum / n
        variance = max(0.0, (self.sum_sq - n * mean * mean) / (n - 1)) if n > 1 else 0.0
        half = 1.96 * math.sqrt(variance / n)
        remaining = max(0, self.total - self.last_done)
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        tokens, cost = _spent(self.stats())
        per_request = ((tokens - self.tokens0) / n, (cost - self.cost0) / n, elapsed / n)

        def need(yield_: float) -> float:
            return remaining / yield_ if yield_ > 0 else math.inf

        requests = [need(mean + half), need(mean), need(max(mean - half, 0.0))]
        return {
            "after_requests": n,
            "remaining": remaining,
            "yield_per_request": round(mean, 4),
            "requests": [_round(r) for r in requests],
            "tokens": [_round(r * per_request[0]) for r in requests],
            "cost_usd": [_round(r * per_request[1], 4) for r in requests],
            "seconds": [_round(r * per_request[2], 1) for r in requests],
        }

    def line(self, f: dict) -> str:
        def span(values: list, fmt=lambda v: f"{v:,.0f}") -> str:
            lo, mid, hi = (fmt(v) if v is not None else "?" for v in values)
            return f"{mid} ({lo} to {hi})"

        text = (
            f"forecast {self.stage}: {f['remaining']:,} to go at {f['yield_per_request']:g} per request: "
            f"{span(f['requests'])} requests, {span(f['tokens'])} tokens"
        )
        if any(f["cost_usd"]):
            text += ", $" + span(f["cost_usd"], lambda v: f"{v:.2f}" if v >= 1 else f"{v:.4f}")
        return text + ", " + span(f["seconds"], _human_seconds)

    def time_left(self) -> str | None:
        """The expected time still needed now, for the progress bar."""
        if self.first is None:
            return None
        seconds = self.project()["seconds"][1]
        return None if seconds is None else _human_seconds(seconds)

    def actual(self) -> dict:
        """What this session's part of the stage took."""
        tokens, cost = _spent(self.stats())
        return {
            "requests": self.n,
            "progress": self.last_done - self.start_done,
            "tokens": round(tokens - self.tokens0),
            "cost_usd": round(cost - self.cost0, 4),
            "seconds": round(time.perf_counter() - self.t0, 1),
        }


def _round(value: float, digits: int = 0) -> float | None:
    """A JSON-safe number (None: never, at the observed yield)."""
    if math.isinf(value) or math.isnan(value):
        return None
    return round(value, digits) if digits else float(round(value))
