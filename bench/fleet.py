"""Keeping a fleet busy: the sliding window against the round scheme it replaced, in the same run.

A loopback OpenAI-compatible server (tests/openai_server.py, the scripted model) runs in its own
process. Each request waits a log-normal time before it is answered: median ``--median`` seconds
for a request asking for 1,024 tokens, falling with the tokens asked for (a 3-token classify
answer takes a fifth of it), heavy-tailed (sigma ``--sigma``). Then ``generate --target N`` runs at
``--concurrency`` twice, each in its own process, cache off:

- ``window``: this tree (bootstrap.window, the default unless ``--window`` is given);
- ``rounds``: the code at ``--baseline-rev``, the last commit with bootstrap rounds (16 requests
  per round, its default), extracted with ``git archive``.

Per stage it prints the fleet utilisation (the sum of request latencies from usage.jsonl, divided
by the stage's wall time x concurrency) and the wall time against the ideal (the sum of latencies /
concurrency: what a fleet kept full all the time would take). Then the whole run's, and the ratio
of the two schemes' wall times.

    .venv/bin/python bench/fleet.py [--target 2000] [--concurrency 64] [--median 1.5] [--only window]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BASELINE_REV = "304e4e5"  # the last commit with bootstrap rounds
STAGES = ("bootstrap", "classify", "instances")


def serve(median: float, sigma: float, seed: int, conn) -> None:
    from openai_server import FakeOpenAIServer, Fault
    from scripted import answer

    rng = random.Random(seed)

    def responder(kind: str, body: dict) -> str:
        return answer(body["prompt"]) if kind == "completions" else answer(body["messages"][-1]["content"])

    def latency(n: int, body: dict) -> Fault:
        asked = min(body.get("max_tokens") or 1024, 1024)
        scale = median * (0.2 + 0.8 * asked / 1024)
        return Fault(delay=scale * math.exp(sigma * rng.gauss(0, 1)))

    with FakeOpenAIServer(responder) as server:
        server.set_fault_rule(latency)
        conn.send(server.base_url)
        conn.recv()  # block until told to stop


def baseline_tree(rev: str, into: Path) -> Path:
    """The package as it was at ``rev``, for PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "self_instruct"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def generate(code: Path, out: Path, name: str, base_url: str, args, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "self_instruct", "generate", "--base-url", base_url, "--api", "completions"]
    cmd += ["--seed-file", str(ROOT / "seeds" / "seed_tasks.jsonl"), "--output-dir", str(out)]
    cmd += ["--run-name", name, "--target", str(args.target), "--concurrency", str(args.concurrency)]
    cmd += ["--no-cache", "--no-progress", "--llm-structured", "off", *extra]
    env = {**os.environ, "PYTHONPATH": str(code)}  # and a working directory without a package in it
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: generate failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    run_dir = out / name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    usage = [json.loads(line) for line in (run_dir / "usage.jsonl").read_text().splitlines()]
    busy = {s: sum(u["seconds"] for u in usage if u["stage"] == s) for s in STAGES}
    session = manifest["sessions"][-1]
    return {
        "wall": wall,
        "stage_wall": {s: session["stage_seconds"].get(s, 0.0) for s in STAGES},
        "busy": busy,
        "requests": {s: sum(1 for u in usage if u["stage"] == s) for s in STAGES},
        "wasted": session.get("wasted_requests"),
        "accepted": manifest["counts"]["machine_instructions"],
    }


def report(name: str, r: dict, concurrency: int) -> None:
    print(f"{name}: {r['wall']:.1f} s wall, {r['accepted']} instructions, wasted requests: {r['wasted']}")
    print(
        f"  {'stage':<10} {'requests':>8} {'wall s':>8} {'ideal s':>8} {'wall/ideal':>10} {'utilisation':>11}"
    )
    for s in STAGES:
        ideal = r["busy"][s] / concurrency
        wall = r["stage_wall"][s]
        print(
            f"  {s:<10} {r['requests'][s]:>8} {wall:>8.1f} {ideal:>8.1f} {wall / ideal:>10.2f} "
            f"{100 * ideal / wall:>10.1f}%"
        )
    ideal = sum(r["busy"].values()) / concurrency
    print(f"  {'whole run':<10} {sum(r['requests'].values()):>8} {r['wall']:>8.1f} {ideal:>8.1f} ", end="")
    print(f"{r['wall'] / ideal:>10.2f} {100 * ideal / r['wall']:>10.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--median", type=float, default=1.5, help="median latency (s) of a 1,024-token request")
    ap.add_argument("--sigma", type=float, default=0.6, help="log-normal sigma (tail weight)")
    ap.add_argument("--window", type=int, default=0, help="bootstrap.window for this tree (0: default)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--only", choices=("window", "rounds"), help="run one scheme only")
    args = ap.parse_args()

    parent, child = mp.Pipe()
    proc = mp.Process(target=serve, args=(args.median, args.sigma, 0, child), daemon=True)
    proc.start()
    base_url = parent.recv()
    print(
        f"generate --target {args.target}, concurrency {args.concurrency}; latency log-normal, median "
        f"{args.median} s for 1,024 tokens asked, sigma {args.sigma}"
    )
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            extra = ["--bootstrap-window", str(args.window)] if args.window else []
            if args.only != "rounds":
                results["window"] = generate(ROOT, out, "window", base_url, args, extra)
                report("sliding window (this tree)", results["window"], args.concurrency)
            if args.only != "window":
                code = baseline_tree(args.baseline_rev, out / "baseline")
                results["rounds"] = generate(code, out, "rounds", base_url, args, [])
                report(f"rounds of 16 ({args.baseline_rev})", results["rounds"], args.concurrency)
    finally:
        parent.send("stop")
        proc.join(timeout=5)
    if len(results) == 2:
        ratio = results["rounds"]["wall"] / results["window"]["wall"]
        print(f"ratio rounds / window, whole-run wall time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
