"""Stage 2: ask, few-shot and greedily, whether each accepted instruction is a classification task.

Only a clear "yes" counts as classification; an answer that is neither yes nor no is recorded as
``is_classification: false`` with ``answer`` kept so it can be audited. A request that fails after
its retries is written to failures.jsonl and left unclassified; running the stage again retries it.
"""

from __future__ import annotations

from ..llm.base import Request
from ..prompts import parse_classification, render_classify
from .common import StageContext, answered

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
    done = {r["id"] for r in f.classifications.read()}
    todo = [r for r in f.instructions.read() if r["id"] not in done]
    n = 0

    def build(rec: dict) -> Request:
        return build_request(ctx, rec["instruction"])

    async for pairs in answered(ctx, STAGE, todo, build, done=len(done), unit="instr"):
        records = [
            {
                "id": rec["id"],
                "instruction": rec["instruction"],
                "is_classification": parse_classification(resp.text) is True,
                "answer": resp.text.strip(),
            }
            for rec, resp in pairs
        ]
        n += f.classifications.append(records)
    return n
