"""The executor's properties, checked once for every step that asks the model: the files depend on
the answers, never on the concurrency or the order answers arrive in; and a crash between any two
writes resumes to the files of an uninterrupted run, with nothing lost and nothing twice."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from test_golden import DATA_FILES, FaultyBackend

from self_instruct import store
from self_instruct.config import load_config
from self_instruct.executor import ENDINGS, ending
from self_instruct.llm.base import EndpointDown, FatalError
from self_instruct.pipeline import run
from self_instruct.store import RunDir

SEEDS = str(Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl")
BEFORE = {
    "bootstrap": (),
    "classify": ("bootstrap",),
    "instances": ("bootstrap", "classify"),
    "judge": ("bootstrap", "classify", "instances"),
}


def _cfg(out: Path, concurrency: int):
    over = {
        "output_dir": str(out),
        "run_name": "r",
        "seed_file": SEEDS,
        "target": 24,
        "seed": 5,
        "progress": False,
        "llm.structured": "off",
        "llm.concurrency": str(concurrency),
        "classify.method": "greedy",
        "bootstrap.window": "6",
        "quality.judge": "on",  # the judge step runs only when asked for alone here
    }
    return load_config(None, over)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {n: (run_dir / n).read_bytes() for n in DATA_FILES if (run_dir / n).exists()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """For each step, a run directory holding what the stages before it wrote."""
    out = {}
    for step, before in BEFORE.items():
        root = tmp_path_factory.mktemp(f"before-{step}")
        if before:
            run(_cfg(root, 1), before, backend=FaultyBackend("completions", healthy=True, jitter=0))
        out[step] = root
    return out


def _run_step(prepared: Path, dest: Path, step: str, concurrency: int, jitter: float) -> Path:
    shutil.copytree(prepared, dest)
    run(_cfg(dest, concurrency), (step,), backend=FaultyBackend("completions", healthy=True, jitter=jitter))
    return dest / "r"


@pytest.mark.parametrize("step", list(BEFORE))
def test_a_step_writes_the_same_files_at_any_concurrency_and_arrival_order(tmp_path, prepared, step):
    in_order = _files(_run_step(prepared[step], tmp_path / "c1", step, 1, 0.0))
    shuffled = _files(_run_step(prepared[step], tmp_path / "c8", step, 8, 0.003))
    assert in_order == shuffled
    output = {
        "bootstrap": "machine_instructions",
        "classify": "classifications",
        "instances": "instances",
        "judge": "judgments",
    }
    assert in_order[output[step] + ".jsonl"].count(b"\n") >= 20


class Crash(BaseException):
    """A kill, as the writer meets it: what follows is never written."""


@pytest.mark.parametrize("step", list(BEFORE))
def test_a_crash_between_any_two_writes_resumes_to_the_uninterrupted_files(
    tmp_path, prepared, step, monkeypatch
):
    append = store.JsonlStore.append
    writes = [0]

    def counting(self, records, *args, **kwargs):
        writes[0] += threading.current_thread().name.endswith("-writer") and bool(records)
        return append(self, records, *args, **kwargs)

    monkeypatch.setattr(store.JsonlStore, "append", counting)
    clean = _files(_run_step(prepared[step], tmp_path / "clean", step, 4, 0.0))
    monkeypatch.setattr(store.JsonlStore, "append", append)
    crashed_at = []
    # The k-th append by the step's writer never happens (how the writer groups answers into
    # appends depends on timing, so a later k may find fewer appends and not crash at all).
    for k in range(1, min(writes[0], 24) + 1):
        count = [0]

        def crashing(self, records, *args, count=count, k=k, **kwargs):
            if threading.current_thread().name.endswith("-writer") and records:
                count[0] += 1
                if count[0] == k:
                    raise Crash(f"killed before append {k} to {self.path.name}")
            return append(self, records, *args, **kwargs)

        dest = tmp_path / f"crash-{k}"
        monkeypatch.setattr(store.JsonlStore, "append", crashing)
        try:
            _run_step(prepared[step], dest, step, 4, 0.0)
        except Crash:
            crashed_at.append(k)
        finally:
            monkeypatch.setattr(store.JsonlStore, "append", append)
        manifest = RunDir(dest / "r").read_manifest()
        if k in crashed_at:
            assert manifest["sessions"][-1]["status"] == "crashed"
        run(_cfg(dest, 4), (step,), backend=FaultyBackend("completions", healthy=True, jitter=0))
        assert _files(dest / "r") == clean, f"crash before append {k}"
    assert crashed_at and crashed_at[0] == 1, crashed_at


def test_each_ending_has_one_meaning_whatever_the_class_order():
    files = RunDir(Path("/nonexistent"))
    # EndpointDown is a FatalError, yet it ends the run as resumable (exit 3), not as bad input.
    assert ending(EndpointDown("endpoint down"), files)[0] == "stopped"
    assert ending(FatalError("400 bad request"), files)[0] == "failed"
    assert ending(OSError(28, "No space left on device"), files)[0] == "stopped"
    assert ending(OSError(13, "Permission denied"), files)[0] == "failed"
    assert ending(KeyboardInterrupt(), files) == ("interrupted", None)
    assert ending(ValueError("a bug"), files) == ("crashed", None)
    assert EndpointDown in ENDINGS and FatalError in ENDINGS
