"""Shared test helpers: run the CLI as a user would, read run directories."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
SEEDS = ROOT / "seeds" / "seed_tasks.jsonl"


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed console script (or the module) in ``cwd``; no OPENAI_* from the outer shell."""
    script = Path(sys.executable).parent / "self-instruct"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "self_instruct"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    full_env.update(env or {})
    return subprocess.run(
        cmd + list(args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
