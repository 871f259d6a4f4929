"""Request engine throughput vs a bare asyncio client, and where a generate run spends its time.

A loopback OpenAI-compatible server (tests/openai_server.py) runs in its own process with a fixed
latency (50 ms). In the same run this script measures:
1. requests/s of the bare baseline (openai.AsyncOpenAI, asyncio.gather under a semaphore) and of
   our engine (cache off, retries on, pacing on) at the same concurrency, alternating, five runs
   each; the ratio of the medians;
2. a ``generate`` of 2,000 instructions against that server: wall time, and the share of it spent
   waiting for the server (inside engine calls) versus our own work (parsing, novelty, writes).

    .venv/bin/python bench/engine.py [--requests 2000] [--concurrency 64] [--target 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402

from self_instruct.config import load_config  # noqa: E402
from self_instruct.llm.base import Request  # noqa: E402
from self_instruct.llm.engine import Engine  # noqa: E402
from self_instruct.llm.openai_backend import OpenAIBackend  # noqa: E402
from self_instruct.pipeline import run  # noqa: E402


def serve(latency: float, conn) -> None:
    from openai_server import FakeOpenAIServer
    from scripted import answer

    def responder(kind: str, body: dict) -> str:
        return (
            answer(body["prompt"])
            if kind == "completions"
            else answer(body["messages"][-1]["content"], chat=True)
        )

    with FakeOpenAIServer(responder, latency=latency) as server:
        conn.send(server.base_url)
        conn.recv()  # block until told to stop


def prompts(n: int) -> list[str]:
    return [f"Task: Summarize item number {i} in one line.\nClassification:" for i in range(n)]


async def bare(base_url: str, n: int, concurrency: int) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(p: str):
        async with sem:
            return await client.completions.create(model="m", prompt=p, max_tokens=3, temperature=0)

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts(n)))
    elapsed = time.perf_counter() - start
    await client.close()
    return n / elapsed


async def ours(base_url: str, n: int, concurrency: int) -> float:
    backend = OpenAIBackend("m", base_urls=[base_url], api="completions", max_concurrency=concurrency)
    engine = Engine(backend, concurrency=concurrency)
    requests = [Request(prompt=p, max_tokens=3) for p in prompts(n)]
    start = time.perf_counter()
    responses = await engine.run(requests, stage="bench")
    elapsed = time.perf_counter() - start
    assert all(r.ok for r in responses)
    await backend.close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--target", type=int, default=2000, help="instructions for the generate run")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--runs", type=int, default=5, help="runs of each client, alternating")
    ap.add_argument("--skip-generate", action="store_true", help="only the requests/s comparison")
    args = ap.parse_args()

    parent, child = mp.Pipe()
    proc = mp.Process(target=serve, args=(args.latency, child), daemon=True)
    proc.start()
    base_url = parent.recv()
    try:
        asyncio.run(bare(base_url, 200, args.concurrency))  # warm up both sides
        b, o = [], []
        for _ in range(args.runs):
            b.append(asyncio.run(bare(base_url, args.requests, args.concurrency)))
            o.append(asyncio.run(ours(base_url, args.requests, args.concurrency)))
        print(
            f"{args.requests} requests, concurrency {args.concurrency}, "
            f"server latency {args.latency * 1000:.0f} ms"
        )
        print(
            f"  bare AsyncOpenAI + gather: {median(b):8.1f} req/s (runs: {', '.join(f'{x:.0f}' for x in b)})"
        )
        print(
            f"  self-instruct engine:      {median(o):8.1f} req/s (runs: {', '.join(f'{x:.0f}' for x in o)})"
        )
        print(f"  ratio engine / bare (medians): {median(o) / median(b):.2f}x")

        if args.skip_generate:
            return
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(
                None,
                {
                    "output_dir": tmp,
                    "run_name": "bench",
                    "seed_file": str(ROOT / "seeds" / "seed_tasks.jsonl"),
                    "target": str(args.target),
                    "progress": "false",
                    "llm.base_url": [base_url],
                    "llm.api": "completions",
                    "llm.concurrency": str(args.concurrency),
                    "llm.cache": "false",
                },
            )
            start = time.perf_counter()
            summary = run(cfg)
            wall = time.perf_counter() - start
            m = summary.manifest
            waiting = sum(s.get("seconds_waiting", 0) for s in m["requests"].values())
            sent = sum(s.get("sent", 0) for s in m["requests"].values())
            print(
                f"generate --target {args.target}: {wall:.1f} s wall, {sent} requests; "
                f"waiting for the server {waiting:.1f} s ({100 * waiting / wall:.1f}%), "
                f"our own work {wall - waiting:.1f} s ({100 * (wall - waiting) / wall:.1f}%)"
            )
            stages = m["sessions"][-1]["stage_seconds"]
            print(
                "  per stage (wall s / waiting s): "
                + ", ".join(
                    f"{s} {stages.get(s, 0):.1f}/{m['requests'].get(s, {}).get('seconds_waiting', 0):.1f}"
                    for s in stages
                )
            )
            print(
                f"  accepted {m['counts']['machine_instructions']}, "
                f"dataset rows {m['counts']['dataset_rows']}"
            )
    finally:
        parent.send("stop")
        proc.join(timeout=5)


if __name__ == "__main__":
    main()
