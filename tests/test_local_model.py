"""The real embedded model (SmolLM2-135M-Instruct in llama.cpp), end to end. Slow: run with -m slow."""

import pytest
from helpers import SEEDS, check_run_dir, cli

from self_instruct.store import read_jsonl

pytestmark = pytest.mark.slow


def test_generate_with_the_embedded_model(tmp_path):
    proc = cli(
        "generate",
        *("--seed-file", str(SEEDS), "--target", "12", "--run-name", "local", "--no-progress"),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "outputs" / "local"
    m = check_run_dir(run_dir)
    assert m["backend"]["name"] == "local"
    assert m["backend"]["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert m["backend"]["api"] == "completions"
    assert m["counts"]["machine_instructions"] == 12
    assert m["counts"]["classified"] == 12 and m["counts"]["instance_records"] == 12
    assert m["requests"]["bootstrap"]["completion_tokens"] > 0
    assert m["sessions"][-1]["status"] == "finished"
    # The local backend classifies by the yes-no margin, calibrated on the seeds' labels: greedy says
    # "yes" to 4 of 175 seeds, so without it the output-first half of the method would never run.
    fit = m["classify"]["calibration"]
    assert m["classify"]["method"] == "calibrated" and fit["seeds"] == 175
    assert fit["cv_balanced_accuracy"] >= 0.70 and fit["auc"] >= 0.8
    assert 0.07 <= fit["calibrated_yes_rate"] <= 0.27  # the seeds' own share (17%) within 10 points
    methods = [r["method"] for r in read_jsonl(run_dir / "instances.jsonl")]
    assert "output_first" in methods


@pytest.mark.parametrize("structured", ["on", "off"])
def test_chat_api_with_the_embedded_model(tmp_path, structured):
    proc = cli(
        "generate",
        *("--seed-file", str(SEEDS), "--target", "2", "--run-name", "chat", "--api", "chat", "--no-progress"),
        *("--bootstrap-max-requests", "6", "--llm-structured", structured),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    m = check_run_dir(tmp_path / "outputs" / "chat")
    assert m["backend"]["api"] == "chat"
    assert m["structured"]["on"] is (structured == "on")
    assert m["counts"]["failures"] == 0  # every request got an answer from the model
    assert m["counts"]["machine_instructions"] >= 1
    assert m["requests"]["instances"]["completion_tokens"] > 0


def test_a_cancelled_local_request_does_not_cancel_the_next_one():
    import asyncio

    from self_instruct.llm.base import Request
    from self_instruct.llm.local_backend import LocalBackend

    backend = LocalBackend()

    async def go():
        long = Request(prompt="1, 2, 3, 4, 5, 6, 7, 8,", max_tokens=2000)  # it counts on and on
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(backend.complete(long), 0.3)
        ok = await backend.complete(Request(prompt="Say hello.", max_tokens=8))
        await backend.close()
        return ok

    response = asyncio.run(go())
    assert response.completion_tokens > 0 and response.text
