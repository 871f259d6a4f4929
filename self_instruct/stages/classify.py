"""Stage 2: ask, few-shot and greedily, whether each accepted instruction is a classification task.

Only a clear "yes" counts as classification; an answer that is neither yes nor no is recorded as
``is_classification: false`` with ``answer`` kept so it can be audited. A request that fails after
its retries is written to failures.jsonl and left unclassified; running the stage again retries it.
"""

from __future__ import annotations

from ..llm.base import Request
from ..prompts import parse_classification, render_classify
from .common import StageContext, chunks, failure_record, live_stats, progress

STAGE = "classify"


def build_request(ctx: StageContext, instruction: str) -> Request:
    c = ctx.cfg.classify
    return Request(
        prompt=render_classify(instruction),
        max_tokens=c.max_tokens,
        temperature=c.temperature,
        stop=("\n",),
        seed=ctx.cfg.seed,
    )


async def run_classify(ctx: StageContext) -> int:
    """Classify every accepted instruction that has no classification yet; returns how many were done."""
    f = ctx.files
    assert ctx.engine is not None
    done = {r["id"] for r in f.classifications.read()}
    todo = [r for r in f.instructions.read() if r["id"] not in done]
    bar = progress(ctx.cfg, total=len(done) + len(todo), initial=len(done), desc=STAGE, unit="instr")
    n = 0

    def tick(bar) -> None:
        bar.update()
        bar.set_postfix(live_stats(ctx.engine, STAGE), refresh=False)

    try:
        for batch in chunks(todo, max(16, 4 * ctx.engine.concurrency)):
            requests = [build_request(ctx, r["instruction"]) for r in batch]
            responses = await ctx.engine.run(requests, stage=STAGE, on_result=lambda i, r: tick(bar))
            records, failures = [], []
            for rec, req, resp in zip(batch, requests, responses, strict=True):
                if not resp.ok:
                    failures.append(failure_record(STAGE, rec["id"], req, resp))
                    continue
                verdict = parse_classification(resp.text)
                records.append(
                    {
                        "id": rec["id"],
                        "instruction": rec["instruction"],
                        "is_classification": verdict is True,
                        "answer": resp.text.strip(),
                    }
                )
            f.failures.append(failures)
            n += f.classifications.append(records)
    finally:
        bar.close()
    return n
