"""The request engine: every stage sends its requests through here.

- a response cache (SQLite) in front of the model: a cached answer costs no request;
- bounded concurrency (the smaller of the configured limit and what the backend can serve), and
  optional requests-per-minute (a leaky bucket) and tokens-per-minute (a sliding minute) limits;
  within them the OpenAI backend paces each endpoint by what it grants (``ratelimit.Gate``: a
  concurrency window cut by 429s, and the budgets its headers state);
- retries with tenacity for TransientError (exponential backoff with jitter, or the server's
  Retry-After when it gives one), a bounded number of times;
- a request that still fails comes back as a Response with ``error`` set: the caller records it;
- a FatalError (bad key, unknown model) stops the whole batch at once;
- ``run`` answers a list of requests; a ``Pipe`` takes requests one by one as a stage builds them
  and hands the answers back in the order they were sent, so a stage keeps the fleet busy without
  waiting for a whole batch;
- counts per stage: requests, cache hits, retries, failures, tokens, estimated cost, and the time
  the stage spent waiting for the model.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from ..errors import failure_cause, is_throttled
from .base import Backend, EndpointDown, FatalError, Request, Response, TransientError
from .budget import Budget
from .cache import ResponseCache, cache_key
from .prices import Price


class Stats(dict[str, float]):
    """One stage's counts (requests, tokens, retries, ...) and sums (seconds, cost); a key not yet
    counted reads 0."""

    def __missing__(self, key: str) -> float:
        return 0


@dataclass
class RetryPolicy:
    max_retries: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0


class Breaker:
    """A circuit breaker: when ``rate`` or more of the last ``window`` attempts failed, the endpoint
    is not serving, and the run stops early with the cause instead of grinding through every request.

    Rate limiting (429) is the server throttling, not failing: it does not count either way."""

    def __init__(self, window: int = 20, rate: float = 0.9) -> None:
        self.window, self.rate = window, rate
        self.outcomes: deque[bool] = deque(maxlen=max(window, 1))
        self.causes: Counter = Counter()

    def record(self, ok: bool, error: str = "") -> None:
        if self.window <= 0 or is_throttled(error):
            return
        self.outcomes.append(ok)
        if not ok:
            self.causes[failure_cause(error)] += 1
        failed = self.outcomes.count(False)
        if len(self.outcomes) == self.window and failed >= self.rate * self.window:
            top = ", ".join(f"{cause} x{n}" for cause, n in self.causes.most_common(2))
            raise EndpointDown(
                f"the endpoint is not serving: {failed} of the last {self.window} attempts failed ({top}); "
                "stopped early (llm.breaker_window, llm.breaker_failure_rate)"
            )


def _prompt_tokens_estimate(request: Request) -> int:
    return len(request.prompt) // 4  # about four characters a token for English


def _estimate_tokens(request: Request) -> int:
    # The completion may use all of max_tokens.
    return _prompt_tokens_estimate(request) + request.max_tokens


class TokenWindow:
    """A tokens-per-minute limit over a sliding minute: the tokens of the requests sent in the last
    60 seconds never add up to more than ``limit``, except that a request larger than the whole
    budget waits until the window is empty and then goes alone.

    A request is admitted on an estimate (prompt/4 + max_tokens) and ``settle`` replaces it with
    the tokens the server reported, so the limit follows real usage."""

    WINDOW = 60.0
    POLL = 0.25

    def __init__(
        self, limit: float, clock: Callable[[], float] = time.monotonic, sleep=asyncio.sleep
    ) -> None:
        self.limit = limit
        self._clock, self._sleep = clock, sleep
        self._sent: deque[list] = deque()  # [time, tokens], oldest first
        self._lock = asyncio.Lock()

    def _used(self, now: float) -> float:
        while self._sent and self._sent[0][0] <= now - self.WINDOW:
            self._sent.popleft()
        return sum(tokens for _, tokens in self._sent)

    async def acquire(self, tokens: int) -> list:
        async with self._lock:  # first come, first served
            while True:
                now = self._clock()
                used = self._used(now)
                if used + tokens <= self.limit or (not self._sent and tokens > self.limit):
                    entry = [now, tokens]
                    self._sent.append(entry)
                    return entry
                # Room comes back when the oldest request leaves the window, or sooner when
                # answers settle below their estimates: look again every POLL seconds.
                await self._sleep(min(self._sent[0][0] + self.WINDOW - now + 0.001, self.POLL))

    def settle(self, entry: list, tokens: int) -> None:
        entry[1] = tokens


def _per_minute(rate: float) -> AsyncLimiter | None:
    """A leaky bucket for ``rate`` per minute whose burst is one second's worth (at least 1)."""
    if rate <= 0:
        return None
    return AsyncLimiter(rate / 60, 1.0) if rate >= 60 else AsyncLimiter(1, 60 / rate)


class Engine:
    def __init__(
        self,
        backend: Backend,
        *,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        cache: ResponseCache | None = None,
        rpm: float = 0,
        tpm: float = 0,
        price: Price | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.breaker = breaker or Breaker()
        self.usage: Callable[[dict], None] | None = None  # receives one usage record per request
        self.backend = backend
        self.concurrency = max(1, min(concurrency, backend.max_concurrency))
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self.price = price
        self._rpm = _per_minute(rpm)
        self._tpm = TokenWindow(tpm) if tpm > 0 else None
        self.stats: dict[str, Stats] = {}
        self._backoff = wait_exponential_jitter(
            multiplier=self.retry.backoff_initial, max=self.retry.backoff_max
        )
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._detached: set[asyncio.Task] = set()  # requests closed pipes left behind
        self._numbered = 0  # requests sent so far (cache misses), numbered for the usage records
        # Sends a request elsewhere (cluster.requests: from Ray workers that do the rate limits and
        # retries); None: _send, in this process. The cache, accounting and usage stay here.
        self.remote: Callable[[Request, Stats], Awaitable[Response]] | None = None
        self.budget: Budget | None = None  # llm.max_cost / llm.max_tokens_total (shared with the judge's)

    def refuse(self, request: Request) -> str | None:
        """Why ``request`` may not be sent (the budget, as one line), or None: a cache hit costs
        nothing; otherwise its worst case is reserved until it is answered."""
        if self.budget is None:
            return None
        if self.cache is not None:
            key = cache_key(self.backend.name, self.backend.model, self.backend.api, request)
            if self.cache.get(key) is not None:
                return None
        prompt = _prompt_tokens_estimate(request)
        worst = 0.0
        if self.price:
            worst = (prompt * self.price.prompt + request.max_tokens * self.price.completion) / 1e6
        return self.budget.refuse(id(request), prompt + request.max_tokens, worst)

    def _settle(self, request: Request, response: Response | None, price_factor: float = 1.0) -> None:
        """Replace a request's reservation in the budget by what it spent."""
        if self.budget is not None:
            if response is None:
                self.budget.settle(id(request))
            else:
                tokens = response.prompt_tokens + response.completion_tokens
                self.budget.settle(id(request), tokens, self._cost(response, price_factor))

    async def drain(self, *, cancel: bool = False) -> None:
        """Wait for (or cancel) the requests closed pipes left behind: once sent they are paid for, so
        their usage is recorded and their answers cached."""
        tasks, self._detached = list(self._detached), set()
        for t in tasks if cancel else ():
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _semaphore(self) -> asyncio.Semaphore:
        """The concurrency limit, shared by every run and pipe of the current event loop."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.concurrency))
        return self._slots[1]

    def pipe(self, stage: str, on_result: Callable[[Response], None] | None = None) -> Pipe:
        return Pipe(self, stage, on_result)

    def _wait(self, state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry.backoff_max)
        return self._backoff(state)

    async def _send(self, request: Request, stats: Stats) -> Response:
        """One request to the model, with rate limits and retries."""
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.retry.max_retries + 1),
                wait=self._wait,
                retry=retry_if_exception_type(TransientError),
                reraise=True,
            ):
                with attempt:
                    if self._rpm:
                        await self._rpm.acquire()
                    entry = await self._tpm.acquire(_estimate_tokens(request)) if self._tpm else None
                    attempts += 1
                    if attempts > 1:
                        stats["retries"] += 1
                    stats["sent"] += 1
                    try:
                        response = await self.backend.complete(request)
                    except TransientError as e:
                        stats[f"error:{failure_cause(str(e))}"] += 1
                        self.breaker.record(False, str(e))
                        raise
                    self.breaker.record(True)
                    used = response.prompt_tokens + response.completion_tokens
                    if self._tpm and entry is not None and used:
                        self._tpm.settle(entry, used)
        except TransientError as e:
            stats["failures"] += 1
            response = Response(text="", finish_reason="error", error=f"{e} (after {attempts} attempts)")
        except FatalError:
            raise
        except Exception as e:  # a local model error or a bug: this request fails, the run goes on
            stats["failures"] += 1
            response = Response(text="", finish_reason="error", error=f"{e.__class__.__name__}: {e}")
        response.attempts = attempts
        return response

    def _lookup(self, request: Request, stats: Stats) -> tuple[str | None, Response | None]:
        """(cache key, cached response): both None without a cache; a hit is counted."""
        if self.cache is None:
            return None, None
        key = cache_key(self.backend.name, self.backend.model, self.backend.api, request)
        cached = self.cache.get(key)
        if cached is not None:
            stats["cache_hits"] += 1
        return key, cached

    def _cost(self, response: Response, price_factor: float) -> float:
        if not self.price:
            return 0.0
        tokens = (
            response.prompt_tokens * self.price.prompt + response.completion_tokens * self.price.completion
        )
        return price_factor * tokens / 1e6

    def _account(
        self,
        stats: Stats,
        key: str | None,
        response: Response,
        *,
        stage: str,
        seconds: float,
        price_factor: float = 1.0,
        number: int | None = None,
    ) -> None:
        """Count a response the model answered, cache it when it succeeded, and log its usage."""
        if self.cache is not None and key is not None and response.ok:
            self.cache.put(key, response)
        cost = self._cost(response, price_factor)
        stats["prompt_tokens"] += response.prompt_tokens
        stats["completion_tokens"] += response.completion_tokens
        if cost:
            stats["cost_usd"] += cost
        if response.finish_reason == "length":
            stats["finish_length"] += 1
        self._log(stage, response, cached=False, seconds=seconds, cost=cost, number=number)

    def _log(
        self,
        stage: str,
        response: Response,
        *,
        cached: bool,
        seconds: float,
        cost: float,
        number: int | None = None,
    ) -> None:
        """One usage record per request, live or from the cache, to ``self.usage`` (the run's
        usage.jsonl): what a killed session did is known from these, not from memory."""
        if self.usage is None:
            return
        record = {
            "stage": stage,
            "cached": cached,
            "ok": response.ok,
            "attempts": response.attempts,
            "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens,
            "finish_reason": response.finish_reason,
            "seconds": round(seconds, 4),
        }
        if cost:
            record["cost_usd"] = cost
        if response.meta.get("endpoint"):
            record["endpoint"] = response.meta["endpoint"]
        if number is not None:  # the answer to the request put on record by _intent
            record["request"] = number
        self.usage(record)

    async def _one(self, request: Request, stats: Stats, stage: str) -> Response:
        stats["requests"] += 1
        key, cached = self._lookup(request, stats)
        if cached is not None:
            self._log(stage, cached, cached=True, seconds=0.0, cost=0.0)
            return cached
        async with self._semaphore():
            number = self._intent(stage, request)
            t0 = time.perf_counter()
            try:
                response = await (self.remote or self._send)(request, stats)
            except BaseException as e:  # cancelled (Ctrl-C, a FatalError elsewhere) or fatal
                self._ended(stage, number, e)
                self._settle(request, None)
                raise
        self._account(stats, key, response, stage=stage, seconds=time.perf_counter() - t0, number=number)
        self._settle(request, response)
        return response

    def _intent(self, stage: str, request: Request) -> int:
        """Put a request on record before it is sent: a session killed while it is at the server
        leaves this line without an answer, counted as ``unanswered_at_kill`` (the server may have
        answered it, and a paid one bills it). Returns the request's number in this engine."""
        self._numbered += 1
        if self.usage is not None:
            estimate = _prompt_tokens_estimate(request)
            self.usage(
                {"event": "sent", "stage": stage, "request": self._numbered, "prompt_tokens_est": estimate}
            )
        return self._numbered

    def _ended(self, stage: str, number: int, error: BaseException) -> None:
        """A request that went out and came back with no answer to apply: on record as cancelled."""
        if self.usage is not None:
            cancelled = isinstance(error, asyncio.CancelledError)
            self.usage(
                {
                    "stage": stage,
                    "request": number,
                    "cancelled": cancelled,
                    "ok": False,
                    "finish_reason": "cancelled" if cancelled else "error",
                    "error": "" if cancelled else str(error)[:200],
                }
            )

    async def run(
        self,
        requests: Sequence[Request],
        *,
        stage: str,
        on_result: Callable[[Response], None] | None = None,
    ) -> list[Response]:
        """Responses in the order of ``requests``, whatever order they finish in (all of them sent
        through one pipe at once; a FatalError stops the rest, as in any pipe)."""
        pipe = self.pipe(stage, on_result)
        for request in requests:
            pipe.send(request)
        try:
            return [await pipe.take() for _ in requests]
        finally:
            await pipe.close(cancel=True)  # nothing left after a full run; the rest after an error

    async def run_batch_api(
        self,
        requests: Sequence[Request],
        *,
        stage: str,
        keys: list[str],
        state_path,
        poll_seconds: float = 30.0,
        on_progress: Callable[[int, int, str], None] | None = None,
    ) -> list[Response]:
        """Like run(), but the cache misses go to the OpenAI Batch API as one batch (half price)."""
        from .batch_api import run_batch_job

        stats = self.stats.setdefault(stage, Stats())
        stats["requests"] += len(requests)
        results: list[Response | None] = [None] * len(requests)
        cache_keys: list[str | None] = [None] * len(requests)
        todo = []
        for i, req in enumerate(requests):
            cache_keys[i], cached = self._lookup(req, stats)
            if cached is None:
                todo.append(i)
            else:
                results[i] = cached
                self._log(stage, cached, cached=True, seconds=0.0, cost=0.0)
        start = time.perf_counter()
        if todo:
            stats["batches"] += 1
            answers = await run_batch_job(
                self.backend,  # type: ignore[arg-type]  # batch_api is True only for OpenAIBackend
                [requests[i] for i in todo],
                [keys[i] for i in todo],
                state_path,
                poll_seconds=poll_seconds,
                on_progress=on_progress,
            )
            for i, response in zip(todo, answers, strict=True):
                results[i] = response
                stats["sent"] += 1
                if not response.ok:
                    stats["failures"] += 1
                # the Batch API: half price
                self._account(stats, cache_keys[i], response, stage=stage, seconds=0.0, price_factor=0.5)
                self._settle(requests[i], response, price_factor=0.5)
        stats["seconds_waiting"] += time.perf_counter() - start
        return results  # type: ignore[return-value]


class Pipe:
    """Requests sent as a stage builds them, answers taken in the order they were sent.

    The stage decides how many requests it keeps in flight (``in_flight``); the engine's concurrency
    limits how many of them are at the server. ``take`` waits for the oldest answer, or raises at
    once when any request in flight met a FatalError. ``close`` ends the pipe.
    """

    def __init__(self, engine: Engine, stage: str, on_result: Callable[[Response], None] | None) -> None:
        self.engine, self.stage, self.on_result = engine, stage, on_result
        self.stats = engine.stats.setdefault(stage, Stats())
        self._tasks: deque[asyncio.Task[Response]] = deque()
        self._fatal_error: BaseException | None = None

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet taken (answered or not)."""
        return len(self._tasks)

    def head_ready(self) -> bool:
        """Whether the oldest request in flight has its answer."""
        return bool(self._tasks) and self._tasks[0].done()

    def send(self, request: Request) -> None:
        coro = self.engine._one(request, self.stats, self.stage)
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self._done)
        self._tasks.append(task)

    def _done(self, task: asyncio.Task[Response]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            if self.on_result:
                self.on_result(task.result())
        elif self._fatal_error is None:
            # Like a TaskGroup: stop every other request now, before any of them tries again.
            self._fatal_error = error
            for other in self._tasks:
                other.cancel()

    async def take(self) -> Response:
        """The answer to the oldest request in flight. A FatalError in any request in flight cancels
        them all (``_done``), so this raises it without waiting for the oldest to be answered."""
        head = self._tasks[0]
        t0 = time.perf_counter()
        try:
            response = await head
        except asyncio.CancelledError:
            if self._fatal_error is not None:
                raise self._fatal_error from None
            raise
        finally:
            self.stats["seconds_waiting"] += time.perf_counter() - t0
        self._tasks.popleft()
        return response

    async def close(self, *, cancel: bool = False) -> int:
        """End the pipe; returns how many requests were sent and never taken (wasted). They are left
        to finish (``Engine.drain``), so what they cost is on record and their answers are cached:
        which requests a stage sends depends only on the answers it applied, so running it again
        from the cache sends the same ones and calls the model for none. ``cancel``: stop them."""
        tasks, self._tasks = list(self._tasks), deque()
        if cancel:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        else:
            self.engine._detached.update(tasks)
        return len(tasks)
