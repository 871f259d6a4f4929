"""llm.max_cost and llm.max_tokens_total: a run stops before a request could take it past its budget,
having spent no more than the budget, says which setting to raise, and resumes with a larger one to
the files of a run without a budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted import ScriptedBackend
from test_golden import DATA_FILES

from self_instruct.config import load_config
from self_instruct.errors import RunIncomplete, UserError
from self_instruct.manifest import usage_counts
from self_instruct.pipeline import run
from self_instruct.store import RunDir

SEEDS = str(Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl")


def _cfg(tmp_path: Path, name: str, **extra: str):
    over = {
        "output_dir": str(tmp_path),
        "run_name": name,
        "seed_file": SEEDS,
        "target": "30",
        "progress": "false",
        "llm.structured": "off",
        "llm.concurrency": "4",
        "llm.price_prompt": "1.0",  # USD per million tokens: the scripted model has no list price
        "llm.price_completion": "2.0",
        **extra,
    }
    return load_config(None, over)


def _spent(run_dir: Path) -> tuple[int, float]:
    totals = usage_counts(RunDir(run_dir).usage.read())
    tokens = sum(c["prompt_tokens"] + c["completion_tokens"] for c in totals.values())
    return tokens, sum(c["cost_usd"] for c in totals.values())


def _files(run_dir: Path) -> dict[str, bytes]:
    return {n: (run_dir / n).read_bytes() for n in DATA_FILES if (run_dir / n).exists()}


@pytest.mark.parametrize(("setting", "share"), [("llm.max_tokens_total", 0.4), ("llm.max_cost", 0.5)])
def test_a_run_stops_within_its_budget_and_a_larger_one_resumes_it(tmp_path, setting, share):
    run(_cfg(tmp_path, "whole"), backend=ScriptedBackend(jitter=0.002))
    tokens, cost = _spent(tmp_path / "whole")
    limit = str(int(tokens * share)) if setting == "llm.max_tokens_total" else f"{cost * share:.6f}"
    with pytest.raises(RunIncomplete, match=f"the budget {setting} = .* is reached") as stopped:
        run(_cfg(tmp_path, "capped", **{setting: limit}), backend=ScriptedBackend(jitter=0.002))
    assert "raise it and run the same command again to resume" in str(stopped.value)
    spent_tokens, spent_cost = _spent(tmp_path / "capped")
    assert spent_tokens <= tokens and spent_cost <= cost  # it stopped early ...
    if setting == "llm.max_tokens_total":  # ... and within the budget, what was in flight included
        assert spent_tokens <= int(limit)
    else:
        assert spent_cost <= float(limit)
    manifest = RunDir(tmp_path / "capped").read_manifest()
    assert manifest["sessions"][-1]["status"] == "stopped"
    # The same command again goes on only while a request's worst case still fits (what the first
    # session had in flight may have spent less than it held back), and stays within the budget.
    with pytest.raises(RunIncomplete):
        run(_cfg(tmp_path, "capped", **{setting: limit}), backend=ScriptedBackend())
    again_tokens, again_cost = _spent(tmp_path / "capped")
    assert again_tokens <= int(limit) if setting == "llm.max_tokens_total" else again_cost <= float(limit)
    larger = str(int(tokens * 10)) if setting == "llm.max_tokens_total" else f"{cost * 10:.6f}"
    summary = run(_cfg(tmp_path, "capped", **{setting: larger}), backend=ScriptedBackend(jitter=0.002))
    assert not summary.incomplete
    assert _files(tmp_path / "capped") == _files(tmp_path / "whole")


def test_a_cost_budget_needs_a_known_price(tmp_path):
    cfg = _cfg(
        tmp_path, "unpriced", **{"llm.max_cost": "1", "llm.price_prompt": "-1", "llm.price_completion": "-1"}
    )
    with pytest.raises(UserError, match=r"llm\.price_prompt and llm\.price_completion"):
        run(cfg, backend=ScriptedBackend())
    assert not (tmp_path / "unpriced").exists()
