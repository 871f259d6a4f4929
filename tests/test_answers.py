"""The answer corpus (tests/data/answers/*.toml): realistic answers in the styles of completions
continuations and of GPT-4o, Llama 3, Qwen 2.5, Mistral and Gemma chat answers, each with its exact
expected parse (docs/parsing.md). Every case also checks the accounting identity: the parts of a
text answer join back into the answer, and every non-blank part is kept or rejected with a reason.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from self_instruct.parsing import Reading, parse_answer
from self_instruct.prompts import template
from self_instruct.tasks import Instance

DATA = Path(__file__).parent / "data" / "answers"
KINDS = ("bootstrap", "classify", "input_first", "output_first")


def cases(kind: str) -> list[dict]:
    with (DATA / f"{kind}.toml").open("rb") as f:
        return tomllib.load(f)["case"]


def params():
    return [pytest.param(kind, case, id=f"{kind}:{case['name']}") for kind in KINDS for case in cases(kind)]


def test_the_corpus_is_large_and_covers_every_style():
    all_cases = {kind: cases(kind) for kind in KINDS}
    assert sum(len(c) for c in all_cases.values()) >= 60
    for kind, cs in all_cases.items():
        assert {c["api"] for c in cs} == {"chat", "completions"}, kind
        assert any(c.get("structured") for c in cs), kind
        styles = " ".join(c["style"] for c in cs)
        for family in ("GPT-4o", "Llama 3", "Qwen 2.5", "Mistral", "Gemma"):
            assert family in styles, (kind, family)


def parse(kind, case: dict):
    """The case's answer read as the stages read it (``parse_answer``), with the stage's context."""
    how = Reading(
        continuation=case["api"] == "completions",
        structured=bool(case.get("structured")),
        max_items=7 if kind == "bootstrap" else 5,
        first_number=9,
        header=template("bootstrap"),
        shown=tuple(case.get("shown") or ()),
        task=case.get("task"),
    )
    return parse_answer(kind, case["text"], case.get("finish_reason", "stop"), how)


@pytest.mark.parametrize(("kind", "case"), params())
def test_answer_parses_exactly(kind, case):
    got = parse(kind, case)
    if kind == "classify":
        assert got == case["answer"]
        return
    if kind == "bootstrap":
        assert got.kept == case["items"]
    else:
        assert got.kept == [Instance(i["input"], i["output"]) for i in case["instances"]]
    assert got.rejected == [tuple(r) for r in case["rejected"]]
    # Accounting: the parts of a text answer give it back whole, and each part is one kept value
    # or one rejection, so nothing the model wrote is lost without a record.
    if not case.get("structured") or not case["text"].lstrip().startswith(("{", "`")):
        assert "".join(p.raw for p in got.parts) == case["text"]
    assert [p.reason for p in got.parts if p.reason] == [r[0] for r in got.rejected]
    assert len([p for p in got.parts if p.reason is None and p.raw.strip()]) == len(got.kept)
