"""A fault-injected run's files stay byte-identical to a recorded fixture (tests/data/golden.json).

The scripted model is wrapped so that every stage meets each of its faults: failed requests (first
session only), answers cut off at max_tokens, ambiguous classifications, instance answers that hold
nothing. The first session ends incomplete; the second, on a healthy model, finishes the run. Both
APIs, at concurrency 1 and 4 with answers arriving out of order. A change to how the stages run
(the executor, the writers, recovery) must leave every data file as it was; a change that means to
alter the output records the new fixture on purpose:

    SELF_INSTRUCT_RECORD_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from scripted import ScriptedBackend

from self_instruct.config import load_config
from self_instruct.llm.base import Request, Response, TransientError
from self_instruct.pipeline import run
from self_instruct.prompts import CHAT_CLASSIFY_QUESTION, CHAT_INPUT_FIRST_REQUEST, CHAT_OUTPUT_FIRST_REQUEST
from self_instruct.store import RUN_FILE_NAMES

SEEDS = str(Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl")
FIXTURE = Path(__file__).parent / "data" / "golden.json"
DATA_FILES = tuple(name for name in RUN_FILE_NAMES if name != "manifest.json")  # usage.jsonl: timings


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class FaultyBackend(ScriptedBackend):
    """The scripted model with faults chosen by a hash of the prompt (so by nothing else)."""

    def __init__(self, api: str, *, healthy: bool, jitter: float) -> None:
        super().__init__(api, jitter=jitter)
        self.healthy = healthy

    async def complete(self, request: Request) -> Response:
        h = _h(request.prompt)
        if not self.healthy and h % 7 == 0:
            self.calls.append(request)
            raise TransientError("503 server error: scripted fault")
        response = await super().complete(request)
        tail = request.prompt.rstrip()
        if tail.endswith(("Classification:", CHAT_CLASSIFY_QUESTION)):
            if request.seed == 5 and h % 4 == 1:  # the first attempt only (later ones have their own seed)
                response.text = " Maybe, it depends"
        elif tail.endswith(
            ("Example 1", "Class label:", CHAT_INPUT_FIRST_REQUEST, CHAT_OUTPUT_FIRST_REQUEST)
        ):
            if h % 5 == 2:
                response.text = "I cannot think of an example."
        elif h % 6 == 3:  # bootstrap: cut off at max_tokens
            response.text = response.text[: len(response.text) // 2]
            response.finish_reason = "length"
        return response


def _digest(run_dir: Path) -> dict[str, str]:
    out = {}
    for name in DATA_FILES:
        path = run_dir / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"
    return out


def _run_twice(tmp_path: Path, api: str, concurrency: int) -> dict[str, dict[str, str]]:
    over = {
        "output_dir": str(tmp_path),
        "run_name": f"{api}-{concurrency}",
        "seed_file": SEEDS,
        "target": 30,
        "seed": 5,
        "progress": False,
        "llm.structured": "off",
        "llm.api": api,
        "llm.concurrency": str(concurrency),
        "llm.max_retries": "0",
        "llm.breaker_window": "1000",
        "classify.method": "greedy",
        "bootstrap.window": "6",
    }
    cfg = load_config(None, over)
    jitter = 0.004 if concurrency > 1 else 0.0
    first = run(cfg, backend=FaultyBackend(api, healthy=False, jitter=jitter))
    assert first.incomplete, "the first session meets failed requests"
    after_first = _digest(first.run_dir)
    second = run(cfg, backend=FaultyBackend(api, healthy=True, jitter=jitter))
    assert not second.incomplete, second.incomplete
    return {"first_session": after_first, "resumed": _digest(second.run_dir)}


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_fault_injected_run_matches_the_recorded_files(tmp_path, api):
    results = {c: _run_twice(tmp_path, api, c) for c in (1, 4)}
    assert results[1] == results[4], "the files depend on the concurrency"
    got = results[1]
    rejected = (tmp_path / f"{api}-1" / "rejected.jsonl").read_text().splitlines()
    # One shape for every line, whichever stage wrote it.
    assert {tuple(json.loads(line)) for line in rejected} == {("stage", "key", "reason", "text", "details")}
    reasons = {(json.loads(line)["stage"], json.loads(line)["reason"]) for line in rejected}
    # Every stage rejected something, with the faults meant for it.
    assert {
        ("bootstrap", "truncated"),
        ("classify", "ambiguous_answer"),
        ("dataset", "no_instances"),
    } <= reasons
    assert {stage for stage, _ in reasons} == {"bootstrap", "classify", "instances", "dataset"}
    if os.environ.get("SELF_INSTRUCT_RECORD_GOLDEN"):
        recorded = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
        recorded[api] = got
        FIXTURE.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(FIXTURE.read_text())[api]
