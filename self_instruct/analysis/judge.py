"""Opt-in quality review by an LLM judge, after the method's expert review of 200 instances.

For a seeded sample of instances the configured model answers three yes/no questions: is the
instruction a valid task, does the input fit it, is the output a correct and acceptable response.
Requests go through the Engine (stage "judge"), so the response cache, retries, rate limits and
accounting apply. Each question's answer is parsed on its own; one that cannot be read is counted
and left out of that question's share, which is reported with a 95% Wilson interval.
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter

from ..llm.base import Request, Response
from ..tasks import Task
from .stats import wilson

STAGE = "judge"
QUESTIONS = ("valid", "input_fits", "output_correct")
LABELS = {"valid": "Valid", "input_fits": "Input fits", "output_correct": "Output correct"}
MAX_FIELD_CHARS = 3000  # longer inputs and outputs are cut in the prompt (and marked as cut)

HEADER = """You are reviewing examples from a machine-generated instruction-tuning dataset.
For each one, read the instruction, the input and the output, then answer three questions with yes
or no.

1. Valid: is the instruction a meaningful task that a person could carry out (not nonsense, not a
   fragment, not a statement that asks for nothing)?
2. Input fits: is the input appropriate for the instruction? If the input is empty, answer yes
   when the instruction can be done without one, and no when it needs one.
3. Output correct: is the output a correct and acceptable response to the instruction and the
   input? Answer no if it is wrong, incomplete, off topic or only repeats the input.

Reply with exactly three lines and nothing else, each ending in yes or no, as in the reviews below.

"""
EXAMPLE = """### Instruction
{instruction}

### Input
{input}

### Output
{output}

### Review
"""
# Worked reviews with different answers, so that the format is shown without suggesting one answer.
SHOTS = [
    ("Convert 5 kilometres to metres.", "", "5 kilometres is 5,000 metres.", (True, True, True)),
    ("Sort the numbers in ascending order.", "9, 2, 7", "9, 7, 2", (True, True, False)),
    ("Summarize the article in one sentence.", "", "The article is about the economy.", (True, False, False)),
]


def _review(answers: tuple[bool, bool, bool]) -> str:
    return "".join(f"{LABELS[q]}: {'yes' if a else 'no'}\n" for q, a in zip(QUESTIONS, answers, strict=True))


_BOTH = re.compile(r"\s*(?:or|/|\|)\s*(?:yes|no)\b")
_YES = {"yes", "y", "true"}
_NO = {"no", "n", "false"}
_PATTERNS = {
    "valid": re.compile(r"\bvalid(?:\s+(?:task|instruction))?\s*[:=\-]\s*([a-z]+)"),
    # The labels are required: an echoed "Input: ..." or "Output: yes" line is no answer.
    "input_fits": re.compile(r"\binput\s+(?:fits?|is\s+appropriate|appropriate)\s*[:=\-]\s*([a-z]+)"),
    "output_correct": re.compile(r"\boutput\s+(?:is\s+)?(?:correct|acceptable)\s*[:=\-]\s*([a-z]+)"),
}


def _field(text: str) -> str:
    text = text.strip()
    if not text:
        return "(empty)"
    if len(text) > MAX_FIELD_CHARS:
        return text[:MAX_FIELD_CHARS] + " [...cut]"
    return text


def render_prompt(instruction: str, input: str, output: str, *, completions: bool) -> str:
    shots = "".join(
        EXAMPLE.format(instruction=i, input=_field(x), output=o) + _review(a) + "\n" for i, x, o, a in SHOTS
    )
    prompt = (
        HEADER
        + shots
        + EXAMPLE.format(instruction=_field(instruction), input=_field(input), output=_field(output))
    )
    # A completion model continues the text: start its first line for it.
    return prompt + "Valid:" if completions else prompt


def parse_verdict(text: str) -> dict[str, bool | None]:
    """The three answers of a review (True / False / None when absent or not a clear yes or no).

    Tolerates markdown (``**Valid:** Yes``), list markers, numbering and a sentence after the word;
    a copy of the requested format ("yes or no", "[yes/no]") is no answer.
    """
    clean = re.sub(r"[*_`#>]", "", text.lower())
    out: dict[str, bool | None] = dict.fromkeys(QUESTIONS)
    for line in clean.splitlines():
        line = re.sub(r"^\s*(?:[-+]|\d+[.)])\s*", "", line).strip()
        for q, pattern in _PATTERNS.items():
            if out[q] is not None:
                continue
            m = pattern.match(line)
            if m:
                word, rest = m.group(1), line[m.end() :]
                if _BOTH.match(rest):  # "yes or no", "yes/no": the format copied, not an answer
                    word = ""
                out[q] = True if word in _YES else False if word in _NO else None
                break
    return out


def sample_instances(tasks: list[Task], k: int, seed: int) -> list[tuple[str, str, str]]:
    """A seeded sample of k (instruction, input, output) instances (all when there are fewer)."""
    everything = [(t.instruction, i.input, i.output) for t in tasks for i in t.instances]
    if k >= len(everything):
        return everything
    rng = random.Random(seed)
    return [everything[j] for j in sorted(rng.sample(range(len(everything)), k))]


def summarize(items: list[dict]) -> dict:
    """Shares of yes per question with 95% Wilson intervals; unreadable and failed answers excluded."""
    out: dict[str, object] = {"sample": len(items), "failed": sum(1 for it in items if it.get("error"))}
    for q in QUESTIONS:
        answered = [it[q] for it in items if not it.get("error") and it[q] is not None]
        yes = sum(1 for a in answered if a)
        n = len(answered)
        ci = wilson(yes, n)
        out[q] = {
            "n": n,
            "yes": yes,
            "share": yes / n if n else None,
            "ci95": list(ci) if ci else None,
            "unparsable": sum(1 for it in items if not it.get("error") and it[q] is None),
        }
    return out


def _progress_bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=STAGE, unit="req", disable=not progress, file=sys.stderr, dynamic_ncols=True
    )


async def judge_async(engine, tasks: list[Task], k: int, *, seed: int = 0, progress: bool = False) -> dict:
    """Review a seeded sample of ``k`` instances with ``engine``'s model; returns the summary and items."""
    sample = sample_instances(tasks, k, seed)
    completions = getattr(engine.backend, "api", "chat") == "completions"
    requests = [
        Request(
            prompt=render_prompt(ins, inp, out, completions=completions),
            max_tokens=48,
            temperature=0.0,
            stop=("\n\n", "###") if completions else (),
            seed=seed,
        )
        for ins, inp, out in sample
    ]
    before = Counter(engine.stats.get(STAGE, {}))  # the engine may have judged other inputs already
    bar = _progress_bar(len(requests), progress)
    try:
        responses: list[Response] = await engine.run(requests, stage=STAGE, on_result=lambda r: bar.update())
    finally:
        bar.close()
    items = []
    for (ins, inp, out), resp in zip(sample, responses, strict=True):
        answer = ("Valid:" + resp.text) if completions else resp.text
        verdict = parse_verdict(answer) if resp.ok else dict.fromkeys(QUESTIONS)
        items.append(
            {
                "instruction": ins,
                "input": inp,
                "output": out,
                "answer": resp.text.strip(),
                "error": resp.error,
            }
            | verdict
        )
    summary = summarize(items)
    s = Counter(engine.stats.get(STAGE, {}))
    s.subtract(before)
    summary["requests"] = {
        key: s.get(key, 0)
        for key in ("requests", "cache_hits", "retries", "failures", "prompt_tokens", "completion_tokens")
    }
    summary["cost_usd"] = round(s.get("cost_usd", 0.0), 6)
    summary["backend"] = {
        "name": getattr(engine.backend, "name", None),
        "model": getattr(engine.backend, "model", None),
        "api": getattr(engine.backend, "api", None),
    }
    summary["items"] = items
    return summary
