"""Merging runs: 50k generated records deduplicated across runs by the ROUGE-L rule, timed, next to the
time the naive way (rouge_score on every pair) would take, estimated from a sample in the same run.

    .venv/bin/python bench/export.py [--records 50000] [--runs 4]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from rouge_score import rouge_scorer

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from textgen import TextGen

from self_instruct.batch import Plan, merge
from self_instruct.export import ExportOptions, export


def make_runs(root: Path, records: int, runs: int) -> tuple[list[str], list[str]]:
    """Run directories whose tasks overlap: a fifth of each run repeats another run's instructions."""
    gen = TextGen(seed=7)
    rng = random.Random(7)
    labels, texts = [], []
    per_run = records // runs
    for r in range(runs):
        label = f"run{r}"
        d = root / "runs" / label
        d.mkdir(parents=True)
        tasks = []
        for k in range(per_run):
            if texts and rng.random() < 0.2:
                text = rng.choice(texts)
            else:
                text = gen.sentence()
                texts.append(text)
            tasks.append(
                {
                    "id": f"machine_{k}",
                    "instruction": text,
                    "is_classification": False,
                    "instances": [{"input": "", "output": f"answer {k}"}],
                }
            )
        (d / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
        labels.append(label)
    return labels, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "batch"
        labels, texts = make_runs(root, args.records, args.runs)
        plan = Plan(name="bench", root=root, base={}, matrix={}, threshold=0.7)
        start = time.perf_counter()
        result = merge(plan, labels)
        merged = time.perf_counter() - start
        start = time.perf_counter()
        counts = export([str(root / "merged")], str(Path(tmp) / "export"), ExportOptions(format="jsonl"))
        exported = time.perf_counter() - start

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        rng = random.Random(1)
        sample = [(rng.choice(texts), rng.choice(texts)) for _ in range(3000)]
        start = time.perf_counter()
        for a, b in sample:
            scorer.score(a, b)
        per_pair = (time.perf_counter() - start) / len(sample)
        n = args.records
        naive = per_pair * n * (n - 1) / 2

    print(f"{args.records} records in {args.runs} runs")
    print(
        f"  merge with the novelty index: {merged:.1f} s"
        f"  (kept {result['tasks']}, dropped {result['dropped']})"
    )
    print(f"  jsonl export of the merged set: {exported:.1f} s ({counts['train']} rows)")
    print(
        f"  naive pairwise rouge_score: {per_pair * 1e6:.0f} us a pair x {n * (n - 1) // 2:,} pairs "
        f"= {naive / 3600:.1f} hours (estimated from {len(sample)} pairs)"
    )
    print(f"  ratio: {naive / merged:,.0f}x")


if __name__ == "__main__":
    main()
