"""Readers and a damaged run directory: export, view and analyze each name a torn last line or a
garbage line of tasks.jsonl (file and line, on a ``note:`` line and in what they write), keep every
other record, exit 0, and leave the run directory as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from helpers import SEEDS, cli
from scripted import ScriptedBackend

from self_instruct.analysis import analyze
from self_instruct.config import load_config
from self_instruct.errors import UserError
from self_instruct.pipeline import run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    values = {
        "output_dir": str(out),
        "run_name": "r1",
        "seed_file": str(SEEDS),
        "target": "15",
        "progress": "false",
    }
    return run(load_config(None, values), backend=ScriptedBackend()).run_dir


def damage(lines: list[str], how: str) -> tuple[str, int, list[str]]:
    """tasks.jsonl's text damaged ``how``, the number of the bad line, and the lines still readable."""
    if how == "torn":  # a kill in the middle of writing the last record
        return "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2], len(lines), lines[:-1]
    middle = len(lines) // 2
    return "".join(lines[:middle]) + "{not json at all\n" + "".join(lines[middle:]), middle + 1, lines


def tree_state(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def notes_of(stdout: str) -> list[str]:
    return [line.removeprefix("note: ") for line in stdout.splitlines() if line.startswith("note: ")]


def read_back(command: str, run: Path, work: Path, bad: int) -> tuple[str, set]:
    """Run ``command`` on the run directory and check that what it wrote names the bad line; its
    stdout, and what it read: (instruction, input, output) triples, or analyze's counts."""
    if command == "export":
        proc = cli("export", str(run), "--format", "jsonl", "--out", str(work / "out"), cwd=work)
        assert proc.returncode == 0, proc.stderr
        card = (work / "out" / "README.md").read_text()
        assert notes_of(proc.stdout) and all(f"- {note}" in card for note in notes_of(proc.stdout))
        rows = [json.loads(line) for line in (work / "out" / "train.jsonl").read_text().splitlines()]
        return proc.stdout, {(r["instruction"], r["input"], r["output"]) for r in rows}
    if command == "view":
        db = work / "runs.db"
        for state in ("built", "up to date"):  # an up-to-date database still reports the line
            proc = cli("view", str(run), "--no-serve", "--db", str(db), cwd=work)
            assert proc.returncode == 0, proc.stderr
            assert f"({state};" in proc.stdout
        with closing(sqlite3.connect(db)) as con:
            rows = con.execute("select instruction, input, output from instances").fetchall()
            assert con.execute("select file, line from unread").fetchall() == [("tasks.jsonl", bad)]
        home = json.loads((work / "runs.metadata.json").read_text())["description_html"]
        assert "1 line(s) of the run files could not be read" in home
        return proc.stdout, set(rows)
    proc = cli("analyze", str(run), "--out", str(work / "report"), "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((work / "report" / "stats.json").read_text())
    assert stats["inputs"][0]["unread"] == notes_of(proc.stdout)
    report = (work / "report" / "report.md").read_text()
    assert notes_of(proc.stdout) and all(note in report for note in notes_of(proc.stdout))
    d = stats["inputs"][0]["dataset"]
    return proc.stdout, {("instructions", d["instructions"]), ("instances", d["instances"])}


@pytest.mark.parametrize("how", ["torn", "garbage"])
@pytest.mark.parametrize("command", ["export", "view", "analyze"])
def test_a_damaged_line_is_named_and_the_rest_is_read(run_dir, tmp_path, command, how):
    run = shutil.copytree(run_dir, tmp_path / "run")
    lines = (run / "tasks.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    text, bad, kept = damage(lines, how)
    (run / "tasks.jsonl").write_text(text, encoding="utf-8")
    before = tree_state(run)

    stdout, held = read_back(command, run, tmp_path, bad)

    notes = notes_of(stdout)
    assert len(notes) == 1, stdout
    assert f"tasks.jsonl:{bad}: " in notes[0] and notes[0].endswith("; the line was not read")
    assert ("torn last line" if how == "torn" else "unreadable line") in notes[0]
    tasks = [json.loads(line) for line in kept]
    if command == "analyze":
        expected = {("instructions", len(tasks)), ("instances", sum(len(t["instances"]) for t in tasks))}
    else:
        expected = {(t["instruction"], i["input"], i["output"]) for t in tasks for i in t["instances"]}
    assert held == expected
    assert tree_state(run) == before  # readers only read


def test_a_plain_jsonl_dataset_with_bad_lines_is_analysed(tmp_path):
    rows = [
        {"instruction": "Name a color.", "input": "", "output": "Blue"},
        {"instruction": "Count to three.", "input": "", "output": "1 2 3"},
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    ]
    good = [json.dumps(r).encode() + b"\n" for r in rows]
    path = tmp_path / "data.jsonl"
    # Lines: a record, a JSON list, a record, a blank line, no UTF-8, a record, a torn record.
    path.write_bytes(good[0] + b"[1, 2]\n" + good[1] + b"\n" + b"\xff\xfe\n" + good[2] + b'{"instr')
    stats = analyze([str(path)], str(tmp_path / "out"), progress=False)
    s = stats["inputs"][0]
    assert s["dataset"]["instructions"] == 3 and s["dataset"]["instances"] == 3
    assert [u.split(": ")[0] for u in s["unread"]] == [f"{path}:2", f"{path}:5", f"{path}:7"]
    assert "not a JSON object" in s["unread"][0] and "unreadable line" in s["unread"][1]
    assert "torn last line" in s["unread"][2]
    assert all(u in s["notes"] for u in s["unread"])


def test_a_record_that_is_no_task_is_still_named_by_its_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('garbage first\n\n{"instruction": "Name a color."}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"data\.jsonl:3: expected 'instances' \(seed schema\) or 'output'"):
        analyze([str(path)], str(tmp_path / "out"), progress=False)
    path.write_text("garbage only\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"no rows to analyse \(1 unread lines; the first: .*data\.jsonl:1: "):
        analyze([str(path)], str(tmp_path / "out"), progress=False)
