"""The local backend re-uses llama.cpp's evaluated prompt prefix: classification requests share a
~730-token few-shot prefix, so after the first one only the target task is evaluated.

In the same run: N requests in a row (prefix re-used) against N requests each after a reset of the
model's state (prefix evaluated every time, as a server without prompt caching would).

    .venv/bin/python bench/local_prefix.py [-n 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from self_instruct.llm.base import Request
from self_instruct.llm.local_backend import LocalBackend
from self_instruct.prompts import render_classify

TASKS = [
    "Write a short poem about rain.",
    "Label the tweet as happy or sad.",
    "Sort the list of numbers in ascending order.",
    "Plan a three-day trip to Rome.",
    "Is the sentence grammatical? Answer yes or no.",
    "Summarize the paragraph in one line.",
]


async def timed(backend: LocalBackend, tasks: list[str], reset: bool) -> float:
    start = time.perf_counter()
    for task in tasks:
        if reset:
            backend._llama.reset()
        await backend.complete(Request(prompt=render_classify(task), max_tokens=3, stop=("\n",)))
    return time.perf_counter() - start


async def main(n: int) -> None:
    backend = LocalBackend()
    tasks = (TASKS * n)[:n]
    await timed(backend, tasks[:1], reset=True)  # the first request pays for the prefix in both modes
    reused = await timed(backend, tasks, reset=False)
    fresh = await timed(backend, tasks, reset=True)
    print(f"{n} classification requests on the embedded model (~730-token shared prefix)")
    print(f"  prefix evaluated every time: {fresh:6.2f} s ({fresh / n:.2f} s each)")
    print(f"  prefix re-used:              {reused:6.2f} s ({reused / n:.2f} s each)")
    print(f"  ratio: {fresh / reused:.0f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=4)
    asyncio.run(main(ap.parse_args().n))
