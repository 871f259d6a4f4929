"""Batch plans: a grid of runs against the test server, killed and resumed, merged without near-duplicates."""

import itertools
import json
import signal
import subprocess
import threading

from helpers import SEEDS, cli, cli_command, cli_env
from openai_server import FakeOpenAIServer
from rouge_score import rouge_scorer
from scripted import respond as responder

from self_instruct.store import read_jsonl


def write_plan(path, server, name):
    path.write_text(
        f"""
name = "{name}"
[base]
target = 12
seed_file = "{SEEDS}"
progress = false
[base.llm]
base_url = "{server.base_url}"
api = "completions"
concurrency = 4
[matrix]
seed = [1, 2]
"bootstrap.temperature" = [0.7, 1.0]
"""
    )


def test_batch_grid_killed_resumed_and_merged(tmp_path):
    with FakeOpenAIServer(responder, latency=0.01) as server:
        write_plan(tmp_path / "whole.toml", server, "whole")
        proc = cli("batch", "whole.toml", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "merged:" in proc.stdout
        write_plan(tmp_path / "cut.toml", server, "cut")
        held, release = threading.Event(), threading.Event()

        def hold_the_second_run(n, body):
            # Only the second run's bootstrap samples at temperature 1.0 (runs go in plan order):
            # its first request waits here until the kill, so the batch is killed with one run
            # finished and the next begun, however fast the machine is.
            if body.get("temperature") == 1.0:
                held.set()
                release.wait(60)
            return None

        server.set_fault_rule(hold_the_second_run)
        p = subprocess.Popen(
            [*cli_command(), "batch", "cut.toml"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert held.wait(60), "the batch never reached its second run"
        p.send_signal(signal.SIGKILL)
        p.wait()
        release.set()
        server.set_fault_rule(None)
        assert len(list((tmp_path / "outputs" / "cut" / "runs").glob("*/dataset.jsonl"))) == 1
        assert not (tmp_path / "outputs" / "cut" / "summary.json").exists()
        proc = cli("batch", "cut.toml", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    whole, cut = tmp_path / "outputs" / "whole", tmp_path / "outputs" / "cut"
    for name in ("tasks.jsonl", "dataset.jsonl", "rejected.jsonl"):
        w, c = read_jsonl(whole / "merged" / name), read_jsonl(cut / "merged" / name)
        assert w == c, name
    summary = json.loads((cut / "summary.json").read_text())
    assert len(summary["runs"]) == 4 and all(r["accepted"] == 12 for r in summary["runs"])
    merged = [t["instruction"] for t in read_jsonl(cut / "merged" / "tasks.jsonl")]
    # Same seed, other temperature: the scripted model answers the same prompts alike, so the merge
    # drops the second run of each seed as duplicates of the first.
    assert summary["merged"]["dropped"] >= 12
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    worst = max(scorer.score(a, b)["rougeL"].fmeasure for a, b in itertools.combinations(merged, 2))
    assert worst <= 0.7
    assert (cut / "cache" / "cache.sqlite").exists()


def test_malformed_plans(tmp_path):
    cases = {
        "missing.toml": None,
        "bad.toml": "name = \n",
        "key.toml": "nmae = 'x'\n",
        "setting.toml": "[base]\ntarget = 3\ntemprature = 1\n",
        "matrix.toml": "[matrix]\nseed = 3\n",
        "reserved.toml": "[base]\nrun_name = 'x'\n",
        "type.toml": "[matrix]\ntarget = ['many']\n",
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        proc = cli("batch", name, cwd=tmp_path)
        assert proc.returncode == 2, (name, proc.stderr)
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1 and name in err and "Traceback" not in err, err
    assert not (tmp_path / "outputs").exists()


def test_merged_batch_exports_with_a_card_naming_every_run(tmp_path):
    with FakeOpenAIServer(responder) as server:
        write_plan(tmp_path / "g.toml", server, "g")
        assert cli("batch", "g.toml", cwd=tmp_path).returncode == 0
    merged = tmp_path / "outputs" / "g" / "merged"
    proc = cli("export", str(merged), "--format", "alpaca", "--out", "exp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "exp" / "train.json").read_text())
    assert len(rows) == len(read_jsonl(merged / "dataset.jsonl"))
    card = (tmp_path / "exp" / "README.md").read_text()
    for label in json.loads((merged / "manifest.json").read_text())["merged_from"]:
        assert f"### {label}" in card


def test_matrix_values_that_give_the_same_run_name_are_refused(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('name = "clash"\n[matrix]\n"llm.model" = ["org/model a", "org/model-a"]\n')
    proc = cli("batch", str(plan), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "both get the run directory name 'llm.model-org-model-a'" in proc.stderr
