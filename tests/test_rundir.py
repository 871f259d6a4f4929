"""One definition of a run directory (store.RunDir): export, view and analyze accept the same
directories and refuse the same ones with the same one-line error, and report the same totals."""

import json
import shutil
import sqlite3
from contextlib import closing

import pytest
from helpers import SEEDS, cli
from scripted import ScriptedBackend
from test_cli import assert_one_line_error

from self_instruct.config import load_config
from self_instruct.pipeline import run
from self_instruct.store import RunDir, request_totals


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A real run, a directory holding only its dataset.jsonl, an empty one and an unrelated one."""
    out = tmp_path_factory.mktemp("rundirs")
    values = {"output_dir": str(out), "run_name": "real", "seed_file": str(SEEDS), "target": "15"}
    real = run(load_config(None, {**values, "progress": "false"}), backend=ScriptedBackend()).run_dir
    (out / "only_dataset").mkdir()
    shutil.copy(real / "dataset.jsonl", out / "only_dataset" / "dataset.jsonl")
    (out / "empty").mkdir()
    (out / "unrelated").mkdir()
    (out / "unrelated" / "notes.txt").write_text("not a run\n")
    return {
        "real": real,
        "only_dataset": out / "only_dataset",
        "empty": out / "empty",
        "unrelated": out / "unrelated",
    }


def commands(d, work):
    return {
        "export": ["export", str(d), "--format", "jsonl", "--out", str(work / "export")],
        "view": ["view", str(d), "--no-serve", "--db", str(work / "runs.db")],
        "analyze": ["analyze", str(d), "--out", str(work / "report"), "--no-progress"],
    }


@pytest.mark.parametrize(
    "name, is_run", [("real", True), ("only_dataset", True), ("empty", False), ("unrelated", False)]
)
def test_every_reader_accepts_and_refuses_the_same_directories(dirs, tmp_path, name, is_run):
    d = dirs[name]
    assert RunDir.is_run(d) is is_run
    procs = {command: cli(*args, cwd=tmp_path) for command, args in commands(d, tmp_path).items()}
    if is_run:
        for command, proc in procs.items():
            assert proc.returncode == 0, f"{command}: {proc.stderr}"
        rows = [json.loads(line) for line in (tmp_path / "export" / "train.jsonl").read_text().splitlines()]
        dataset = [json.loads(line) for line in (d / "dataset.jsonl").read_text().splitlines()]
        assert rows == dataset  # the same rows, whichever of the run's files they were read from
        with closing(sqlite3.connect(tmp_path / "runs.db")) as con:
            assert con.execute("select count(*) from instances").fetchone()[0] == len(dataset)
        stats = json.loads((tmp_path / "report" / "stats.json").read_text())
        assert stats["inputs"][0]["dataset"]["instances"] == len(dataset)
        return
    for proc in procs.values():
        assert_one_line_error(proc, f"{d}: not a run directory")
    assert len({proc.stderr for proc in procs.values()}) == 1  # one message, whichever command
    assert not any((tmp_path / out).exists() for out in ("export", "runs.db", "report"))


def test_tokens_and_cost_are_one_sum_everywhere(dirs, tmp_path):
    real = dirs["real"]
    manifest = json.loads((real / "manifest.json").read_text())
    totals = RunDir(real).totals()
    stages = manifest["requests"].values()
    assert totals.tokens == sum(s.get("prompt_tokens", 0) + s.get("completion_tokens", 0) for s in stages)
    assert totals.tokens > 0
    for args in commands(real, tmp_path).values():
        assert cli(*args, cwd=tmp_path).returncode == 0
    with closing(sqlite3.connect(tmp_path / "runs.db")) as con:
        assert con.execute("select tokens from runs").fetchone()[0] == totals.tokens
    stats = json.loads((tmp_path / "report" / "stats.json").read_text())
    assert stats["inputs"][0]["run"]["requests"]["tokens"] == totals.tokens
    # A hand-written or older manifest: missing keys and stages that are no tables count as zero.
    assert request_totals({"a": {"prompt_tokens": 2}, "b": "junk", "c": {"cost_usd": 0.5}}).tokens == 2
    assert request_totals(None).cost_usd == 0.0
