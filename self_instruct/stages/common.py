"""What every stage shares: the context a stage runs in, failure records, progress bars."""

from __future__ import annotations

import hashlib
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from tqdm import tqdm

from ..config import Config
from ..llm.base import Request, Response
from ..llm.engine import Engine
from ..store import JsonlStore, RunDir, as_rejection, write_jsonl_atomic


@dataclass
class StageContext:
    cfg: Config
    engine: Engine | None  # None for stages that call no model
    files: RunDir
    structured: bool = False  # answers are JSON of each stage's schema (llm.structured, resolved)

    @property
    def api_is_completions(self) -> bool:
        return self.engine is not None and self.engine.backend.api == "completions"


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


def progress(cfg: Config, **kwargs) -> tqdm:
    return tqdm(disable=not cfg.progress, file=sys.stderr, dynamic_ncols=True, **kwargs)


def human(n: float) -> str:
    """A count for a progress bar: 950, 20.1k, 3.4M (tqdm would print 2e+4)."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def live_stats(engine: Engine | None, stage: str, **extra) -> dict:
    """What the progress bar shows next to the count: tokens, retries, failures, cache hits, cost."""
    s: Mapping[str, float] = engine.stats.get(stage, {}) if engine else {}
    out = dict(extra)
    out["tok"] = human(s.get("prompt_tokens", 0) + s.get("completion_tokens", 0))
    for key, label in (("retries", "retry"), ("failures", "fail"), ("cache_hits", "cached")):
        if s.get(key):
            out[label] = s[key]
    if s.get("cost_usd"):
        out["usd"] = f"{s['cost_usd']:.4f}"
    return out


async def answered(
    ctx: StageContext, stage: str, todo: list[dict], build: Callable[[dict], Request], *, done: int, unit: str
) -> AsyncIterator[list[tuple[dict, Response]]]:
    """Send one request per record of ``todo`` through the engine and yield the answers in ``todo``
    order, in chunks, for the stage to write.

    Requests stream through a pipe that keeps up to four times the concurrency in flight, so one
    slow answer holds back only the writing of those after it, never the sending. A chunk is yielded
    whenever the answers ready in order run out (or reach the concurrency). Before each chunk, the
    failed requests are written to failures.jsonl (their records stay undone, so running the stage
    again retries them); the chunk holds the (record, response) pairs that succeeded. The Batch API
    sends everything as one batch instead. A progress bar counts the answers.
    """
    assert ctx.engine is not None
    bar = progress(ctx.cfg, total=done + len(todo), initial=done, desc=stage, unit=unit)
    engine = ctx.engine

    def tick(response: Response) -> None:
        bar.update()
        bar.set_postfix(live_stats(engine, stage), refresh=False)

    def chunk(pairs: list[tuple[dict, Request, Response]]) -> list[tuple[dict, Response]]:
        ctx.files.failures.append(
            [failure_record(stage, rec["id"], req, resp) for rec, req, resp in pairs if not resp.ok]
        )
        return [(rec, resp) for rec, _, resp in pairs if resp.ok]

    try:
        if ctx.cfg.llm.batch_api:
            async for pairs in _batch_api(ctx, stage, todo, build, bar):
                yield chunk(pairs)
            return
        pipe = engine.pipe(stage, on_result=tick)
        ahead = 4 * engine.concurrency
        waiting: deque[tuple[dict, Request]] = deque()
        pending = iter(todo)
        ready: list[tuple[dict, Request, Response]] = []
        finished = False
        try:
            while True:
                while pipe.in_flight < ahead and (rec := next(pending, None)) is not None:
                    req = build(rec)
                    pipe.send(req)
                    waiting.append((rec, req))
                if not pipe.in_flight:
                    break
                response = await pipe.take()
                ready.append((*waiting.popleft(), response))
                # (the last answer always finds no head ready, so nothing is left in ``ready``)
                if len(ready) >= engine.concurrency or not pipe.head_ready():
                    yield chunk(ready)
                    ready = []
            finished = True
        finally:
            await pipe.close(cancel=not finished)
    finally:
        bar.close()


async def _batch_api(
    ctx: StageContext, stage: str, todo: list[dict], build: Callable[[dict], Request], bar: tqdm
) -> AsyncIterator[list[tuple[dict, Request, Response]]]:
    """The OpenAI Batch API: up to 50,000 requests per batch, polled until done."""
    assert ctx.engine is not None
    state = ctx.files.root / f"batch_{stage}.json"
    applied = bar.n  # what the bar showed before the batch being polled

    def polled(done_now: int, total: int, status: str) -> None:
        bar.n = applied + done_now
        bar.set_postfix(batch=status, of=total, refresh=True)

    for start in range(0, len(todo), 50_000):
        batch = todo[start : start + 50_000]
        requests = [build(r) for r in batch]
        responses = await ctx.engine.run_batch_api(
            requests,
            stage=stage,
            keys=[r["id"] for r in batch],
            state_path=state,
            poll_seconds=ctx.cfg.llm.batch_poll_seconds,
            on_progress=polled,
        )
        applied += len(batch)
        yield list(zip(batch, requests, responses, strict=True))
        # The stage has written this batch's results: a restart must not poll it again.
        state.unlink(missing_ok=True)


def drop_uncommitted(store: JsonlStore, stage: str, committed: set) -> list[dict]:
    """Remove a stage's rejections whose unit of work (their key) never committed (a crash came in
    between).

    Each stage writes its side records (rejections) before the record that marks the unit done, so
    after a crash the side records of an unfinished unit are removed here and written again when the
    unit is redone: nothing is lost and nothing is counted twice. Returns the records kept.
    """
    records = store.read()
    kept = [r for r in records if r.get("stage") != stage or as_rejection(r)["key"] in committed]
    if len(kept) != len(records):
        write_jsonl_atomic(store.path, kept)
    return kept
