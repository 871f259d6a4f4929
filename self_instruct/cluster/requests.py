"""Model requests sent from Ray workers (``executor = "ray"``).

The driver keeps what makes a run reproducible and crash-safe: the response cache, the usage record
of every request (put on record before it is sent), the accounting, the order in which answers are
applied and the files. Only the sending itself, with its retries, its rate limits and its
concurrency, runs in ``ray.workers`` actors spread over the cluster's nodes. Each worker holds its
own backend and its share of ``llm.concurrency``, ``llm.rpm`` and ``llm.tpm``, so together they keep
to the configured limits. A request goes to the worker with the fewest requests in flight.

Which worker answers a request never changes the answer (the same backend and settings in every
worker), so the files are those of the local executor, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ..llm.base import Backend, FatalError, Request, Response
from ..llm.engine import Breaker, Engine, RetryPolicy, Stats

# What adds up over the workers' endpoints (each worker paces its own share).
SUMMED = ("requests", "failures", "throttled", "paced", "window")


class Sender:
    """One Ray worker's part of the sending (an async actor): an engine without cache or usage record,
    whose ``_send`` does the rate limits, retries and the backend call."""

    def __init__(self, make_backend: Callable[[], Backend], json_form: str | None, limits: dict) -> None:
        backend = make_backend()
        if json_form:
            backend.json_form = json_form  # type: ignore[attr-defined]  # as the driver resolved it
        share = getattr(backend, "share_budgets", None)
        if share is not None:  # the endpoints' stated budgets are every worker's together
            share(limits["budget_share"])
        self.engine = Engine(
            backend,
            concurrency=limits["concurrency"],
            retry=limits["retry"],
            rpm=limits["rpm"],
            tpm=limits["tpm"],
            breaker=Breaker(*limits["breaker"]),
        )

    async def send(self, request: Request) -> tuple[Response | None, dict, BaseException | None]:
        """(the response, the counts it made, a FatalError to raise on the driver) for one request;
        the error travels as a value so the driver raises it as it is, not wrapped by Ray."""
        stats = Stats()
        async with self.engine._semaphore():
            try:
                response = await self.engine._send(request, stats)
            except FatalError as e:
                return None, dict(stats), e
        return response, dict(stats), None

    def endpoints(self) -> list[dict]:
        """This worker's counts per endpoint (requests, failures), as the backend describes them."""
        return self.engine.backend.describe().get("endpoints") or []

    async def close(self) -> None:
        await self.engine.backend.close()


def shares(total: float, n: int) -> list[float]:
    """``total`` split over ``n`` workers (0, no limit, stays 0 for each)."""
    return [total / n] * n


def concurrency_shares(total: int, n: int) -> list[int]:
    """``total`` slots over ``n`` workers, the first ones one more when it does not divide."""
    return [total // n + (i < total % n) for i in range(n)]


class RayRequests:
    """The engine's ``remote``: sends a request from the least busy worker, adds the counts it made
    to the stage's, and raises a FatalError on the driver as the local engine would."""

    def __init__(self, ray: Any, actors: list, concurrency: list[int]) -> None:
        self.ray, self.actors, self.concurrency = ray, actors, concurrency
        self.in_flight = [0] * len(actors)
        self.sent = [0] * len(actors)

    async def __call__(self, request: Request, stats: Stats) -> Response:
        i = min(range(len(self.actors)), key=lambda j: (self.in_flight[j] / self.concurrency[j], j))
        self.in_flight[i] += 1
        self.sent[i] += 1
        ref = self.actors[i].send.remote(request)
        try:
            response, counts, error = await ref
        except asyncio.CancelledError:
            self.ray.cancel(ref)  # Ctrl-C or a FatalError elsewhere: stop it at the worker too
            raise
        finally:
            self.in_flight[i] -= 1
        for key, n in counts.items():
            stats[key] += n
        if error is not None:
            raise error
        assert response is not None
        return response

    def endpoints(self, driver: list[dict]) -> list[dict]:
        """The driver's counts per endpoint (its own requests: the start-up checks) with every
        worker's added (the window: the workers' together); the driver's alone when a worker
        cannot answer."""
        try:
            answers = self.ray.get([a.endpoints.remote() for a in self.actors], timeout=30)
        except Exception:  # a worker gone (the run is ending with an error already)
            return driver
        out = {e["url"]: {k: e.get(k, 0) for k in ("url", *SUMMED)} for e in driver}
        for answer in answers:
            for e in answer:
                total = out.setdefault(e["url"], {"url": e["url"], **dict.fromkeys(SUMMED, 0)})
                for k in SUMMED:
                    total[k] += e.get(k, 0)
        return list(out.values())

    def describe(self) -> str:
        from . import connect_seconds

        connected = f"Ray connected in {connect_seconds:.1f} s"
        return f"executor = ray: {connected}; model requests sent from {self.workers()}"

    def workers(self) -> str:
        """The workers, their concurrency and the requests each sent."""
        return (
            f"{len(self.actors)} Ray workers (concurrency {' + '.join(map(str, self.concurrency))}; "
            f"requests {' + '.join(map(str, self.sent))})"
        )

    def close(self) -> None:
        # A worker already gone is no matter: nothing of the run's depends on it.
        with contextlib.suppress(Exception):
            self.ray.get([a.close.remote() for a in self.actors], timeout=30)
        for actor in self.actors:
            self.ray.kill(actor)


def request_workers(cfg: Any, make_backend: Callable[[], Backend], json_form: str | None) -> RayRequests:
    """``ray.workers`` sender actors (0: one per node of the cluster, at most llm.concurrency), each
    with its share of the concurrency and of the rpm/tpm limits."""
    from . import connect, worker_options

    ray = connect(cfg.ray.address)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    llm = cfg.llm
    n = max(1, min(cfg.ray.workers or nodes, llm.concurrency))
    slots = concurrency_shares(llm.concurrency, n)
    rpm, tpm = shares(llm.rpm, n), shares(llm.tpm, n)
    retry = RetryPolicy(llm.max_retries, llm.retry_initial, llm.retry_max)
    actor = ray.remote(num_cpus=0, scheduling_strategy="SPREAD")(Sender)
    actors = [
        actor.options(max_concurrency=slots[i] + 8, **worker_options()).remote(
            make_backend,
            json_form,
            {
                "concurrency": slots[i],
                "rpm": rpm[i],
                "tpm": tpm[i],
                "budget_share": slots[i] / sum(slots),
                "retry": retry,
                "breaker": (llm.breaker_window, llm.breaker_failure_rate),
            },
        )
        for i in range(n)
    ]
    return RayRequests(ray, actors, slots)
