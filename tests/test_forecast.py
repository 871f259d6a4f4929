"""The forecast: after the first 30 answers of a stage, one line projecting what reaching the target
takes, kept in the manifest beside what it actually took."""

from __future__ import annotations

from pathlib import Path

from scripted import ScriptedBackend

from self_instruct.config import load_config
from self_instruct.forecast import Forecast
from self_instruct.pipeline import run
from self_instruct.store import RunDir

SEEDS = str(Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl")


def test_a_run_prints_each_stages_forecast_and_records_it_beside_the_actuals(tmp_path, capsys):
    over = {
        "output_dir": str(tmp_path),
        "run_name": "r",
        "seed_file": SEEDS,
        "target": "150",  # bootstrap takes more than 30 requests
        "progress": "true",
        "llm.structured": "off",
        "llm.price_prompt": "1",
        "llm.price_completion": "2",
    }
    run(load_config(None, over), backend=ScriptedBackend())
    err = capsys.readouterr().err
    for stage in ("bootstrap", "classify", "instances"):
        assert f"forecast {stage}: " in err, err[-2000:]
    line = next(x for x in err.splitlines() if "forecast classify:" in x)
    assert " requests, " in line and " tokens, $" in line
    session = RunDir(tmp_path / "r").read_manifest()["sessions"][-1]
    forecasts = session["forecasts"]
    assert set(forecasts) == {"bootstrap", "classify", "instances"}
    # Classification answers one task per request here, so its forecast is exact.
    c = forecasts["classify"]
    assert c["forecast"]["after_requests"] == 30 and c["forecast"]["yield_per_request"] == 1
    assert c["forecast"]["after_requests"] + c["forecast"]["requests"][1] == c["actual"]["requests"] == 150
    b = forecasts["bootstrap"]["forecast"]
    assert b["requests"][0] <= b["requests"][1] <= b["requests"][2]
    assert b["tokens"][1] > 0 and b["cost_usd"][1] > 0


def test_no_forecast_without_progress_and_none_before_30_answers():
    stats = {"prompt_tokens": 0, "completion_tokens": 0}
    f = Forecast("classify", 0, lambda: stats)
    assert all(f.applied(0, 100) is None for _ in range(40))  # nothing done: no yield to project
    g = Forecast("classify", 0, lambda: stats)
    assert all(g.applied(k, 100) is None for k in range(1, 30))
    line = g.applied(30, 100)
    assert line is not None and line.startswith("forecast classify: 70 to go at 1 per request: 70 (70 to 70)")
