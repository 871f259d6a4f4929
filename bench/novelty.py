"""Novelty index vs the reference way of applying the ROUGE-L <= 0.7 rule, measured in the same run.

Reference: rouge_score's LCS against every pool entry, texts tokenized once in advance (what the
faster reference ports do). Ours: self_instruct.novelty.NoveltyIndex. Both decide the same candidates;
the script checks they agree, then prints candidates per second and the ratio.

    .venv/bin/python bench/novelty.py            # pools of 1k, 10k, 50k; growth to 50k
    .venv/bin/python bench/novelty.py --large    # adds a 200k pool and its memory
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from rouge_score import rouge_scorer

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from textgen import TextGen

from self_instruct.novelty import NoveltyIndex
from self_instruct.tasks import load_tasks

SEEDS = Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"
TOKENIZER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reference_is_novel(cand_tokens: list[str], pool_tokens: list[list[str]], threshold: float = 0.7) -> bool:
    return all(rouge_scorer._score_lcs(cand_tokens, p).fmeasure <= threshold for p in pool_tokens)


def candidates(gen: TextGen, pool: list[str], n: int, rng: random.Random) -> list[str]:
    """Fresh sentences, and one in four a pool entry with a word changed (near-duplicates)."""
    out = []
    for _ in range(n):
        if rng.random() < 0.25:
            words = rng.choice(pool).split()
            words[rng.randrange(len(words))] = "changed"
            out.append(" ".join(words))
        else:
            out.append(gen.sentence())
    return out


def bench_pool(size: int, ref_samples: int, ours_samples: int) -> dict:
    gen = TextGen(seed=size)
    rng = random.Random(size)
    pool = [gen.sentence() for _ in range(size)]
    before = rss_mib()
    t0 = time.perf_counter()
    index = NoveltyIndex()
    for text in pool:
        index.add(text)
    build = time.perf_counter() - t0
    mem = rss_mib() - before

    cands = candidates(gen, pool, ours_samples, rng)
    pool_tokens = [TOKENIZER.tokenize(t) for t in pool]
    sample = cands[:ref_samples]
    t0 = time.perf_counter()
    ref = [reference_is_novel(TOKENIZER.tokenize(c), pool_tokens) for c in sample]
    ref_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = [index.is_novel(c)[0] for c in cands]
    ours_time = time.perf_counter() - t0
    assert ours[:ref_samples] == ref, "decisions differ from the reference"

    k_samples = min(len(cands), 200)
    t0 = time.perf_counter()
    for c in cands[:k_samples]:
        index.top_k(c, 10)
    topk_time = time.perf_counter() - t0
    return {
        "pool": size,
        "build_s": build,
        "mem_mib": mem,
        "ref_cps": ref_samples / ref_time,
        "ours_cps": len(cands) / ours_time,
        "topk_cps": k_samples / topk_time,
        "rejected": ours.count(False),
        "checked": ref_samples,
    }


def grow(target: int, with_records: bool) -> tuple[float, int]:
    """Seeds, then generated candidates through the rule until ``target`` are accepted."""
    index = NoveltyIndex()
    for task in load_tasks(SEEDS):
        index.add(task.instruction)
    gen = TextGen(seed=12345)
    rng = random.Random(1)
    accepted: list[str] = []
    pending: list[int] = []  # accepted entries whose top-10 record is not computed yet
    tried = 0
    t0 = time.perf_counter()
    while len(accepted) < target:
        if accepted and rng.random() < 0.2:
            words = rng.choice(accepted).split()
            words[rng.randrange(len(words))] = "changed"
            text = " ".join(words)
        else:
            text = gen.sentence()
        tried += 1
        keep, _ = index.is_novel(text)
        if keep:
            pending.append(index.add(text))
            accepted.append(text)
            # Bootstrap records each round's acceptances in one pass (rounds of ~100 here).
            if with_records and (len(pending) == 100 or len(accepted) == target):
                index.top_k_before(pending, 10)
                pending = []
    return time.perf_counter() - t0, tried


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true", help="also a 200k pool (memory target: < 1 GiB)")
    ap.add_argument("--grow", type=int, default=50_000, help="growth target (default 50000)")
    ap.add_argument("--records", action="store_true", help="also time growth with top-10 records")
    args = ap.parse_args()

    sizes = [(1_000, 40, 2000), (10_000, 8, 2000), (50_000, 3, 2000)]
    if args.large:
        sizes.append((200_000, 1, 1000))
    print(
        f"{'pool':>8} {'build s':>8} {'index MiB':>9} {'reference cand/s':>17} {'ours cand/s':>12} "
        f"{'ratio':>8} {'top-10 cand/s':>14} {'checked':>8}"
    )
    for size, ref_n, ours_n in sizes:
        r = bench_pool(size, ref_n, ours_n)
        print(
            f"{r['pool']:>8} {r['build_s']:>8.2f} {r['mem_mib']:>9.0f} {r['ref_cps']:>17.2f} "
            f"{r['ours_cps']:>12.0f} {r['ours_cps'] / r['ref_cps']:>7.0f}x "
            f"{r['topk_cps']:>14.0f} {r['checked']:>8}"
        )
    secs, tried = grow(args.grow, with_records=False)
    print(f"growth from the seeds to {args.grow} accepted ({tried} candidates): {secs:.1f} s")
    if args.records:
        secs, tried = grow(args.grow, with_records=True)
        print(f"growth with top-10 records for every accepted instruction (per round of 100): {secs:.1f} s")


if __name__ == "__main__":
    main()
