"""Stage 2: ask, few-shot and greedily, whether each accepted instruction is a classification task.

A clear "yes" is a classification task and a clear "no" is not (``parsing.parse_classification``).
An answer that is neither, or that was cut off before its word was complete, is never read as "no":
it is written to rejected.jsonl with its raw text (reason ``ambiguous_answer`` or ``truncated``)
and the instruction stays unclassified. It is asked again, up to ``classify.max_attempts`` answers
in all, the later attempts sampled (temperature 0.7, a seed of their own) so that a deterministic
model can answer differently. Attempts are counted from the records, so a run that is killed and
resumed asks exactly the questions an uninterrupted run asks.

A request that fails after its retries is written to failures.jsonl and left unclassified; running
the stage again retries it.
"""

from __future__ import annotations

from collections import Counter

from ..llm.base import Request, Response
from ..parsing import parse_classification
from ..prompts import render_classify, render_classify_json
from ..structured import parse_classification_json, schema_text
from .common import StageContext, answered

STAGE = "classify"
RETRY_TEMPERATURE = 0.7
UNUSABLE = {"ambiguous": "ambiguous_answer", "truncated": "truncated"}


def build_request(ctx: StageContext, instruction: str, attempt: int = 0) -> Request:
    c = ctx.cfg.classify
    chat = not ctx.api_is_completions
    if ctx.structured:
        prompt, stop, max_tokens = render_classify_json(instruction), (), c.chat_max_tokens
    elif chat:
        prompt, stop, max_tokens = render_classify(instruction, chat=True), (), c.chat_max_tokens
    else:
        prompt, stop, max_tokens = render_classify(instruction), ("\n",), c.max_tokens
    return Request(
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=c.temperature if attempt == 0 else max(c.temperature, RETRY_TEMPERATURE),
        stop=stop,
        seed=ctx.cfg.seed if attempt == 0 else ctx.cfg.seed * 1_000_003 + attempt,
        schema=schema_text("classify", 1) if ctx.structured else None,
    )


def decision(ctx: StageContext, response: Response) -> str:
    """'yes', 'no', 'ambiguous' or 'truncated' for one answer, text or JSON."""
    if ctx.structured:
        d = parse_classification_json(response.text, response.finish_reason)
        if d is not None:
            return d
    return parse_classification(response.text, response.finish_reason)


async def run_classify(ctx: StageContext) -> int:
    """Classify every accepted instruction that has no classification yet; returns how many were done."""
    f = ctx.files
    n = 0
    failed: set[str] = set()  # requests that failed in this session: retried by the next one
    while True:
        done = {r["id"] for r in f.classifications.read()}
        attempts = Counter(r["id"] for r in f.rejected.read() if r.get("stage") == STAGE)
        undecided = [r for r in f.instructions.read() if r["id"] not in done and r["id"] not in failed]
        # One round per attempt number, in pool order: the same questions in the same order
        # whatever sessions the work was split into.
        round_no = min((attempts[r["id"]] for r in undecided), default=None)
        if round_no is None or round_no >= ctx.cfg.classify.max_attempts:
            return n
        todo = [r for r in undecided if attempts[r["id"]] == round_no]

        def build(rec: dict, attempt: int = round_no) -> Request:
            return build_request(ctx, rec["instruction"], attempt)

        failed.update(r["id"] for r in todo)
        async for pairs in answered(ctx, STAGE, todo, build, done=len(done), unit="instr"):
            records, rejected = [], []
            for rec, resp in pairs:
                failed.discard(rec["id"])
                d = decision(ctx, resp)
                if d in UNUSABLE:
                    rejected.append(
                        {
                            "stage": STAGE,
                            "id": rec["id"],
                            "instruction": rec["instruction"],
                            "reason": UNUSABLE[d],
                            "attempt": round_no,
                            "text": resp.text,
                        }
                    )
                else:
                    records.append(
                        {
                            "id": rec["id"],
                            "instruction": rec["instruction"],
                            "is_classification": d == "yes",
                            "answer": resp.text.strip(),
                        }
                    )
            f.rejected.append(rejected)
            n += f.classifications.append(records)
