"""Greedy against calibrated classification of the seed tasks, on the embedded model.

Every seed task is classified twice with our classify prompt: greedily (the method's rule: the
answer's first word is yes or no) and by the first token's yes-no log-probability margin against a
threshold fitted on the seeds' labels. The calibrated numbers are cross-validated (each fold judged
with a threshold fitted on the other folds), so they are not measured on what was tuned.

    .venv/bin/python bench/classify_calibration.py [--api completions|chat] [--seed-file FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from self_instruct.calibration import YES_TOKENS, auc, balanced_accuracy, calibrate, margin
from self_instruct.llm.base import Request
from self_instruct.llm.local_backend import LocalBackend
from self_instruct.parsing import parse_classification
from self_instruct.prompts import render_classify
from self_instruct.tasks import load_tasks


async def main(api: str, seed_file: Path) -> None:
    tasks = load_tasks(seed_file)
    labels = [t.is_classification for t in tasks]
    backend = LocalBackend(api=api)
    chat = api == "chat"
    greedy, margins, top_yes = [], [], []
    t0 = time.perf_counter()
    for t in tasks:
        prompt = render_classify(t.instruction, chat=chat)
        r = await backend.complete(Request(prompt=prompt, max_tokens=16 if chat else 3, stop=("\n",)))
        greedy.append(parse_classification(r.text, r.finish_reason) == "yes")
        s = await backend.complete(Request(prompt=prompt, max_tokens=1, logprobs=20))
        margins.append(margin(s.top_logprobs))
        top_yes.append(max(s.top_logprobs, key=s.top_logprobs.get) in YES_TOKENS)
    seconds = time.perf_counter() - t0
    await backend.close()
    fit = calibrate(margins, labels, top_yes)
    n, pos = len(tasks), sum(labels)
    acc = sum(g == y for g, y in zip(greedy, labels, strict=True)) / n
    print(f"{seed_file.name}: {n} tasks, {pos} classification ({pos / n:.0%}); {api} API; {seconds:.0f} s")
    print("| method | says yes | accuracy | balanced accuracy | AUC |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| greedy (the reference rule) | {sum(greedy)} ({sum(greedy) / n:.0%}) | {acc:.2f} "
        f"| {balanced_accuracy(greedy, labels):.2f} | {auc([float(g) for g in greedy], labels):.3f} |"
    )
    yes = round(fit.calibrated_yes_rate * n)
    print(
        f"| calibrated, 5-fold cross-validated | {yes} ({fit.calibrated_yes_rate:.0%}) "
        f"| {fit.cv_accuracy:.2f} | {fit.cv_balanced_accuracy:.2f} | {fit.auc:.3f} |"
    )
    print(f"threshold on all seeds: {fit.threshold:.3f} (margin = log P(yes) - log P(no))")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api", choices=("completions", "chat"), default="completions")
    ap.add_argument(
        "--seed-file", type=Path, default=Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"
    )
    args = ap.parse_args()
    asyncio.run(main(args.api, args.seed_file))
