"""Shared test helpers: run the CLI as a user would, read run directories."""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
SEEDS = ROOT / "seeds" / "seed_tasks.jsonl"


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "self-instruct"
    return [str(script)] if script.exists() else [sys.executable, "-m", "self_instruct"]


def sigint_default() -> None:
    """For ``preexec_fn`` of a child the test will send SIGINT: a CI job started in the background
    ignores SIGINT, and a child inherits that, so Ctrl-C would do nothing. The child starts with the
    default disposition, as from a terminal (Python then turns SIGINT into KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(extra: dict | None = None) -> dict:
    """The outer environment without OPENAI_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(extra or {})
    return env


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed console script (or the module) in ``cwd``, the way a user would."""
    return subprocess.run(
        cli_command() + list(args),
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_run_dir(run_dir: Path) -> dict:
    """Assert a finished run directory is consistent with itself; returns its manifest."""
    import json

    from self_instruct.store import read_jsonl

    def rows(name):
        return read_jsonl(run_dir / name)

    accepted = rows("machine_instructions.jsonl")
    by_text = {r["instruction"]: r["id"] for r in accepted}
    dataset = rows("dataset.jsonl")
    tasks = rows("tasks.jsonl")
    kept = {r["id"]: r["instances"] for r in rows("instances.jsonl")}
    assert all(r["instruction"] in by_text for r in dataset), "dataset row from no accepted instruction"
    for t in tasks:
        assert by_text[t["instruction"]] == t["id"]
        assert t["instances"] == kept[t["id"]]
    assert len(dataset) == sum(len(t["instances"]) for t in tasks)
    m = json.loads((run_dir / "manifest.json").read_text())
    c = m["counts"]
    assert c["machine_instructions"] == len(accepted)
    assert c["bootstrap_requests"] == len(rows("bootstrap_requests.jsonl"))
    assert c["classified"] == len(rows("classifications.jsonl"))
    assert c["instance_records"] == len(kept)
    assert c["instances_kept"] == sum(len(v) for v in kept.values())
    assert c["dataset_rows"] == len(dataset) and c["dataset_tasks"] == len(tasks)
    assert c["rejected"] == len(rows("rejected.jsonl"))
    assert c["failures_history"] == len(rows("failures.jsonl"))
    assert c["failures"] <= c["failures_history"]
    return m


def sigkill_at_random_requests(
    args: list[str],
    cwd: Path,
    usage: Path,
    rng,
    *,
    kills: int,
    most: int,
    tries: int,
    env: dict | None = None,
) -> int:
    """Start ``self-instruct ARGS`` again and again, SIGKILLing each after a random number (1 to
    ``most``) of new requests put on record in ``usage`` (so kills land in every stage, with requests
    in flight), until ``kills`` kills have landed or ``tries`` starts were made; a start that finishes
    first counts for nothing. Returns the kills that landed."""
    import time

    def sent() -> int:  # requests put on record as sent (not cache hits), by every session
        return usage.read_bytes().count(b'"event": "sent"') if usage.exists() else 0

    landed = 0
    for _ in range(tries):
        if landed >= kills:
            break
        stop_at = sent() + rng.randint(1, most)
        proc = subprocess.Popen(
            [*cli_command(), *args],
            cwd=cwd,
            env=cli_env(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None and sent() < stop_at:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        proc.wait()
    return landed
