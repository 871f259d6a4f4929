"""Stage 3: write instances for every classified instruction.

Non-classification tasks are generated input-first (the model writes an input, then its output, or
only an output). Classification tasks are generated output-first (a class label, then an input of
that label), because input-first generation drifts toward one label. Parsed instances then pass the
instance filters; everything dropped is written to rejected.jsonl with its reason.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from ..filters import filter_instances
from ..llm.base import Request, Response
from ..parsing import Parsed, Reading, parse_answer
from ..prompts import (
    render_input_first,
    render_input_first_json,
    render_output_first,
    render_output_first_json,
)
from ..step import Applied, Report, Step, Work
from ..store import rejection
from ..structured import schema_text
from .common import StageContext

STAGE = "instances"


def build_request(ctx: StageContext, instruction: str, is_classification: bool) -> Request:
    c = ctx.cfg.instances
    kind = "output_first" if is_classification else "input_first"
    chat = not ctx.api_is_completions
    stop: tuple[str, ...]
    if ctx.structured:
        render = render_output_first_json if is_classification else render_input_first_json
        prompt, stop = render(instruction), ()
    elif is_classification:
        prompt, stop = render_output_first(instruction, chat=chat), ("\nTask:",)
    else:
        prompt, stop = render_input_first(instruction, chat=chat), ("Example 6", "\nTask:")
    return Request(
        prompt=prompt,
        max_tokens=c.max_tokens_output_first if is_classification else c.max_tokens_input_first,
        temperature=c.temperature,
        top_p=c.top_p,
        presence_penalty=c.presence_penalty,
        frequency_penalty=c.frequency_penalty,
        stop=stop,
        seed=ctx.cfg.seed,
        schema=schema_text(kind, c.max_instances) if ctx.structured else None,
    )


def parse(ctx: StageContext, rec: dict, response: Response) -> Parsed:
    """The answer's instances and rejected parts, from JSON or text."""
    kind: Literal["input_first", "output_first"] = (
        "output_first" if rec["is_classification"] else "input_first"
    )
    how = Reading(
        continuation=ctx.api_is_completions,
        structured=ctx.structured,
        max_items=ctx.cfg.instances.max_instances,
        task=rec["instruction"],
    )
    return parse_answer(kind, response.text, response.finish_reason, how)


def _reject(rec: dict, reason: str, text: str, **details) -> dict:
    return rejection(STAGE, rec["id"], reason, text, instruction=rec["instruction"], **details)


class InstancesStep(Step):
    """Generate instances for every classified instruction that has none yet."""

    name = STAGE
    unit = "task"
    output = "instances"
    log = None  # a task's line in instances.jsonl commits it (its rejections are written first)
    batchable = True

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def start(self, concurrency: int) -> None:
        f = self.ctx.files
        done = {r["id"] for r in f.instances.read()}
        classified = f.classifications.read()
        self.todo = deque(r for r in classified if r["id"] not in done)
        self.done, self.total = len(done), len(classified)

    def next(self, in_flight: int, limit: int) -> list[Work]:
        out: list[Work] = []
        while self.todo and in_flight + len(out) < limit:
            rec = self.todo.popleft()
            out.append(
                Work(rec["id"], build_request(self.ctx, rec["instruction"], rec["is_classification"]), rec)
            )
        return out

    def apply(self, work: Work, response: Response) -> Applied:
        rec = work.data
        if not response.ok:  # left undone: the next session asks again
            return Applied()
        parsed = parse(self.ctx, rec, response)
        kept, dropped = filter_instances(parsed.kept, self.ctx.cfg.instances.max_instances)
        rejected = [_reject(rec, why, t) for why, t in parsed.rejected]
        rejected += [_reject(rec, why, f"{i.input} => {i.output}", **i.to_dict()) for i, why in dropped]
        hits = self.ctx.contaminated([text for i in kept for text in (i.input, i.output)])
        if any(hits):  # an instance whose input or output repeats a benchmark
            clean = []
            for k, inst in enumerate(kept):
                hit = hits[2 * k] or hits[2 * k + 1]
                if hit is None:
                    clean.append(inst)
                else:
                    text = f"{inst.input} => {inst.output}"
                    rejected.append(_reject(rec, "contaminated", text, **inst.to_dict(), **hit))
            kept = clean
        record = {
            "id": rec["id"],
            "instruction": rec["instruction"],
            "is_classification": rec["is_classification"],
            "method": "output_first" if rec["is_classification"] else "input_first",
            "instances": [i.to_dict() for i in kept],
            "finish_reason": response.finish_reason,
            "raw": response.text,
        }
        self.done += 1
        return Applied([record], rejected)

    def progress(self) -> tuple[int, int, dict]:
        return self.done, self.total, {}

    def finish(self) -> Report:
        return Report()
