"""The in-process executor: runs steps (``step.py``) through the engine, on asyncio.

It owns everything a step does not:
- crash recovery before a step starts (``recover``);
- sending: up to ``in_flight_limit`` requests in flight through the engine's pipe, or whole batches
  through the OpenAI Batch API; one slow answer holds back only the applying of those after it;
- applying answers in request order, so the files depend on the answers, never on their timing;
- writing, from a worker thread, in the order that makes each unit's commit last (rejections and
  failures, then the step's records, then its commit-log line), so a crash at any moment leaves what
  ``recover`` can repair;
- the progress bar;
- the session record in the manifest, and what an exception that ends the steps means (``ENDINGS``).
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tqdm import tqdm

from .errors import RunIncomplete, UserError, os_error
from .forecast import Forecast
from .llm.base import EndpointDown, FatalError, Request, Response
from .llm.budget import BudgetReached
from .llm.engine import Engine
from .step import Applied, Report, Step, Work
from .store import RunDir, drop_uncommitted, write_jsonl_atomic

BATCH_MAX = 50_000  # requests per OpenAI Batch API job


def in_flight_limit(concurrency: int) -> int:
    """The most requests worth having in flight: a single slot answers in order and needs no more
    than the one it works on; several slots answer out of order, and about 8 per slot keep them busy
    while the oldest request is still out (bench/fleet.py)."""
    return 1 if concurrency == 1 else 8 * concurrency


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def failure_record(stage: str, key: str | int, request: Request, response: Response) -> dict:
    """A failed request, as written to failures.jsonl (the prompt by hash: it can be long)."""
    return {
        "stage": stage,
        "key": key,
        "error": response.error,
        "attempts": response.attempts,
        "prompt_sha256": prompt_hash(request.prompt),
    }


def progress_bar(enabled: bool, **kwargs) -> tqdm:
    return tqdm(disable=not enabled, file=sys.stderr, dynamic_ncols=True, **kwargs)


def human(n: float) -> str:
    """A count for a progress bar: 950, 20.1k, 3.4M (tqdm would print 2e+4)."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def live_stats(engine: Engine | None, stage: str, **extra) -> dict:
    """What the progress bar shows next to the count: tokens, retries, failures, cache hits, cost,
    and the concurrency the endpoints grant now (cut by 429s, grown back by successes)."""
    s: Mapping[str, float] = engine.stats.get(stage, {}) if engine else {}
    out = dict(extra)
    window = engine.backend.window() if engine and engine.remote is None else None
    if window:
        out["win"] = window
    out["tok"] = human(s.get("prompt_tokens", 0) + s.get("completion_tokens", 0))
    for key, label in (("retries", "retry"), ("failures", "fail"), ("cache_hits", "cached")):
        if s.get(key):
            out[label] = s[key]
    if s.get("cost_usd"):
        out["usd"] = f"{s['cost_usd']:.4f}"
    return out


def recover(step: Step, files: RunDir) -> None:
    """Drop what a crash left of units of work that never committed, so they are redone whole:
    nothing lost, nothing counted twice. A unit commits with its line in the step's log, or, for a
    step without one, with its line in the step's output (written after its rejections)."""
    if step.output is None:
        return
    output: Any = getattr(files, step.output)
    if step.log is None:
        committed = {r[step.key] for r in output.read()}
    else:
        committed = {r[step.key] for r in getattr(files, step.log).read()}
        records = output.read()
        kept = [r for r in records if r[step.key] in committed]
        if len(kept) != len(records):
            write_jsonl_atomic(output.path, kept)
    if not step.attempts_are_records:
        drop_uncommitted(files.rejected, step.name, committed)


class _Writer:
    """Writes applied answers in order from a worker thread, after the step's CPU work on them
    (``Step.before_write``), so the event loop never waits for either."""

    def __init__(self, step: Step, files: RunDir) -> None:
        self.step, self.files = step, files
        self.output = getattr(files, step.output) if step.output else None
        self.log = getattr(files, step.log) if step.log else None
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name=f"{step.name}-writer", daemon=True)
        self.thread.start()

    def put(self, applied: Applied) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(applied)

    def flush(self) -> None:
        """Wait until everything put so far is written."""
        written = threading.Event()
        self.queue.put(written)
        written.wait()
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        done = False
        while not done:
            items = [self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get())
            applied = [a for a in items if isinstance(a, Applied)]
            if applied and self.error is None:
                try:
                    self._write(applied)
                except BaseException as e:  # re-raised on the event loop by put(), flush() or close()
                    self.error = e
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
                done = done or item is None

    def _write(self, applied: list[Applied]) -> None:
        """Each unit's commit last (a crash in between leaves records that ``recover`` discards)."""
        self.step.before_write(applied)
        self.files.rejected.append([r for a in applied for r in a.rejected])
        self.files.failures.append([r for a in applied for r in a.failed])
        if self.output is not None:
            self.output.append([r for a in applied for r in a.records])
        if self.log is not None:
            self.log.append([a.log for a in applied if a.log is not None])

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


# What an exception that ends the steps means: the error the command ends with (a one-line
# UserError, exit status 2, or RunIncomplete, exit status 3; None: re-raise it as it is). Looked up
# along the exception's class hierarchy, most specific first, so the meaning never depends on an
# order of except clauses (EndpointDown is a FatalError).
ENDINGS: dict[type[BaseException], Callable[[Any, RunDir], BaseException | None]] = {
    BudgetReached: lambda e, files: RunIncomplete(f"{e}; raise it and run the same command again to resume"),
    EndpointDown: lambda e, files: RunIncomplete(
        f"{e}{'; see failures.jsonl' if files.failures.path.exists() else ''}; "
        "run the same command again to resume"
    ),
    FatalError: lambda e, files: UserError(str(e)),
    OSError: lambda e, files: os_error(e),
    KeyboardInterrupt: lambda e, files: None,
    asyncio.CancelledError: lambda e, files: None,
}
STATUS = {RunIncomplete: "stopped", UserError: "failed", type(None): "interrupted"}


def ending(e: BaseException, files: RunDir) -> tuple[str, BaseException | None]:
    """(the session's status, the error the command ends with) for an exception that ended the
    steps; an exception not in ``ENDINGS`` is a bug and propagates as it is (status "crashed")."""
    for cls in type(e).__mro__:
        if cls in ENDINGS:
            error = ENDINGS[cls](e, files)
            return STATUS[type(error)], error
    return "crashed", None


class Executor:
    """Runs steps in this process, one after another, and keeps the session's record."""

    def __init__(
        self,
        files: RunDir,
        engine: Engine | None,
        *,
        show_progress: bool,
        batch_api: bool = False,
        batch_poll_seconds: float = 30.0,
        session: dict | None = None,
        save: Callable[[dict, dict], dict],
    ) -> None:
        """``session``: fields for this session's record (the command, changed settings);
        ``save(session, manifest_entries)`` writes the manifest and returns it."""
        self.files, self.engine, self.show_progress = files, engine, show_progress
        self.batch_api, self.batch_poll_seconds = batch_api, batch_poll_seconds
        self._save = save
        self.started = time.time()
        self.session: dict[str, Any] = {
            "id": uuid.uuid4().hex[:12],
            "stages": [],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "stage_seconds": {},
            "status": "running",
            **(session or {}),
        }
        self.manifest_entries: dict = {}
        self.manifest: dict = {}

        # One line per request as it completes: a killed session's usage is on record too.
        def log_usage(record: dict) -> None:
            files.usage.append([{**record, "session": self.session["id"]}], sync=False)

        self.log_usage = log_usage
        if engine is not None:
            engine.usage = log_usage

    def save(self) -> dict:
        self.session["wall_seconds"] = round(time.time() - self.started, 3)
        if self.session["status"] != "running":
            self.session["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.manifest = self._save(self.session, self.manifest_entries)
        return self.manifest

    async def run(self, steps: Iterable[Step]) -> list[Report]:
        """Run the steps in order; the session is on record from its start (a kill leaves it
        "running", which the next session reads as "killed") and after each step."""
        steps = list(steps)
        self.session["stages"] = [s.name for s in steps]
        self.save()
        reports: list[Report] = []
        try:
            for step in steps:
                t0 = time.perf_counter()
                report = await self.run_step(step)
                reports.append(report)
                self.manifest_entries.update(report.manifest)
                self.session["stage_seconds"][step.name] = round(time.perf_counter() - t0, 3)
                self.save()
            self.session["status"] = "finished"
        except BaseException as e:
            status, error = ending(e, self.files)
            self.session["status"] = status
            if error is not None:
                if isinstance(e, OSError):
                    self.session["error"] = str(error)
                raise error from None
            raise
        finally:
            if self.engine is not None:  # requests a step left at the server: on record, or cancelled
                await self.engine.drain(cancel=self.session["status"] != "finished")
            try:
                self.save()
            except OSError as e:
                # Ending with an error already: the manifest of the last save stands (a full disk may
                # have no room for a new one), and the error that ended the session is the one to tell.
                if self.session["status"] == "finished":
                    self.session["status"] = "stopped"
                    raise os_error(e) from None
            finally:
                if self.engine and self.engine.cache:
                    self.engine.cache.close()
        return reports

    async def run_step(self, step: Step) -> Report:
        """Recover, start, send and apply until the step asks nothing more, then its report."""
        recover(step, self.files)
        engine = step.engine or self.engine  # a step may have a model of its own (the judge's)
        if engine is not None and engine is not self.engine:
            engine.usage = self.log_usage
        concurrency = engine.concurrency if engine else 1
        await step.start(concurrency)
        done, total, _ = step.progress()
        show = self.show_progress and step.output is not None  # a derived step has nothing to count
        bar = progress_bar(show, total=total, initial=done, desc=step.name, unit=step.unit)
        self.forecast = Forecast(step.name, done, lambda: engine.stats.get(step.name) if engine else None)
        wasted = 0
        try:
            writer = _Writer(step, self.files)
            try:
                if engine is None:
                    if step.next(0, 0):
                        raise RuntimeError(f"step {step.name} sends requests, but this run has no model")
                elif self.batch_api and step.batchable and engine is self.engine:
                    await self._batches(step, bar, writer)
                else:
                    wasted = await self._realtime(step, bar, writer, concurrency, engine)
            finally:
                writer.close()
                if engine is not None and engine is not self.engine:  # what its pipe left behind
                    await engine.drain(cancel=False)
            report = step.finish()
        finally:
            bar.close()
            step.close()
        if self.forecast.first is not None:  # how good the forecast was, on every run
            record = {"forecast": self.forecast.first, "actual": self.forecast.actual()}
            self.session.setdefault("forecasts", {})[step.name] = record
        if step.output is not None and engine is not None:
            # Requests answered but never applied, over every step of the session (bootstrap's, past
            # its target: a step that ends with nothing in flight wastes none).
            self.session["wasted_requests"] = self.session.get("wasted_requests", 0) + wasted
        return report

    def _apply(self, step: Step, work: Work, response: Response, bar: tqdm, writer: _Writer) -> None:
        applied = step.apply(work, response)
        if not response.ok:
            applied.failed.append(failure_record(step.name, work.key, work.request, response))
        writer.put(applied)
        done, total, extra = step.progress()
        bar.total = total
        bar.update(max(0, min(done, total) - bar.n))
        line = self.forecast.applied(done, total)
        if line and not bar.disable:
            tqdm.write(line, file=sys.stderr)
        if (left := self.forecast.time_left()) is not None:
            extra = {**extra, "left": left}
        bar.set_postfix(live_stats(step.engine or self.engine, step.name, **extra), refresh=False)

    async def _realtime(
        self, step: Step, bar: tqdm, writer: _Writer, concurrency: int, engine: Engine
    ) -> int:
        """Send through the engine's pipe, apply in order; returns the requests answered but never
        applied (the step needed no more)."""
        pipe = engine.pipe(step.name)
        limit = in_flight_limit(concurrency)
        waiting: deque[Work] = deque()
        held: deque[Work] = deque()  # handed out by the step, waiting for room in the budget
        finished = False
        over_budget: str | None = None  # then nothing more is sent, and what is in flight is applied
        try:
            while True:
                if not over_budget:
                    works = step.next(pipe.in_flight + len(held), limit)
                    if works is None:
                        break
                    held.extend(works)
                while held and not over_budget:
                    refused = engine.refuse(held[0].request)
                    if refused is not None:
                        # What is in flight holds back its worst case until it is answered: wait
                        # for it. With nothing in flight, the next request cannot fit: stop.
                        over_budget = None if pipe.in_flight else refused
                        break
                    work = held.popleft()
                    pipe.send(work.request)
                    waiting.append(work)
                if not pipe.in_flight:
                    break
                response = await pipe.take()
                self._apply(step, waiting.popleft(), response, bar, writer)
            finished = True
        finally:
            wasted = await pipe.close(cancel=not finished)
        if over_budget:
            raise BudgetReached(over_budget)
        return wasted

    async def _batches(self, step: Step, bar: tqdm, writer: _Writer) -> None:
        """The OpenAI Batch API: the step's requests in jobs of up to 50,000, polled until done."""
        assert self.engine is not None
        state = self.files.root / f"batch_{step.name}.json"
        while works := step.next(0, BATCH_MAX):
            for n, work in enumerate(works):  # a job only of what the budget allows
                if refused := self.engine.refuse(work.request):
                    if n == 0:  # nothing is in flight between jobs: not even one request fits
                        raise BudgetReached(refused)
                    works = works[:n]  # the rest goes in the next job, once this one is paid for
                    break
            applied_before = bar.n

            def polled(done_now: int, total: int, status: str, base: int = applied_before) -> None:
                bar.n = base + done_now
                bar.set_postfix(batch=status, of=total, refresh=True)

            responses = await self.engine.run_batch_api(
                [w.request for w in works],
                stage=step.name,
                keys=[str(w.key) for w in works],
                state_path=state,
                poll_seconds=self.batch_poll_seconds,
                on_progress=polled,
            )
            bar.n = applied_before
            for work, response in zip(works, responses, strict=True):
                self._apply(step, work, response, bar, writer)
            # This job's results are written: a restart must not poll it again.
            writer.flush()
            state.unlink(missing_ok=True)
