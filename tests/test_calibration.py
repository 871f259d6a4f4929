"""classify.method = calibrated: margins, the threshold and its cross-validation, the fallbacks,
and logprobs over real HTTP in both APIs."""

import json
import math

import pytest
from helpers import SEEDS, check_run_dir, cli
from openai_server import FakeOpenAIServer
from scripted import ScriptedBackend, known_margin, logprober, respond
from test_pipeline import make_cfg

from self_instruct.calibration import auc, best_threshold, calibrate, folds, margin
from self_instruct.pipeline import run
from self_instruct.store import read_jsonl


def test_margin_adds_up_spellings_and_bounds_a_missing_side():
    top = {" Yes": math.log(0.2), "Yes": math.log(0.1), " No": math.log(0.6), " Maybe": math.log(0.05)}
    assert margin(top) == pytest.approx(math.log(0.3 / 0.6))
    # No "no" among the alternatives: it is at most as likely as the least likely one listed.
    assert margin({" Yes": math.log(0.5), " Sure": math.log(0.01)}) == pytest.approx(math.log(50))
    assert margin({" Positive": -0.1}) is None
    assert margin(None) is None and margin({}) is None


def test_auc_counts_ranked_pairs_and_ties_half():
    assert auc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    assert auc([1, 1], [True, False]) == 0.5


def test_threshold_calls_as_many_tasks_classification_as_the_labels_do():
    # 2 positives, 8 negatives, one negative ranked between the positives.
    scores = [-1.0, -0.5, -3, -3.1, -3.2, -3.3, -3.4, -3.5, -0.8, -3.6]
    labels = [True, True] + [False] * 8
    t = best_threshold(scores, labels)
    assert t == pytest.approx(-0.9)
    assert [s >= t for s in scores].count(True) == 2
    assert best_threshold([1.0, 2.0], [False, False]) > 2.0 and best_threshold([1.0, 2.0], [True, True]) < 1.0


def test_folds_are_stratified():
    labels = [True] * 10 + [False] * 40
    f = folds(labels, 5, seed=0)
    for k in range(5):
        assert sum(1 for i, y in enumerate(labels) if y and f[i] == k) == 2
        assert sum(1 for i, y in enumerate(labels) if not y and f[i] == k) == 8


def test_cross_validation_judges_each_fold_with_a_threshold_from_the_others():
    # Separable data: every fold's threshold separates its held-out fold too.
    scores = [1.0 + i / 10 for i in range(10)] + [-1.0 - i / 10 for i in range(30)]
    labels = [True] * 10 + [False] * 30
    fit = calibrate(scores, labels, greedy_yes=[False] * 40)
    assert fit.cv_balanced_accuracy == 1.0 and fit.auc == 1.0 and fit.calibrated_yes_rate == 0.25
    assert -1.0 < fit.threshold <= 1.0 and fit.greedy_yes_rate == 0.0
    # A score that says nothing: cross-validation does not pretend otherwise.
    noise = [((i * 7919) % 101) / 101 for i in range(40)]
    assert calibrate(noise, labels, [False] * 40).cv_balanced_accuracy < 0.75


def test_calibrated_classification_with_known_margins(tmp_path):
    backend = ScriptedBackend()
    summary = run(make_cfg(tmp_path, **{"classify.method": "calibrated"}), backend=backend)
    d = summary.run_dir
    fit = json.loads((d / "calibration.json").read_text())
    # The scripted model knows the seeds' labels (margins +-1 with jitter), shifted down by 2: greedy
    # says "no" to every seed, the fitted threshold recovers them all.
    assert fit["greedy_yes_rate"] == 0.0
    assert fit["cv_balanced_accuracy"] == 1.0 and fit["auc"] == 1.0
    assert -2.2 < fit["threshold"] <= -1.8
    assert len(fit["seed_margins"]) == 175
    m = summary.manifest
    assert m["classify"]["method"] == "calibrated"
    assert m["classify"]["calibration"]["threshold"] == fit["threshold"]
    assert m["requests"]["calibrate"]["requests"] == 175
    records = read_jsonl(d / "classifications.jsonl")
    assert all(r["method"] == "calibrated" and "margin" in r for r in records)
    for r in records:
        assert r["is_classification"] is (known_margin(r["instruction"]) - 2.0 >= fit["threshold"])
    assert any(r["is_classification"] for r in records)
    methods = {r["method"] for r in read_jsonl(d / "instances.jsonl")}
    assert methods == {"input_first", "output_first"}
    assert any("calibrated on 175 seed tasks" in n for n in summary.notes)
    # Resumed: the saved fit is used, the seeds are not scored again.
    calls = len(backend.calls)
    again = run(make_cfg(tmp_path, **{"classify.method": "calibrated"}), ("classify",), backend=backend)
    assert len(backend.calls) == calls and again.manifest["classify"]["method"] == "calibrated"


def test_without_logprobs_calibrated_falls_back_to_greedy_with_a_note(tmp_path):
    summary = run(
        make_cfg(tmp_path, **{"classify.method": "calibrated"}), backend=ScriptedBackend(logprobs=False)
    )
    assert summary.manifest["classify"]["method"] == "greedy"
    assert any("without yes/no log-probabilities" in n for n in summary.notes)
    assert not (summary.run_dir / "calibration.json").exists()
    assert all(r["method"] == "greedy" for r in read_jsonl(summary.run_dir / "classifications.jsonl"))


def test_too_few_labelled_seeds_fall_back_to_greedy(tmp_path):
    seeds = tmp_path / "few.jsonl"
    rows = [json.loads(line) for line in SEEDS.read_text().splitlines()]
    few_yes = [r for r in rows if r["is_classification"]][:3] + [
        r for r in rows if not r["is_classification"]
    ]
    seeds.write_text("".join(json.dumps(r) + "\n" for r in few_yes))
    cfg = make_cfg(tmp_path, seed_file=str(seeds), **{"classify.method": "calibrated"})
    summary = run(cfg, backend=ScriptedBackend())
    assert summary.manifest["classify"]["method"] == "greedy"
    assert any("3 classification" in n and "needs 5 of each" in n for n in summary.notes)


def test_auto_is_greedy_for_endpoints(tmp_path):
    summary = run(make_cfg(tmp_path), ("bootstrap", "classify"), backend=ScriptedBackend())
    assert summary.manifest["classify"]["method"] == "greedy"
    assert "calibrate" not in summary.manifest["requests"]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_calibrated_over_http_reads_logprobs_in_both_apis(tmp_path, api):
    with FakeOpenAIServer(respond, logprober=logprober) as server:
        proc = cli(
            *("generate", "--base-url", server.base_url, "--api", api, "--seed-file", str(SEEDS)),
            *("--target", "8", "--run-name", "cal", "--no-progress", "--classify-method", "calibrated"),
            *("--llm-structured", "off"),
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        asked = [r["body"] for r in server.requests if r["kind"] == api and r["body"].get("logprobs")]
    assert len(asked) == 175 + 8
    if api == "chat":
        assert all(b["logprobs"] is True and b["top_logprobs"] == 20 and b["max_tokens"] == 1 for b in asked)
    else:
        assert all(b["logprobs"] == 20 and b["max_tokens"] == 1 for b in asked)
    m = check_run_dir(tmp_path / "outputs" / "cal")
    assert m["classify"]["method"] == "calibrated"
    assert m["classify"]["calibration"]["cv_balanced_accuracy"] == 1.0
    assert "calibrated on 175 seed tasks" in proc.stdout


def test_analyze_shows_the_margins_and_the_threshold(tmp_path):
    from self_instruct.analysis import analyze

    summary = run(make_cfg(tmp_path, **{"classify.method": "calibrated"}), backend=ScriptedBackend())
    stats = analyze([str(summary.run_dir)], str(tmp_path / "report"), progress=False)
    c = stats["inputs"][0]["run"]["classification"]
    fit = json.loads((summary.run_dir / "calibration.json").read_text())
    assert c["threshold"] == fit["threshold"] and c["cv_balanced_accuracy"] == 1.0
    assert len(c["run_margins"]) == 12 and len(c["seed_labels"]) == 175
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Classification (calibrated)" in md and "margins.png" in md
    assert (tmp_path / "report" / "margins.png").read_bytes().startswith(b"\x89PNG")


def test_auto_keeps_greedy_when_calibration_is_no_better_than_chance(tmp_path):
    import hashlib

    from self_instruct.llm.base import Response

    class NoisyLocal(ScriptedBackend):
        name = "local"  # auto calibrates the local backend

        async def complete(self, request):
            if not request.logprobs:
                return await super().complete(request)
            noise = int(hashlib.sha256(request.prompt.encode()).hexdigest()[:6], 16) / 0xFFFFFF
            return Response(
                text=" No", finish_reason="length", top_logprobs={" No": -0.5, " Yes": -0.5 - noise}
            )

    summary = run(make_cfg(tmp_path), backend=NoisyLocal())
    assert summary.manifest["classify"]["method"] == "greedy"
    assert any("no better than chance" in n for n in summary.notes)
    assert not (summary.run_dir / "calibration.json").exists()
