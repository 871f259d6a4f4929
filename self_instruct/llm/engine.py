"""The request engine: every stage sends its requests through here.

- bounded concurrency (the smaller of the configured limit and what the backend can serve);
- retries with tenacity for TransientError (exponential backoff with jitter, or the server's
  Retry-After when it gives one), a bounded number of times;
- a request that still fails comes back as a Response with ``error`` set: the caller records it;
- a FatalError (bad key, unknown model) stops the whole batch at once;
- counts per stage: requests, retries, failures, tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from .base import Backend, FatalError, Request, Response, TransientError


@dataclass
class RetryPolicy:
    max_retries: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0


class Engine:
    def __init__(self, backend: Backend, *, concurrency: int = 8, retry: RetryPolicy | None = None) -> None:
        self.backend = backend
        self.concurrency = max(1, min(concurrency, backend.max_concurrency))
        self.retry = retry or RetryPolicy()
        self.stats: dict[str, Counter] = {}
        self._backoff = wait_exponential_jitter(
            initial=self.retry.backoff_initial, max=self.retry.backoff_max
        )

    def _wait(self, state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry.backoff_max)
        return self._backoff(state)

    async def _one(self, request: Request, stats: Counter, sem: asyncio.Semaphore) -> Response:
        attempts = 0
        async with sem:
            start = time.perf_counter()
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.retry.max_retries + 1),
                    wait=self._wait,
                    retry=retry_if_exception_type(TransientError),
                    reraise=True,
                ):
                    with attempt:
                        attempts += 1
                        if attempts > 1:
                            stats["retries"] += 1
                        response = await self.backend.complete(request)
            except TransientError as e:
                stats["failures"] += 1
                response = Response(text="", finish_reason="error", error=f"{e} (after {attempts} attempts)")
            except FatalError:
                raise
            except Exception as e:  # a bug or a local model error: this request fails, the run goes on
                stats["failures"] += 1
                response = Response(text="", finish_reason="error", error=f"{e.__class__.__name__}: {e}")
            stats["seconds_in_requests"] += time.perf_counter() - start
        response.attempts = attempts
        stats["requests"] += 1
        stats["prompt_tokens"] += response.prompt_tokens
        stats["completion_tokens"] += response.completion_tokens
        if response.finish_reason == "length":
            stats["finish_length"] += 1
        return response

    async def run(
        self,
        requests: Sequence[Request],
        *,
        stage: str,
        on_result: Callable[[int, Response], None] | None = None,
    ) -> list[Response]:
        """Responses in the order of ``requests``, whatever order they finish in."""
        stats = self.stats.setdefault(stage, Counter())
        sem = asyncio.Semaphore(self.concurrency)
        results: list[Response | None] = [None] * len(requests)

        async def go(i: int, req: Request) -> None:
            results[i] = await self._one(req, stats, sem)
            if on_result:
                on_result(i, results[i])

        try:
            async with asyncio.TaskGroup() as tg:
                for i, req in enumerate(requests):
                    tg.create_task(go(i, req))
        except* FatalError as group:
            raise group.exceptions[0] from None
        return results  # type: ignore[return-value]
