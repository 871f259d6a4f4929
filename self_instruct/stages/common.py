"""What every stage shares: the context a stage runs in, failure records, progress bars."""

from __future__ import annotations

import hashlib
import sys
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


def live_stats(engine: Engine | None, stage: str, **extra) -> dict:
    """What the progress bar shows next to the count: tokens, retries, failures, cache hits, cost."""
    s = engine.stats.get(stage, {}) if engine else {}
    out = dict(extra)
    out["tok"] = s.get("prompt_tokens", 0) + s.get("completion_tokens", 0)
    for key, label in (("retries", "retry"), ("failures", "fail"), ("cache_hits", "cached")):
        if s.get(key):
            out[label] = s[key]
    if s.get("cost_usd"):
        out["usd"] = f"{s['cost_usd']:.4f}"
    return out


def chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


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
