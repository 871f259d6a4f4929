"""The stages end to end through the in-process scripted model."""

import json
import random
from pathlib import Path

import pytest
from scripted import ScriptedBackend

from self_instruct.config import load_config
from self_instruct.llm.base import Request, Response
from self_instruct.novelty import NoveltyIndex
from self_instruct.pipeline import run
from self_instruct.stages.bootstrap import sample_prompt_instructions
from self_instruct.store import read_jsonl

SEEDS = str(Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl")


def make_cfg(tmp_path, **over):
    base = {"output_dir": str(tmp_path), "run_name": "r", "seed_file": SEEDS, "target": 12, "progress": False}
    base["llm.structured"] = "off"  # text answers; tests that want JSON say so
    base.update(over)
    return load_config(None, base)


def lines(path):
    return read_jsonl(path) if path.exists() else []


def test_sampling_rule_six_seeds_two_machine():
    rng = random.Random(1)
    seeds = [f"seed {i}" for i in range(20)]
    assert all(
        s in seeds for s in sample_prompt_instructions(rng, seeds, ["m0"], 8, 2)
    )  # <2 machine: 8 seeds
    shown = sample_prompt_instructions(rng, seeds, ["m0", "m1", "m2"], 8, 2)
    assert len(shown) == 8 and len(set(shown)) == 8
    assert sum(s.startswith("m") for s in shown) == 2


def test_generate_end_to_end_is_consistent(tmp_path):
    cfg = make_cfg(tmp_path)
    backend = ScriptedBackend()
    summary = run(cfg, backend=backend)
    d = summary.run_dir
    accepted = lines(d / "machine_instructions.jsonl")
    assert len(accepted) == 12  # stops exactly at the target
    # Every prompt shows 8 instructions; once 2 machine instructions exist, 2 of them are machine-made.
    boot = [r for r in backend.calls if r.prompt.startswith("The numbered list")]
    assert all(r.prompt.rstrip().endswith("\n9.") for r in boot)
    assert boot[0].temperature == 0.7 and boot[0].top_p == 0.5 and boot[0].presence_penalty == 2.0
    # Novelty holds over seeds + accepted, in order.
    index = NoveltyIndex()
    for t in json.loads("[" + ",".join(Path(SEEDS).read_text().strip().splitlines()) + "]"):
        index.add(t["instruction"])
    for r in accepted:
        top = index.top_k(r["instruction"], 10)
        assert top[0].score <= 0.7
        # The record holds the 10 most similar entries of the pool as it stood at acceptance.
        assert r["most_similar"] == [{"instruction": m.text, "score": m.score} for m in top]
        index.add(r["instruction"])
    classes = {r["id"]: r["is_classification"] for r in lines(d / "classifications.jsonl")}
    assert set(classes) == {r["id"] for r in accepted}
    assert any(classes.values()) and not all(classes.values())
    inst = {r["id"]: r for r in lines(d / "instances.jsonl")}
    for rid, rec in inst.items():
        assert rec["method"] == ("output_first" if classes[rid] else "input_first")
        assert 1 <= len(rec["instances"]) <= 5
    rows = lines(d / "dataset.jsonl")
    texts = {r["instruction"] for r in accepted}
    assert rows and all(
        r["instruction"] in texts and set(r) == {"instruction", "input", "output"} for r in rows
    )
    tasks = lines(d / "tasks.jsonl")
    assert sum(len(t["instances"]) for t in tasks) == len(rows)
    m = json.loads((d / "manifest.json").read_text())
    c = m["counts"]
    assert c["machine_instructions"] == len(accepted)
    assert c["dataset_rows"] == len(rows) and c["dataset_tasks"] == len(tasks)
    assert c["rejected"] == len(lines(d / "rejected.jsonl"))
    assert sum(sum(v.values()) for v in c["rejected_by_stage"].values()) == c["rejected"]
    assert m["requests"]["bootstrap"]["requests"] >= c["bootstrap_requests"] > 0
    assert m["config"]["bootstrap"]["top_p"] == 0.5 and m["random_seed"] == 42
    assert set(m["templates_sha256"]) >= {"bootstrap", "classify"}
    assert m["packages"]["openai"]


def test_rerunning_finished_stages_changes_nothing(tmp_path):
    cfg = make_cfg(tmp_path)
    run(cfg, backend=ScriptedBackend())
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").glob("*.jsonl")}
    backend = ScriptedBackend()
    run(cfg, backend=backend)
    assert backend.calls == []
    after = {p.name: p.read_bytes() for p in (tmp_path / "r").glob("*.jsonl")}
    assert after == before


def test_raising_the_target_continues_the_run(tmp_path):
    run(make_cfg(tmp_path, target=5), ("bootstrap",), backend=ScriptedBackend())
    first = lines(tmp_path / "r" / "machine_instructions.jsonl")
    run(make_cfg(tmp_path, target=12), backend=ScriptedBackend())
    accepted = lines(tmp_path / "r" / "machine_instructions.jsonl")
    assert accepted[:5] == first
    assert [r["id"] for r in accepted] == [f"machine_{i}" for i in range(12)]
    assert len({r["instruction"] for r in accepted}) == 12


def test_the_session_records_the_bootstrap_requests_answered_past_the_target(tmp_path):
    # Every request bootstrap sent and did not apply is wasted; the later stages waste none, and the
    # session's count is bootstrap's (sent requests are on record in usage.jsonl before they go).
    summary = run(
        make_cfg(tmp_path, target=60, **{"llm.concurrency": "16"}), backend=ScriptedBackend(jitter=0.002)
    )
    d = summary.run_dir
    sent = [r for r in lines(d / "usage.jsonl") if r.get("event") == "sent" and r["stage"] == "bootstrap"]
    applied = lines(d / "bootstrap_requests.jsonl")
    assert summary.manifest["sessions"][-1]["wasted_requests"] == len(sent) - len(applied) > 0


@pytest.mark.parametrize(("api", "window"), [("completions", "64"), ("chat", "64"), ("completions", "3")])
def test_same_output_whatever_the_concurrency_and_arrival_order(tmp_path, api, window):
    names = ("machine_instructions.jsonl", "classifications.jsonl", "instances.jsonl", "dataset.jsonl")
    outputs = []
    for concurrency, jitter in (("1", 0.0), ("16", 0.01), ("64", 0.02)):
        over = {"llm.concurrency": concurrency, "bootstrap.window": window}
        summary = run(
            make_cfg(tmp_path, run_name=concurrency, target=40, **over),
            backend=ScriptedBackend(api, jitter=jitter),
        )
        outputs.append({n: (summary.run_dir / n).read_bytes() for n in names})
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.parametrize("window", [1, 4, 12])
def test_request_i_sees_the_pool_after_requests_up_to_i_minus_window(tmp_path, window):
    from self_instruct.prompts import render_bootstrap
    from self_instruct.stages.bootstrap import shown_instructions
    from self_instruct.stages.common import StageContext
    from self_instruct.store import RunDir
    from self_instruct.tasks import load_tasks

    cfg = make_cfg(tmp_path, target=60, **{"bootstrap.window": str(window), "llm.concurrency": "8"})
    backend = ScriptedBackend(jitter=0.01)
    run(cfg, ("bootstrap",), backend=backend)
    seeds = [t.instruction for t in load_tasks(SEEDS)]
    accepted = lines(cfg.run_dir / "machine_instructions.jsonl")
    sent = {r.seed: r.prompt for r in backend.calls}  # each request's seed is (seed, i)
    n = len(lines(cfg.run_dir / "bootstrap_requests.jsonl"))
    assert n > window  # later requests do see machine instructions
    ctx = StageContext(cfg, None, RunDir(cfg.run_dir))
    shows_machine = 0
    for i in range(n):
        pool = [r["instruction"] for r in accepted if r["request"] <= i - window]
        shown = shown_instructions(ctx, i, seeds, pool)
        assert sent[cfg.seed * 1_000_003 + i] == render_bootstrap(shown), i
        shows_machine += any(s not in seeds for s in shown)
    assert shows_machine >= n - window - 1


def test_in_flight_follows_the_recent_yield():
    from collections import deque

    from self_instruct.executor import in_flight_limit
    from self_instruct.stages.bootstrap import in_flight_wanted

    assert in_flight_wanted(2000, deque(), 64, 7) == 64  # far from the target: all that may go
    assert in_flight_wanted(10, deque(), 64, 7) == 2  # before any answer: each may bring 7
    assert in_flight_wanted(10, deque([1, 1, 1, 1, 1]), 64, 7) == 5  # 10 more at (5 + 7) / 6 a request
    assert in_flight_wanted(10, deque([0, 0]), 64, 7) == 64  # nothing accepted lately: no estimate
    assert in_flight_wanted(1, deque([5, 5]), 64, 7) == 1
    assert in_flight_limit(1) == 1 and in_flight_limit(16) == 128 and in_flight_limit(64) == 512


def test_window_is_recorded_and_a_run_directory_refuses_another(tmp_path):
    from self_instruct.errors import UserError

    summary = run(
        make_cfg(tmp_path, target=8, **{"bootstrap.window": "4"}), ("bootstrap",), backend=ScriptedBackend()
    )
    assert summary.manifest["config"]["bootstrap"]["window"] == 4
    assert summary.manifest["provenance"]["bootstrap.window"] == 4
    with pytest.raises(UserError, match=r"setting 'bootstrap.window' is 4 in this run directory and 512 now"):
        run(make_cfg(tmp_path, target=12), ("bootstrap",), backend=ScriptedBackend())


def test_half_applied_request_is_redone_not_duplicated(tmp_path):
    cfg = make_cfg(tmp_path, target=6)
    run(cfg, ("bootstrap",), backend=ScriptedBackend())
    d = tmp_path / "r"
    reference = (d / "machine_instructions.jsonl").read_bytes()
    # Simulate a crash after the last request's records were written but before its commit line.
    log = lines(d / "bootstrap_requests.jsonl")
    (d / "bootstrap_requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log[:-1]))
    run(cfg, ("bootstrap",), backend=ScriptedBackend())
    assert (d / "machine_instructions.jsonl").read_bytes() == reference
    assert len(lines(d / "bootstrap_requests.jsonl")) == len(log)


class FlakyClassifier(ScriptedBackend):
    async def complete(self, request: Request) -> Response:
        if request.prompt.rstrip().endswith("Classification:") and len(self.calls) % 2:
            self.calls.append(request)
            return Response(text="", finish_reason="error", error="simulated failure")
        return await super().complete(request)


def test_failed_requests_are_recorded_and_retried_by_a_rerun(tmp_path):
    cfg = make_cfg(tmp_path, target=8)
    summary = run(cfg, backend=FlakyClassifier())
    d = summary.run_dir
    failures = lines(d / "failures.jsonl")
    assert failures and all(f["stage"] == "classify" and f["error"] == "simulated failure" for f in failures)
    assert summary.manifest["counts"]["failures"] == len(failures)
    assert len(lines(d / "classifications.jsonl")) == 8 - len(failures)
    assert any("no instances yet" in n for n in summary.notes)
    run(cfg, backend=ScriptedBackend())
    assert len(lines(d / "classifications.jsonl")) == 8


def test_rejections_carry_reasons(tmp_path):
    class Junk(ScriptedBackend):
        async def complete(self, request):
            if request.prompt.startswith("The numbered list"):
                self.calls.append(request)
                text = " Draw a picture of a cat.\n10. Hi.\n11. Write a program to add numbers.\n12. " + (
                    "Explain the history of the river orbit ledger violin harvest quartz."
                )
                return Response(text=text, finish_reason="stop")
            return await super().complete(request)

    cfg = make_cfg(tmp_path, target=3, **{"bootstrap.max_requests": "4"})
    summary = run(cfg, backend=Junk())
    reasons = summary.manifest["counts"]["rejected_by_stage"]["bootstrap"]
    assert reasons["keyword:draw"] == 4 and reasons["too_short"] == 4 and reasons["write_a_program"] == 4
    assert reasons["too_similar"] == 3  # the same new instruction, after its first acceptance
    assert any("bootstrap stopped after 4 requests" in n for n in summary.notes)
    similar = [r for r in lines(summary.run_dir / "rejected.jsonl") if r["reason"] == "too_similar"]
    assert similar[0]["details"]["most_similar"]["score"] == 1.0


def test_every_part_of_a_chat_answer_is_kept_or_recorded(tmp_path):
    """A chat model that wraps its answers in prose: nothing it writes is lost without a record, and an
    answer that is neither yes nor no is asked again, never read as "no"."""

    class Chatty(ScriptedBackend):
        async def complete(self, request):
            self.calls.append(request)
            p = request.prompt
            if p.startswith("The numbered list"):
                tasks = [
                    "Describe the harbor of an old fishing town at dawn.",
                    "Plan a picnic menu for six vegetarian friends.",
                    "Translate the greeting into formal Japanese.",
                    "Summarize the rules of chess for a child.",
                    "List four ways to save water in a garden.",
                    "Write a limerick about a sleepy librarian.",
                    "Explain how a bicycle gear system works.",
                    "Suggest names for a jazz band of retired pilots.",
                    "Compare trains and planes for a trip across Europe.",
                ]
                items = "\n".join(f"{9 + k}. {t}" for k, t in enumerate(tasks))
                text = f"Sure! Here are some new tasks:\n\n{items}\n\nI hope these help!"
            elif p.rstrip().endswith("Answer Yes or No."):
                # The first answer to each question dodges it; asked again, it says no.
                seen = sum(1 for c in self.calls if c.prompt == p)
                text = "Decision:" if seen == 1 else "No, it asks for open-ended text."
            else:
                text = (
                    "Here are two examples:\n\n**Example 1**\n**Input:** a calm sea\n**Output:** The sea "
                    "lay still.\nExplanation: it describes the input.\n\n**Example 2**\nOutput: Gulls "
                    "circled.\n\nLet me know if you need more!"
                )
            return Response(text=text, finish_reason="stop")

    cfg = make_cfg(tmp_path, target=3, **{"llm.api": "chat", "bootstrap.max_requests": "1"})
    summary = run(cfg, backend=Chatty(api="chat"))
    rejected = lines(summary.run_dir / "rejected.jsonl")
    by = {(r["stage"], r["reason"]) for r in rejected}
    # One record shape for every stage.
    assert {frozenset(r) for r in rejected} == {frozenset({"stage", "key", "reason", "text", "details"})}
    assert {"bootstrap", "classify", "instances"} <= {stage for stage, _ in by}
    assert ("bootstrap", "preamble") in by and ("bootstrap", "closing_remark") in by
    over = [r["text"] for r in rejected if r["reason"] == "over_cap"]
    assert len(over) == 2  # nine items, seven per answer
    assert ("instances", "preamble") in by and ("instances", "explanation") in by
    assert ("instances", "closing_remark") in by
    # Three accepted, four more past the target: every item of the answer is on record.
    assert sum(1 for r in rejected if r["reason"] == "over_target") == 4
    ambiguous = [r for r in rejected if r["reason"] == "ambiguous_answer"]
    assert len(ambiguous) == 3 and all(
        r["text"] == "Decision:" and r["details"]["attempt"] == 0 for r in ambiguous
    )
    classes = lines(summary.run_dir / "classifications.jsonl")
    assert len(classes) == 3 and not any(r["is_classification"] for r in classes)
    kept = [r["instances"] for r in lines(summary.run_dir / "instances.jsonl")]
    assert (
        kept
        == [
            [
                {"input": "a calm sea", "output": "The sea lay still."},
                {"input": "", "output": "Gulls circled."},
            ]
        ]
        * 3
    )


def test_keep_truncated_false_drops_every_item_of_a_cut_off_answer(tmp_path):
    class CutOff(ScriptedBackend):
        async def complete(self, request):
            response = await super().complete(request)
            if request.prompt.startswith("The numbered list"):
                response.finish_reason = "length"
            return response

    def accepted_and_truncated(keep: str):
        cfg = make_cfg(tmp_path / keep, target=3, **{"bootstrap.max_requests": "3"})
        cfg.bootstrap.keep_truncated = keep == "true"
        run(cfg, ("bootstrap",), backend=CutOff())
        rejected = lines(cfg.run_dir / "rejected.jsonl")
        return len(lines(cfg.run_dir / "machine_instructions.jsonl")), sum(
            r["reason"] == "truncated" for r in rejected
        )

    kept, cut = accepted_and_truncated("true")
    assert kept == 3 and cut >= 1  # complete items kept, the last (maybe cut) one recorded
    kept, cut = accepted_and_truncated("false")
    assert kept == 0 and cut >= 6  # the reference behaviour: the whole answer dropped, on record


def test_record_similar_zero_records_no_neighbours(tmp_path):
    summary = run(
        make_cfg(tmp_path, target=4, **{"bootstrap.record_similar": "0"}),
        ("bootstrap",),
        backend=ScriptedBackend(),
    )
    records = lines(summary.run_dir / "machine_instructions.jsonl")
    assert len(records) == 4 and all(r["most_similar"] == [] for r in records)
    default = run(make_cfg(tmp_path / "d", target=4), ("bootstrap",), backend=ScriptedBackend())
    assert all(len(r["most_similar"]) == 10 for r in lines(default.run_dir / "machine_instructions.jsonl"))


def test_a_run_directory_refuses_settings_that_would_mix_two_runs(tmp_path):
    from self_instruct.errors import UserError

    run(make_cfg(tmp_path, target=4), ("bootstrap",), backend=ScriptedBackend())
    before = (tmp_path / "r" / "machine_instructions.jsonl").read_bytes()
    # Changing how the work is done is fine; changing what it produces is refused, before any write.
    run(make_cfg(tmp_path, target=6, **{"llm.concurrency": "3"}), ("bootstrap",), backend=ScriptedBackend())
    grown = (tmp_path / "r" / "machine_instructions.jsonl").read_bytes()
    with pytest.raises(UserError, match=r"setting 'seed' is 42 in this run directory and 7 now"):
        run(make_cfg(tmp_path, seed=7), backend=ScriptedBackend())
    with pytest.raises(UserError, match=r"setting 'bootstrap.temperature' is 0.7 .* and 0.2 now"):
        run(make_cfg(tmp_path, **{"bootstrap.temperature": "0.2"}), backend=ScriptedBackend())
    other_seeds = tmp_path / "other.jsonl"
    other_seeds.write_bytes(Path(SEEDS).read_bytes().replace(b"Suggest", b"Propose", 1))
    with pytest.raises(UserError, match=r"setting 'seed_file.sha256'"):
        run(make_cfg(tmp_path, seed_file=str(other_seeds)), ("classify",), backend=ScriptedBackend())

    class OtherModel(ScriptedBackend):
        model = "another-model"

    with pytest.raises(UserError, match=r"'backend.model' is 'scripted-model' .* 'another-model' now"):
        run(make_cfg(tmp_path), ("classify",), backend=OtherModel())
    assert (tmp_path / "r" / "machine_instructions.jsonl").read_bytes() == grown != before
    # --force goes on, and the session says what changed.
    summary = run(make_cfg(tmp_path, seed=7), ("classify",), backend=ScriptedBackend(), force=True)
    forced = summary.manifest["sessions"][-1]["forced"]
    assert forced == [{"setting": "seed", "was": 42, "now": 7}]
    assert summary.manifest["provenance"]["seed"] == 7


def test_progress_bar_counts_are_readable():
    from self_instruct.executor import human

    assert [human(n) for n in (0, 950, 20_100, 3_400_000)] == ["0", "950", "20.1k", "3.4M"]
