"""quality.judge: every instance rated on the paper's A-D scale, the dataset keeps exactly those at
quality.min_rating or better, unreadable answers are asked again and never pass, in every executor,
and a killed run resumes to the same files."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
from scripted import ScriptedBackend, judged

from self_instruct.config import load_config
from self_instruct.pipeline import run
from self_instruct.stages.judge import parse_rating, render
from self_instruct.store import read_jsonl

SEEDS = Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"


@pytest.mark.parametrize(
    ("text", "rating", "reason"),
    [
        ("Rating: B\nReason: minor slips.", "B", "minor slips."),
        (" A\nReason: all correct", "A", "all correct"),
        ("**Rating:** C - wrong sum", "C", "wrong sum"),
        ('{"rating": "d", "reason": "off topic"}', "D", "off topic"),
        ('Here you go: {"rating": "A", "reason": " fine "}', "A", "fine"),
        ("(B) acceptable", "B", "acceptable"),
        ("\nThe answer is: C.", "C", ""),  # as the embedded model writes it
        ("The answer is: C\n\nThe answer is: A", None, ""),  # two ratings: neither is read
        ("A dog is not a valid answer here.", None, ""),  # an article, not a rating
        ("b\nReason: lower case", None, ""),
        ("Rating: E\nReason: ?", None, ""),
        ("Both answers are fine.", None, ""),  # "B" only as the start of a word: not a rating
        ("", None, ""),
        ('{"rating": "great"}', None, ""),
    ],
)
def test_ratings_are_read_from_text_and_json_and_never_guessed(text, rating, reason):
    assert parse_rating(text) == (rating, reason)


class FlakyJudge(ScriptedBackend):
    """The scripted model, whose first judge answer for one instance in three cannot be read."""

    async def complete(self, request):
        response = await super().complete(request)
        first_judge = (
            request.prompt.rstrip().endswith("Reason: <one short sentence>") and not request.temperature
        )
        if first_judge and int(hashlib.sha256(request.prompt.encode()).hexdigest()[:8], 16) % 3 == 0:
            response.text = "I would rather not say."
        return response


def _run(tmp_path: Path, name: str, **extra: str):
    over = {
        "output_dir": str(tmp_path),
        "run_name": name,
        "seed_file": str(SEEDS),
        "target": "25",
        "progress": "false",
        "llm.structured": "off",
        "quality.judge": "on",
        **extra,
    }
    return run(load_config(None, over), backend=FlakyJudge())


def test_the_dataset_keeps_exactly_the_instances_rated_b_or_better(tmp_path):
    summary = _run(tmp_path, "judged")
    assert not summary.incomplete
    out = tmp_path / "judged"
    instances = [
        (r["instruction"], i["input"], i["output"])
        for r in read_jsonl(out / "instances.jsonl")
        for i in r["instances"]
    ]
    want = {(ins, inp, o): judged(render(ins, inp, o, structured=False)) for ins, inp, o in instances}
    rows = read_jsonl(out / "dataset.jsonl")
    kept = {(r["instruction"], r["input"], r["output"]): r["rating"] for r in rows}
    assert kept == {k: v for k, v in want.items() if v in "AB"}
    low = [r for r in read_jsonl(out / "rejected.jsonl") if r["reason"] == "low_quality"]
    assert sorted(r["details"]["rating"] for r in low) == sorted(v for v in want.values() if v in "CD")
    assert all(r["stage"] == "dataset" and r["details"]["judge_reason"] for r in low)
    # The unreadable first answers were asked again, and none of them counted as a rating.
    unread = [r for r in read_jsonl(out / "rejected.jsonl") if r["reason"] == "unreadable_rating"]
    assert unread and all(r["stage"] == "judge" and r["details"]["attempt"] == 0 for r in unread)
    assert len(read_jsonl(out / "judgments.jsonl")) == len(instances)
    assert any("quality.judge:" in note and "are kept" in note for note in summary.notes)
    # The ratings reach analyze (their distribution, and which were kept) and the export's card.
    from self_instruct.analysis import analyze
    from self_instruct.export import ExportOptions, export

    stats = analyze([str(out)], str(tmp_path / "report"), progress=False)
    ratings = stats["inputs"][0]["run"]["judge_ratings"]
    assert ratings["counts"] == {r: list(want.values()).count(r) for r in "ABCD"}
    assert ratings["kept"] == {"A": True, "B": True, "C": False, "D": False}
    assert "Judge ratings (quality.judge)" in (tmp_path / "report" / "report.md").read_text()
    export([str(out)], str(tmp_path / "export"), ExportOptions())
    card = (tmp_path / "export" / "README.md").read_text()
    spread = ", ".join(f"{r} {n}" for r, n in sorted(Counter(kept.values()).items()))
    assert f"rated by the judge (A best, D worst): {spread}; not rated: 0" in card
    # min_rating = C keeps more (another run: the threshold changes what the run is).
    _run(tmp_path, "lenient", **{"quality.min_rating": "C"})
    lenient = read_jsonl(tmp_path / "lenient" / "dataset.jsonl")
    assert {r["rating"] for r in lenient} <= set("ABC") and len(lenient) > len(rows)


def test_a_judge_that_never_answers_readably_leaves_instances_out_and_says_which_setting(tmp_path):
    class Mute(FlakyJudge):
        async def complete(self, request):
            response = await super().complete(request)
            if request.prompt.rstrip().endswith("Reason: <one short sentence>"):
                response.text = "no comment"
            return response

    over = {
        "output_dir": str(tmp_path),
        "run_name": "mute",
        "seed_file": str(SEEDS),
        "target": "5",
        "progress": "false",
        "llm.structured": "off",
        "quality.judge": "on",
        "quality.judge_max_attempts": "2",
    }
    summary = run(load_config(None, over), backend=Mute())
    assert not (tmp_path / "mute" / "dataset.jsonl").read_text()
    gaps = [g for g in summary.incomplete if g.limits == ("quality.judge_max_attempts",)]
    assert gaps and "unreadable ratings each" in gaps[0].reason


def test_the_judge_can_be_another_model_at_another_endpoint(tmp_path):
    from openai_server import FakeOpenAIServer
    from scripted import respond

    with FakeOpenAIServer(respond) as judge:
        summary = _run(
            tmp_path,
            "other",
            **{"quality.judge_base_url": [judge.base_url], "quality.judge_model": "judge-model"},
        )
        asked = [r for r in judge.requests if (r["body"] or {}).get("model") == "judge-model"]
    assert not summary.incomplete
    judgments = read_jsonl(tmp_path / "other" / "judgments.jsonl")
    instances = sum(len(r["instances"]) for r in read_jsonl(tmp_path / "other" / "instances.jsonl"))
    # Every rating came from the other endpoint (the run's own model, FlakyJudge, was never asked).
    assert len(judgments) == instances and len(asked) == instances


def test_a_run_made_without_the_judge_can_be_judged_later(tmp_path):
    """Turning quality.judge on for a finished run needs no --force: the run ends with the files of
    one judged from the start. ``self-instruct judge`` alone rates, and says the dataset is not
    filtered until the setting is on."""
    _run(tmp_path, "judged")
    _run(tmp_path, "later", **{"quality.judge": "off"})
    alone = run(
        load_config(
            None,
            {
                "output_dir": str(tmp_path),
                "run_name": "later",
                "seed_file": str(SEEDS),
                "target": "25",
                "progress": "false",
                "llm.structured": "off",
            },
        ),
        backend=FlakyJudge(),
        stages=("judge",),
    )
    assert any("the dataset keeps every instance until quality.judge = on" in n for n in alone.notes)
    assert "rating" not in read_jsonl(tmp_path / "later" / "dataset.jsonl")[0]
    _run(tmp_path, "later")  # quality.judge on, no force
    for name in ("dataset.jsonl", "judgments.jsonl", "rejected.jsonl", "tasks.jsonl"):
        assert (tmp_path / "later" / name).read_bytes() == (tmp_path / "judged" / name).read_bytes(), name
