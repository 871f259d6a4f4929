"""How much of what a real model writes survives parsing, per backend x API x structured mode.

The embedded model (SmolLM2-135M) answers in process (llama.cpp) and through llama-cpp-python's
OpenAI-compatible server on 127.0.0.1, in the completions and chat APIs, with structured outputs off
and on. Every mode gets the same work:
- bootstrap: ``--requests`` instruction-generation requests (new instructions kept per request);
- classify + instances on the same ``--tasks`` seed instructions (half of them classification tasks
  in the seed labels): the share of classification answers that parsed as yes or no, instances per
  task, the share of tasks with at least one instance;
and the rejections per reason. The cache is off, so every number is a real answer.

    .venv/bin/python bench/parse_yield.py [--tasks 16] [--requests 3] [--no-server]

Needs llama-cpp-python's server extra for the server rows (installed by ``make`` with the dev extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from llama_server import llama_server, server_available  # noqa: E402

from self_instruct.config import load_config  # noqa: E402
from self_instruct.llm.local_backend import LocalBackend  # noqa: E402
from self_instruct.llm.openai_backend import OpenAIBackend  # noqa: E402
from self_instruct.pipeline import run  # noqa: E402
from self_instruct.store import RunDir  # noqa: E402
from self_instruct.tasks import load_tasks  # noqa: E402

SEEDS = ROOT / "seeds" / "seed_tasks.jsonl"


def pick_tasks(n: int) -> list[str]:
    seeds = load_tasks(SEEDS)
    yes = [t.instruction for t in seeds if t.is_classification]
    no = [t.instruction for t in seeds if not t.is_classification]
    return yes[: n // 2] + no[: n - n // 2]


def config(out: Path, name: str, api: str, structured: str, **more):
    base = {
        "output_dir": str(out),
        "run_name": name,
        "seed_file": str(SEEDS),
        "progress": False,
        "llm.api": api,
        "llm.structured": structured,
        "llm.cache": False,
        "classify.method": "greedy",  # the answers themselves are what is measured here
        **more,
    }
    return load_config(None, base)


def measure(make_backend, api: str, structured: str, tasks: list[str], requests: int, out: Path) -> dict:
    label = f"{api}-{structured}"
    t0 = time.perf_counter()
    # Bootstrap alone: a fixed number of requests, nothing else.
    boot = config(out, f"{label}-boot", api, structured, target=1000, **{"bootstrap.max_requests": requests})
    summary = run(boot, ("bootstrap",), backend=make_backend(api))
    resolved = summary.manifest.get("structured") or {}
    bfiles = RunDir(boot.run_dir)
    log = bfiles.bootstrap_log.read()
    # Classify and instances on the same fixed tasks in every mode.
    cfg = config(out, label, api, structured)
    files = RunDir(cfg.run_dir)
    files.root.mkdir(parents=True)
    files.instructions.append(
        [{"id": f"task_{k}", "instruction": t, "request": 0} for k, t in enumerate(tasks)]
    )
    run(cfg, ("classify", "instances", "dataset"), backend=make_backend(api))
    classes = files.classifications.read()
    inst = files.instances.read()
    rejected = bfiles.rejected.read() + files.rejected.read()
    reasons = Counter(f"{r['stage'][:4]}:{r['reason']}" for r in rejected)
    unusable = sum(1 for r in files.rejected.read() if r["stage"] == "classify")
    return {
        "api": api,
        "structured": bool(resolved.get("on")),
        "asked": structured,
        "kept_per_request": sum(r["accepted"] for r in log) / max(len(log), 1),
        "classify_parsed": len(classes) / max(len(classes) + unusable, 1),
        "classified_yes": sum(1 for r in classes if r["is_classification"]),
        "instances_per_task": sum(len(r["instances"]) for r in inst) / max(len(inst), 1),
        "tasks_with_instance": sum(1 for r in inst if r["instances"]) / max(len(inst), 1),
        "rejects": dict(reasons.most_common()),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| backend | API | structured | kept / bootstrap request | classify answers parsed "
        "| instances / task | tasks with >= 1 instance | time |"
    )
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        mode = "on" if r["structured"] else ("off" if r["asked"] == "off" else "off (server ignores it)")
        lines.append(
            f"| {r['backend']} | {r['api']} | {mode} | {r['kept_per_request']:.2f} "
            f"| {r['classify_parsed']:.0%} | {r['instances_per_task']:.2f} | {r['tasks_with_instance']:.0%} "
            f"| {r['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--no-server", action="store_true", help="only the in-process rows")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    tasks = pick_tasks(args.tasks)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for api in ("completions", "chat"):
            for structured in ("off", "on"):
                r = measure(
                    lambda a: LocalBackend(api=a), api, structured, tasks, args.requests, out / "local"
                )
                rows.append({"backend": "in process", **r})
                print(json.dumps(rows[-1]), flush=True)
        if not args.no_server and server_available():
            with llama_server() as url:
                for api in ("completions", "chat"):
                    for structured in ("off", "auto"):

                        def backend(a, url=url):
                            return OpenAIBackend("smollm2", base_urls=[url], api=a, max_concurrency=1)

                        r = measure(backend, api, structured, tasks, args.requests, out / "server")
                        rows.append({"backend": "llama.cpp server", **r})
                        print(json.dumps(rows[-1]), flush=True)
        elif not args.no_server:
            print("(server rows skipped: llama-cpp-python's server extra is not installed)")
    print()
    n_yes = len(tasks) // 2
    print(f"{len(tasks)} tasks ({n_yes} classification in the seed labels), ", end="")
    print(f"{args.requests} bootstrap requests per mode")
    print(table(rows))
    print()
    print("rejections per reason (bootstrap: boot:, classify: clas:, instances: inst:, dataset: data:):")
    for r in rows:
        mode = "structured" if r["structured"] else "text"
        print(f"  {r['backend']}, {r['api']}, {mode}: {r['rejects']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
