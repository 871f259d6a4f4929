"""What every stage shares: the context a stage runs in, failure records, progress bars."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from tqdm import tqdm

from ..config import Config
from ..llm.base import Request, Response
from ..llm.engine import Engine
from ..store import JsonlStore, RunFiles, write_jsonl_atomic


@dataclass
class StageContext:
    cfg: Config
    engine: Engine | None  # None for stages that call no model
    files: RunFiles
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
    s = engine.stats.get(stage, {}) if engine else {}
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
    """Send one request per record of ``todo`` through the engine, in batches that keep it busy.

    After each batch, the failed requests are written to failures.jsonl (the records stay undone, so
    running the stage again retries them) and the (record, response) pairs that succeeded are
    yielded, in ``todo`` order, for the stage to write. A progress bar counts them.
    """
    assert ctx.engine is not None
    bar = progress(ctx.cfg, total=done + len(todo), initial=done, desc=stage, unit=unit)

    def tick(i: int, response: Response) -> None:
        bar.update()
        bar.set_postfix(live_stats(ctx.engine, stage), refresh=False)

    batch_api = ctx.cfg.llm.batch_api
    # The Batch API takes up to 50,000 requests in one batch; live requests go in batches that keep
    # the engine busy while results are written regularly.
    size = 50_000 if batch_api else max(16, 4 * ctx.engine.concurrency)
    state = ctx.files.root / f"batch_{stage}.json"

    applied = done  # what the bar showed before the batch being polled

    def polled(done_now: int, total: int, status: str) -> None:
        bar.n = applied + done_now
        bar.set_postfix(batch=status, of=total, refresh=True)

    try:
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            requests = [build(r) for r in batch]
            if batch_api:
                responses = await ctx.engine.run_batch_api(
                    requests,
                    stage=stage,
                    keys=[r["id"] for r in batch],
                    state_path=state,
                    poll_seconds=ctx.cfg.llm.batch_poll_seconds,
                    on_progress=polled,
                )
            else:
                responses = await ctx.engine.run(requests, stage=stage, on_result=tick)
            applied += len(batch)
            failed = [
                failure_record(stage, rec["id"], req, resp)
                for rec, req, resp in zip(batch, requests, responses, strict=True)
                if not resp.ok
            ]
            ctx.files.failures.append(failed)
            yield [(rec, resp) for rec, resp in zip(batch, responses, strict=True) if resp.ok]
            # The stage has written this batch's results: a restart must not poll it again.
            state.unlink(missing_ok=True)
    finally:
        bar.close()


def drop_uncommitted(store: JsonlStore, stage: str, key: str, committed: set) -> list[dict]:
    """Remove a stage's records whose unit of work never committed (a crash came in between).

    Each stage writes its side records (rejections) before the record that marks the unit done, so
    after a crash the side records of an unfinished unit are removed here and written again when the
    unit is redone: nothing is lost and nothing is counted twice. Returns the records kept.
    """
    records = store.read()
    kept = [r for r in records if r.get("stage") != stage or r.get(key) in committed]
    if len(kept) != len(records):
        write_jsonl_atomic(store.path, kept)
    return kept
