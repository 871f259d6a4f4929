"""Exports: every format reads back exactly what was written, and the card's counts equal the data."""

import json
import re

import pytest
from datasets import load_dataset, load_from_disk
from helpers import SEEDS, cli
from scripted import ScriptedBackend

from self_instruct.config import load_config
from self_instruct.export import ExportOptions, export, strip_label
from self_instruct.pipeline import run
from self_instruct.store import read_jsonl


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        None,
        {
            "output_dir": str(out),
            "run_name": "r1",
            "seed_file": str(SEEDS),
            "target": "15",
            "progress": "false",
        },
    )
    return run(cfg, backend=ScriptedBackend()).run_dir


def flat(run_dir):
    return [
        {k: r[k] for k in ("instruction", "input", "output")} for r in read_jsonl(run_dir / "dataset.jsonl")
    ]


def card_counts(path):
    text = (path / "README.md").read_text()
    return {m[0]: int(m[1]) for m in re.findall(r"^\| (\w+) \| (\d+) \|", text, re.M)}


def test_jsonl_round_trip_and_card(run_dir, tmp_path):
    counts = export([str(run_dir)], str(tmp_path / "x"), ExportOptions(format="jsonl"))
    rows = load_dataset("json", data_files=str(tmp_path / "x" / "train.jsonl"), split="train").to_list()
    assert rows == flat(run_dir)
    assert counts == {"train": len(rows)} == card_counts(tmp_path / "x")


def test_alpaca_is_a_json_list(run_dir, tmp_path):
    export([str(run_dir)], str(tmp_path / "a"), ExportOptions(format="alpaca"))
    assert json.loads((tmp_path / "a" / "train.json").read_text()) == flat(run_dir)


def test_openai_chat_messages(run_dir, tmp_path):
    export([str(run_dir)], str(tmp_path / "c"), ExportOptions(format="openai-chat", system="Be helpful."))
    lines = read_jsonl(tmp_path / "c" / "train.jsonl")
    for line, rec in zip(lines, flat(run_dir), strict=True):
        system, user, assistant = line["messages"]
        assert system == {"role": "system", "content": "Be helpful."}
        assert user["content"].startswith(rec["instruction"])
        assert (rec["input"] in user["content"]) and assistant["content"] == rec["output"]


def test_prompt_completion_uses_several_templates_and_can_strip_labels(run_dir, tmp_path):
    export([str(run_dir)], str(tmp_path / "p"), ExportOptions(format="prompt-completion", seed=3))
    lines = read_jsonl(tmp_path / "p" / "train.jsonl")
    recs = flat(run_dir)
    assert all(
        r["instruction"] in line["prompt"] and line["completion"].strip() == r["output"]
        for line, r in zip(lines, recs, strict=True)
    )
    shapes = {
        re.sub(r"\s+", " ", line["prompt"].replace(r["instruction"], "I").replace(r["input"], "X"))
        for line, r in zip(lines, recs, strict=True)
    }
    assert len(shapes) >= 3
    assert strip_label("Sentence: The cat sat.") == "The cat sat."
    assert strip_label("Question: a\nAnswer: b") == "Question: a\nAnswer: b"  # several fields: kept
    assert strip_label("no label here") == "no label here"


def test_hf_and_parquet_round_trip_with_split(run_dir, tmp_path):
    opts = ExportOptions(format="hf", test_size=0.3, seed=1)
    counts = export([str(run_dir)], str(tmp_path / "h"), opts)
    dd = load_from_disk(str(tmp_path / "h"))
    assert {k: len(v) for k, v in dd.items()} == counts == card_counts(tmp_path / "h")
    assert not {r["instruction"] for r in dd["train"]} & {r["instruction"] for r in dd["test"]}
    both = sorted(dd["train"].to_list() + dd["test"].to_list(), key=json.dumps)
    assert both == sorted(flat(run_dir), key=json.dumps)
    pq = load_dataset("parquet", data_files={s: str(tmp_path / "h" / f"{s}.parquet") for s in counts})
    assert {k: v.to_list() for k, v in pq.items()} == {k: v.to_list() for k, v in dd.items()}


def test_include_seeds_dedupe_and_cap(run_dir, tmp_path):
    n_seed = sum(len(t["instances"]) for t in read_jsonl(SEEDS))
    base = len(flat(run_dir))
    c = export([str(run_dir)], str(tmp_path / "s"), ExportOptions(format="jsonl", include_seeds=True))
    assert c["train"] == base + n_seed
    # The same run twice: exact duplicates are dropped unless asked to keep them.
    assert export([str(run_dir)] * 2, str(tmp_path / "d"), ExportOptions())["train"] == base
    assert export([str(run_dir)] * 2, str(tmp_path / "k"), ExportOptions(dedupe=False))["train"] == 2 * base
    capped = export([str(run_dir)], str(tmp_path / "m"), ExportOptions(max_per_instruction=1))["train"]
    assert capped == len({r["instruction"] for r in flat(run_dir)})


def test_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hi")
    cases = [
        (["export", str(run_dir), "--format", "csv", "--out", "o1"], "invalid choice"),
        (["export", str(tmp_path / "empty"), "--format", "jsonl", "--out", "o2"], "not a run directory"),
        (["export", str(tmp_path / "foreign"), "--format", "jsonl", "--out", "o3"], "not a run directory"),
        (["export", str(tmp_path / "nope"), "--format", "jsonl", "--out", "o4"], "does not exist"),
    ]
    for args, message in cases:
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("o", ".o"))]
    # An existing output is not replaced without --overwrite.
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    proc = cli("export", str(run_dir), "--format", "jsonl", "--out", "taken", cwd=tmp_path)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    proc = cli("export", str(run_dir), "--format", "jsonl", "--out", "taken", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0 and not (tmp_path / "taken" / "keep.txt").exists()
