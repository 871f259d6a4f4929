"""The decontamination index against a plain Python set of n-gram tuples, in the same run.

A benchmark-like corpus (records of two to four synthetic sentences, ``--ngrams`` 13-grams in all)
is indexed, then ``--instances`` instances (instruction, input and output: three texts each) are
checked; one instance in fifty carries a 13-word span copied from a benchmark record, and one in
two hundred is a short benchmark text word for word. Both ways must find the same hits, with the
same benchmark line and n-gram. Prints each one's build and check time, the ratio, and the index's
memory:

    .venv/bin/python bench/decontaminate.py                      # 1M n-grams, 100k instances
    .venv/bin/python bench/decontaminate.py --ngrams 200000 --instances 20000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from textgen import TextGen

from self_instruct.quality.decontaminate import BenchmarkIndex, Where, baseline_check, words

N = 13


def corpus(ngrams: int, seed: int) -> list[tuple[Where, str]]:
    """Benchmark records until they hold ``ngrams`` n-grams, with a few short ones among them."""
    gen, rng = TextGen(seed=seed), random.Random(seed)
    out: list[tuple[Where, str]] = []
    total = 0
    while total < ngrams:
        line = len(out) + 1
        if rng.random() < 0.05:  # a short question: matched on its whole form
            text = " ".join(gen.sentence().split()[:8])
        else:
            text = " ".join(gen.sentence() for _ in range(rng.randint(2, 4)))
        out.append((Where("bench.jsonl", line, "question"), text))
        total += max(0, len(words(text)) - N + 1)
    return out


def instances(records: list[tuple[Where, str]], n: int, seed: int) -> list[str]:
    """n instances as their three texts, in order; some repeat benchmark text."""
    gen, rng = TextGen(seed=seed + 1), random.Random(seed + 1)
    long = [t for _, t in records if len(words(t)) >= N]
    short = [t for _, t in records if 4 <= len(words(t)) < N]
    texts: list[str] = []
    for _ in range(n):
        instruction, inp, output = gen.sentence(), gen.sentence(), " ".join(gen.sentence() for _ in range(3))
        roll = rng.random()
        if roll < 0.02:
            ws = rng.choice(long).split()
            i = rng.randrange(0, len(ws) - N + 1)
            output = f"{output} {' '.join(ws[i : i + N])} {gen.sentence()}"
        elif roll < 0.025:
            inp = rng.choice(short)
        texts += [instruction, inp, output]
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngrams", type=int, default=1_000_000, help="n-grams in the benchmark corpus")
    ap.add_argument("--instances", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    records = corpus(args.ngrams, args.seed)
    queries = instances(records, args.instances, args.seed)
    print(f"benchmark: {len(records)} records; {len(queries)} texts to check ({args.instances} instances)")

    t0 = time.perf_counter()
    index = BenchmarkIndex(records, N)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = index.check(queries)
    checked = time.perf_counter() - t0

    t0 = time.perf_counter()
    theirs = baseline_check(records, N, queries)
    baseline = time.perf_counter() - t0

    assert ours == theirs, "the index and the plain set found different hits"
    # Memory, in a second build (tracing allocations slows it): what the index holds once built.
    tracemalloc.start()
    kept = BenchmarkIndex(records, N)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    hits = sum(h is not None for h in ours)
    print(f"  n-grams indexed: {len(index)}; hits: {hits} texts (the same both ways: yes)")
    print(f"  index:    build {built:6.2f} s, check {checked:6.2f} s, total {built + checked:6.2f} s")
    print(f"  set of n-gram tuples (build and check): {baseline:6.2f} s")
    print(f"  ratio: {baseline / (built + checked):.1f}x")
    print(
        f"  index memory: {held / 2**20:.0f} MiB held ({index.memory_bytes() / 2**20:.0f} MiB of it in "
        "numpy arrays and the benchmark's folded text; the rest sources)"
    )


if __name__ == "__main__":
    main()
