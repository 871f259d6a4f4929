"""Stage 3: write instances for every classified instruction.

Non-classification tasks are generated input-first (the model writes an input, then its output, or
only an output). Classification tasks are generated output-first (a class label, then an input of
that label), because input-first generation drifts toward one label. Parsed instances then pass the
instance filters; everything dropped is written to rejected.jsonl with its reason.
"""

from __future__ import annotations

from ..filters import filter_instances
from ..llm.base import Request
from ..prompts import parse_input_first, parse_output_first, render_input_first, render_output_first
from .common import StageContext, answered, drop_uncommitted

STAGE = "instances"


def build_request(ctx: StageContext, instruction: str, is_classification: bool) -> Request:
    c = ctx.cfg.instances
    if is_classification:
        prompt, stop = render_output_first(instruction), ("\nTask:",)
    else:
        prompt, stop = render_input_first(instruction), ("Example 6", "\nTask:")
    return Request(
        prompt=prompt,
        max_tokens=c.max_tokens,
        temperature=c.temperature,
        top_p=c.top_p,
        presence_penalty=c.presence_penalty,
        frequency_penalty=c.frequency_penalty,
        stop=stop,
        seed=ctx.cfg.seed,
    )


def _reject(rec: dict, reason: str, **extra) -> dict:
    return {"stage": STAGE, "id": rec["id"], "instruction": rec["instruction"], "reason": reason, **extra}


async def run_instances(ctx: StageContext) -> int:
    """Generate instances for classified instructions that have none yet; returns tasks done."""
    f = ctx.files
    done = {r["id"] for r in f.instances.read()}
    drop_uncommitted(f.rejected, STAGE, "id", done)
    todo = [r for r in f.classifications.read() if r["id"] not in done]
    continuation = ctx.api_is_completions
    n = 0

    def build(rec: dict) -> Request:
        return build_request(ctx, rec["instruction"], rec["is_classification"])

    async for pairs in answered(ctx, STAGE, todo, build, done=len(done), unit="task"):
        records, rejected = [], []
        for rec, resp in pairs:
            parse = parse_output_first if rec["is_classification"] else parse_input_first
            parsed = parse(resp.text, finish_reason=resp.finish_reason, continuation=continuation)
            kept, dropped = filter_instances(parsed.instances, ctx.cfg.instances.max_instances)
            rejected += [_reject(rec, "unparsable", text=t) for t in parsed.unparsable]
            if parsed.truncated is not None:
                rejected.append(_reject(rec, "truncated", text=parsed.truncated))
            rejected += [_reject(rec, why, **inst.to_dict()) for inst, why in dropped]
            records.append(
                {
                    "id": rec["id"],
                    "instruction": rec["instruction"],
                    "is_classification": rec["is_classification"],
                    "method": "output_first" if rec["is_classification"] else "input_first",
                    "instances": [i.to_dict() for i in kept],
                    "finish_reason": resp.finish_reason,
                    "raw": resp.text,
                }
            )
        # Rejections first, then the records that mark the tasks done (see drop_uncommitted).
        f.rejected.append(rejected)
        n += f.instances.append(records)
    return n
