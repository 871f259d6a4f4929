"""Stage 2: ask, few-shot and greedily, whether each accepted instruction is a classification task.

A clear "yes" is a classification task and a clear "no" is not (``parsing.parse_classification``).
An answer that is neither, or that was cut off before its word was complete, is never read as "no":
it is written to rejected.jsonl with its raw text (reason ``ambiguous_answer`` or ``truncated``)
and the instruction stays unclassified. It is asked again, up to ``classify.max_attempts`` answers
in all, the later attempts sampled (temperature 0.7, a seed of their own) so that a deterministic
model can answer differently. Attempts are counted from the records, so a run that is killed and
resumed asks exactly the questions an uninterrupted run asks.

With ``classify.method = calibrated`` the model is asked for one token and its top
log-probabilities instead: a task is a classification task when its yes-no margin reaches a
threshold fitted on the seed tasks' labels (``calibration.py``). The seeds are scored through the
engine like any request (cached), and the fit is kept in ``calibration.json``, so a resumed run
uses the same threshold. Without log-probabilities, or with too few labelled seeds of either kind,
the stage falls back to greedy with a note.

A request that fails after its retries is written to failures.jsonl and left unclassified; running
the stage again retries it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..calibration import MIN_PER_LABEL, YES_TOKENS, calibrate, margin
from ..llm.base import Request, Response
from ..parsing import Reading, parse_answer
from ..prompts import render_classify, render_classify_json
from ..step import Applied, Report, Step, Work
from ..store import RunDir, as_rejection, rejection, write_json_atomic
from ..structured import schema_text
from ..tasks import Task
from .common import Rounds, StageContext, attempts

STAGE = "classify"
RETRY_TEMPERATURE = 0.7
MIN_BALANCED_ACCURACY = 0.6  # auto keeps the reference rule when calibration does no better than this
UNUSABLE = {"ambiguous": "ambiguous_answer", "truncated": "truncated", "missing_logprobs": "missing_logprobs"}


def attempt_seed(ctx: StageContext, attempt: int) -> int:
    """The first answer uses the run's seed; each later attempt a seed of its own."""
    return ctx.cfg.seed if attempt == 0 else ctx.cfg.seed * 1_000_003 + attempt


def build_request(ctx: StageContext, instruction: str, attempt: int = 0) -> Request:
    c = ctx.cfg.classify
    chat = not ctx.api_is_completions
    stop: tuple[str, ...]
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
        seed=attempt_seed(ctx, attempt),
        schema=schema_text("classify", 1) if ctx.structured else None,
    )


def score_request(ctx: StageContext, instruction: str, attempt: int = 0) -> Request:
    """One answer token and its top log-probabilities (the text prompt: JSON would start with '{')."""
    return Request(
        prompt=render_classify(instruction, chat=not ctx.api_is_completions),
        max_tokens=1,
        temperature=0.0 if attempt == 0 else RETRY_TEMPERATURE,
        seed=attempt_seed(ctx, attempt),
        logprobs=ctx.cfg.classify.logprobs,
    )


@dataclass
class Method:
    name: str  # "greedy" or "calibrated"
    threshold: float | None = None
    note: str = ""
    calibration: dict | None = None


async def choose_method(ctx: StageContext, seed_tasks: list[Task]) -> Method:
    """greedy, or calibrated with a threshold fitted on the seeds (see the module docstring)."""
    setting = ctx.cfg.classify.method
    assert ctx.engine is not None
    if setting == "greedy" or (setting == "auto" and ctx.engine.backend.name != "local"):
        return Method("greedy", note=f"classify.method = {setting}: greedy (the reference rule)")
    saved = ctx.files.calibration
    if saved.exists():
        fit = json.loads(saved.read_text(encoding="utf-8"))
        return Method("calibrated", fit["threshold"], fit["note"], fit)
    labelled = [t for t in seed_tasks if t.is_classification is not None]
    labels = [bool(t.is_classification) for t in labelled]
    n_yes, n_no = sum(labels), len(labels) - sum(labels)
    if min(n_yes, n_no) < MIN_PER_LABEL:
        return Method(
            "greedy",
            note=f"classify.method = {setting}: greedy, because the seed file has {n_yes} classification "
            f"and {n_no} other tasks (calibration needs {MIN_PER_LABEL} of each)",
        )
    requests = [score_request(ctx, t.instruction) for t in labelled]
    responses = await ctx.engine.run(requests, stage="calibrate")
    tops = [r.top_logprobs for r in responses if r.ok and r.top_logprobs]
    margins = [m for top in tops if (m := margin(top)) is not None]
    if len(margins) < len(responses):
        return Method(
            "greedy",
            note=f"classify.method = {setting}: greedy, because {len(responses) - len(margins)} of "
            f"{len(responses)} seed answers came without yes/no log-probabilities",
        )
    greedy_yes = [max(top, key=top.__getitem__) in YES_TOKENS for top in tops]
    fit = calibrate(margins, labels, greedy_yes, seed=ctx.cfg.seed)
    note = (
        f"classify.method = {setting}: calibrated on {fit.seeds} seed tasks, threshold {fit.threshold:.3f}; "
        f"cross-validated accuracy {fit.cv_accuracy:.2f}, balanced accuracy {fit.cv_balanced_accuracy:.2f}, "
        f"AUC {fit.auc:.3f}; yes on the seeds: greedy {fit.greedy_yes_rate:.0%}, calibrated "
        f"{fit.calibrated_yes_rate:.0%}, labels {fit.positives / fit.seeds:.0%}"
    )
    if setting == "auto" and fit.cv_balanced_accuracy < MIN_BALANCED_ACCURACY:
        return Method(
            "greedy",
            note="classify.method = auto: greedy, because the calibrated rule was no better than chance "
            f"on the seeds (cross-validated balanced accuracy {fit.cv_balanced_accuracy:.2f}, "
            f"AUC {fit.auc:.2f})",
        )
    record = {**fit.to_dict(), "threshold": fit.threshold, "note": note}
    record.update(seed_margins=[round(m, 4) for m in margins], seed_labels=labels)
    write_json_atomic(saved, record)
    return Method("calibrated", fit.threshold, note, record)


def decision(ctx: StageContext, response: Response) -> str:
    """'yes', 'no', 'ambiguous' or 'truncated' for one answer, text or JSON."""
    return parse_answer("classify", response.text, response.finish_reason, Reading(structured=ctx.structured))


def unusable_answers(files: RunDir) -> dict[str, list[str]]:
    """Each instruction's unusable answers so far, by reason in the order given: how many attempts
    it has had (so a resumed run asks what an uninterrupted one asks), and why the last one failed."""
    out: dict[str, list[str]] = {}
    for r in map(as_rejection, files.rejected.read()):
        if r["stage"] == STAGE:
            out.setdefault(r["key"], []).append(r["reason"])
    return out


def exhausted(files: RunDir, max_attempts: int, undecided: set[str]) -> dict[str, str]:
    """The undecided instructions that got all the answers they may get, each with the reason its
    last answer was unusable: running again asks them nothing (raise classify.max_attempts)."""
    return {
        key: reasons[-1]
        for key, reasons in unusable_answers(files).items()
        if key in undecided and len(reasons) >= max_attempts
    }


class ClassifyStep(Step):
    """Classify every accepted instruction that has no classification yet, in rounds: one per attempt
    number, in pool order, so the same questions go out in the same order whatever sessions the work
    was split into."""

    name = STAGE
    unit = "instr"
    output = "classifications"
    attempts_are_records = True  # an unusable answer is a finished attempt: it counts on resume
    batchable = True

    def __init__(self, ctx: StageContext, seed_tasks: list[Task]) -> None:
        self.ctx, self.seed_tasks = ctx, seed_tasks
        self.rounds = Rounds("id", ctx.cfg.classify.max_attempts)

    async def start(self, concurrency: int) -> None:
        f = self.ctx.files
        self.method = await choose_method(self.ctx, self.seed_tasks)
        self.instructions = f.instructions.read()
        self.done = {r["id"] for r in f.classifications.read()}
        self.attempts = attempts(f, STAGE)

    def next(self, in_flight: int, limit: int) -> list[Work]:
        return self.rounds.next(self.instructions, self.done, self.attempts, in_flight, limit, self._request)

    @property
    def round_no(self) -> int:
        return self.rounds.round_no

    def _request(self, rec: dict) -> Request:
        if self.method.name == "calibrated":
            return score_request(self.ctx, rec["instruction"], self.round_no)
        return build_request(self.ctx, rec["instruction"], self.round_no)

    def apply(self, work: Work, response: Response) -> Applied:
        rec = work.data
        if not response.ok:
            return Applied()
        self.rounds.failed.discard(rec["id"])
        method = self.method
        m = margin(response.top_logprobs) if method.name == "calibrated" else None
        if method.name == "calibrated":
            assert method.threshold is not None
            d = "missing_logprobs" if m is None else "yes" if m >= method.threshold else "no"
        else:
            d = decision(self.ctx, response)
        if d in UNUSABLE:
            self.attempts[rec["id"]] += 1
            why = UNUSABLE[d]
            details = {"instruction": rec["instruction"], "attempt": self.round_no}
            return Applied(rejected=[rejection(STAGE, rec["id"], why, response.text, **details)])
        self.done.add(rec["id"])
        record = {
            "id": rec["id"],
            "instruction": rec["instruction"],
            "is_classification": d == "yes",
            "answer": response.text.strip(),
            "method": method.name,
            **({"margin": round(m, 4)} if m is not None else {}),
        }
        return Applied(records=[record])

    def progress(self) -> tuple[int, int, dict]:
        return len(self.done), len(self.instructions), {}

    def finish(self) -> Report:
        method = self.method
        entry: dict = {"method": method.name, "note": method.note}
        if method.calibration:
            skip = ("note", "seed_margins", "seed_labels")
            entry["calibration"] = {k: v for k, v in method.calibration.items() if k not in skip}
        notes = [method.note]
        undecided = len(self.instructions) - len(self.done)
        if undecided:
            f = self.ctx.files
            where = [
                f"{what} in {path.name}"
                for what, path in (
                    ("unusable answers", f.rejected.path),
                    ("failed requests", f.failures.path),
                )
                if path.exists()
            ]
            notes.append(f"{undecided} instructions have no yes/no classification yet: " + "; ".join(where))
        return Report(notes, manifest={"classify": entry})
