"""The judge (``quality.judge = on``): a model rates every generated instance, and the dataset keeps
only those at ``quality.min_rating`` or better.

The scale is the one the Self-Instruct paper used for its expert review of generated instances:

- A: valid and satisfying;
- B: acceptable, with minor imperfections;
- C: it responds, but with significant errors;
- D: irrelevant or invalid.

Each instance is one request (greedy; JSON of a schema where the run uses structured outputs). An
answer without a readable rating is written to rejected.jsonl (reason ``unreadable_rating`` or
``truncated``) and asked again, up to ``quality.judge_max_attempts`` answers, the later ones
sampled with a seed of their own, as classification does; an instance never rated is never kept.
Ratings go to ``judgments.jsonl``; the dataset stage applies the threshold (reason ``low_quality``,
with the rating and the judge's reason) and carries each kept instance's rating into
``dataset.jsonl``. ``quality.judge_model`` and ``quality.judge_base_url`` may name another model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

from ..llm.base import Request, Response
from ..llm.engine import Engine
from ..step import Applied, Report, Step, Work
from ..store import rejection
from .common import Rounds, StageContext, attempts

STAGE = "judge"
RATINGS = ("A", "B", "C", "D")
RETRY_TEMPERATURE = 0.7

PROMPT = """\
You are checking one example from a dataset that will teach a model to follow instructions. Rate how
well the output carries out the instruction (given the input, when there is one) on this scale:

A: valid, and it satisfies the instruction fully.
B: acceptable, with minor imperfections.
C: it responds to the instruction, but with significant errors.
D: irrelevant to the instruction, or the instruction or input is not valid.

Instruction: {instruction}
Input: {input}
Output: {output}

Answer in two lines:
Rating: <A, B, C or D>
Reason: <one short sentence>
"""
SCHEMA = {
    "type": "object",
    "properties": {"rating": {"type": "string", "enum": list(RATINGS)}, "reason": {"type": "string"}},
    "required": ["rating", "reason"],
    "additionalProperties": False,
}
PROMPT_SHA256 = hashlib.sha256((PROMPT + json.dumps(SCHEMA, sort_keys=True)).encode()).hexdigest()[:16]

# A rating: after "Rating", "Answer" or "Grade" (any case), or a capital letter alone, in brackets or
# before punctuation ("A dog ..." starts with no rating).
_LETTER = re.compile(
    r"^\W*(?:(?i:(?:the\s+)?(?:rating|answer|grade)(?:\s+is)?)\W*([ABCD])(?![A-Za-z])"
    r"|\(([ABCD])\)|([ABCD])(?=$|[.:)\-]|\s+[-:(]))"
)
_REASON = re.compile(r"^\W*reason\W*(.*)$", re.IGNORECASE)


def instance_key(task_id: str, k: int) -> str:
    """An instance's key: its task and its place among the task's instances."""
    return f"{task_id}#{k}"


def render(instruction: str, inp: str, output: str, *, structured: bool) -> str:
    fields = {"instruction": instruction.strip(), "input": inp.strip() or "(none)", "output": output.strip()}
    prompt = PROMPT.format(**fields)
    if structured:
        prompt += 'Answer with a JSON object: {"rating": "A", "reason": "..."}\n'
    return prompt


def parse_rating(text: str) -> tuple[str | None, str]:
    """(the rating, the reason) of an answer, from JSON or from "Rating: X" / "X" lines; no rating
    when none can be read (never guessed)."""
    stripped = text.strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        try:
            obj = json.loads(stripped[start : end + 1])
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            rating = str(obj.get("rating", "")).strip().upper()
            reason = " ".join(str(obj.get("reason", "")).split())
            return (rating if rating in RATINGS else None), reason
    lines = [line.strip() for line in stripped.splitlines() if line.strip()]
    # The rating: a line that starts with it ("B", "Rating: B", "The answer is: B"); several lines
    # that name different ratings are not read as any of them.
    found = [(line, m, next(g for g in m.groups() if g)) for line in lines if (m := _LETTER.match(line))]
    if not found or len({letter for _, _, letter in found}) > 1:
        return None, ""
    line, m, letter = found[0]
    rest = line[m.end() :].strip(" .:-)")
    reason = next((r.group(1).strip() for other in lines if (r := _REASON.match(other))), rest)
    return letter, " ".join(reason.split())


def passes(rating: str, min_rating: str) -> bool:
    return RATINGS.index(rating) <= RATINGS.index(min_rating)


class JudgeStep(Step):
    """Rate every generated instance that has no rating yet, in rounds of one attempt number each, in
    task order (the same questions in the same order however the work is split into sessions)."""

    name = STAGE
    unit = "inst"
    output = "judgments"
    key = "key"
    attempts_are_records = True  # an unreadable answer is a finished attempt: it counts on resume
    batchable = True

    def __init__(self, ctx: StageContext, engine: Engine | None = None) -> None:
        """``engine``: the judge's own model (quality.judge_model / judge_base_url); default: the run's."""
        self.ctx = ctx
        self.engine = engine
        self.rounds = Rounds("key", ctx.cfg.quality.judge_max_attempts)

    async def start(self, concurrency: int) -> None:
        f = self.ctx.files
        self.items = [
            {"key": instance_key(r["id"], k), "id": r["id"], "instruction": r["instruction"], **inst}
            for r in f.instances.read()
            for k, inst in enumerate(r["instances"])
        ]
        judgments = f.judgments.read()
        self.ratings = Counter(j["rating"] for j in judgments)
        self.done = {j["key"] for j in judgments}
        self.attempts = attempts(f, STAGE)

    def next(self, in_flight: int, limit: int) -> list[Work]:
        return self.rounds.next(self.items, self.done, self.attempts, in_flight, limit, self._request)

    @property
    def round_no(self) -> int:
        return self.rounds.round_no

    def _request(self, item: dict) -> Request:
        q, ctx = self.ctx.cfg.quality, self.ctx
        structured = ctx.structured and self.engine is None  # resolved for the run's model only
        return Request(
            prompt=render(item["instruction"], item["input"], item["output"], structured=structured),
            max_tokens=q.judge_max_tokens,
            temperature=0.0 if self.round_no == 0 else RETRY_TEMPERATURE,
            seed=ctx.cfg.seed if self.round_no == 0 else ctx.cfg.seed * 1_000_003 + self.round_no,
            schema=json.dumps(SCHEMA) if structured else None,
        )

    def apply(self, work: Work, response: Response) -> Applied:
        item = work.data
        if not response.ok:  # left for the next session
            return Applied()
        self.rounds.failed.discard(item["key"])
        rating, reason = parse_rating(response.text)
        if rating is None:
            self.attempts[item["key"]] += 1
            why = "truncated" if response.finish_reason == "length" else "unreadable_rating"
            details = {"instruction": item["instruction"], "attempt": self.round_no}
            return Applied(rejected=[rejection(STAGE, item["key"], why, response.text, **details)])
        self.done.add(item["key"])
        self.ratings[rating] += 1
        record = {"key": item["key"], "id": item["id"], "rating": rating, "reason": reason}
        return Applied(records=[record])

    def progress(self) -> tuple[int, int, dict]:
        return len(self.done), len(self.items), {r: self.ratings[r] for r in RATINGS if self.ratings[r]}

    def finish(self) -> Report:
        q = self.ctx.cfg.quality
        total = sum(self.ratings.values())
        spread = ", ".join(f"{r} {self.ratings[r]}" for r in RATINGS)
        kept = sum(self.ratings[r] for r in RATINGS if passes(r, q.min_rating))
        if q.judge == "on":
            what = f"{kept} at {q.min_rating} or better are kept"
        else:  # the stage run alone (self-instruct judge) for a run made without the judge
            what = (
                f"{kept} at {q.min_rating} or better; the dataset keeps every instance until "
                "quality.judge = on (generate --quality-judge on filters it, from these ratings)"
            )
        return Report([f"quality.judge: {total} instances rated ({spread}); {what}"])
