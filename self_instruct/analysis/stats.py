"""Counting: dataset statistics, lengths, distinct-n, ROUGE-L to the seeds and between instructions,
histograms, Wilson intervals. Pure functions over lists of tasks and strings (no spaCy, no plots)."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..novelty import NoveltyIndex, rouge_l
from ..store import as_rejection, rejected_instruction, request_totals
from ..tasks import Task

ROUGE_EDGES = [round(k * 0.05, 2) for k in range(21)]  # 0, 0.05, ..., 1: 0.3 is an edge
LOW_SEED_ROUGE = 0.3


def words(text: str) -> int:
    """Length in words: whitespace-separated tokens."""
    return len(text.split())


def summary(values: Sequence[float]) -> dict:
    """n, mean, median, min, max (None when there are no values)."""
    if not values:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None}
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "median": float(statistics.median(values)),
        "min": min(values),
        "max": max(values),
    }


def lengths(tasks: list[Task]) -> dict[str, list[int]]:
    """Word counts of the (distinct) instructions, the non-empty inputs and the non-empty outputs."""
    inputs = [words(i.input) for t in tasks for i in t.instances if i.input.strip()]
    outputs = [words(i.output) for t in tasks for i in t.instances if i.output.strip()]
    return {"instruction": [words(t.instruction) for t in tasks], "input": inputs, "output": outputs}


def dataset_stats(tasks: list[Task]) -> dict:
    """Counts and length summaries for one dataset (``tasks`` hold distinct instructions)."""
    known = [t.is_classification for t in tasks if t.is_classification is not None]
    instances = [i for t in tasks for i in t.instances]
    lens = lengths(tasks)
    return {
        "instructions": len(tasks),
        "classification": sum(known) if known else None,
        "non_classification": len(known) - sum(known) if known else None,
        "classification_unknown": len(tasks) - len(known),
        "instances": len(instances),
        "empty_inputs": sum(1 for i in instances if not i.input.strip()),
        "empty_outputs": sum(1 for i in instances if not i.output.strip()),
        "length_words": {k: summary(v) for k, v in lens.items()},
    }


def distinct_n(texts: list[str], n: int) -> float | None:
    """Distinct n-grams over all n-grams of the texts (lower-case, whitespace tokens); None: no n-grams."""
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        toks = text.lower().split()
        grams = [tuple(toks[k : k + n]) for k in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def sample_pairs(n: int, k: int, seed: int) -> list[tuple[int, int]]:
    """Up to k distinct unordered pairs (i < j) of n items, drawn with random.Random(seed); all of
    them, in a seeded order, when there are no more than k."""
    total = n * (n - 1) // 2
    if total == 0 or k <= 0:
        return []
    rng = random.Random(seed)
    if total <= k:
        k = total
    if total <= 4 * k:  # dense: list them all and draw without replacement
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        return rng.sample(pairs, k)
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    while len(out) < k:
        i, j = rng.randrange(n), rng.randrange(n)
        if i == j:
            continue
        pair = (min(i, j), max(i, j))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def pairwise_rouge(texts: list[str], sample: int, seed: int) -> dict:
    """Mean ROUGE-L F over a seeded sample of up to ``sample`` pairs of distinct instructions."""
    pairs = sample_pairs(len(texts), sample, seed)
    scores = [rouge_l(texts[i], texts[j]) for i, j in pairs]
    return {
        "pairs": len(scores),
        "mean": statistics.fmean(scores) if scores else None,
        "median": float(statistics.median(scores)) if scores else None,
    }


def seed_similarity(texts: list[str], seeds: list[str]) -> list[float]:
    """For each text, ROUGE-L F to its most similar seed instruction."""
    index = NoveltyIndex()
    for s in seeds:
        index.add(s)
    out = []
    for t in texts:
        m = index.best(t)
        out.append(m.score if m else 0.0)
    return out


def histogram(values: Sequence[float], edges: list[float]) -> dict:
    """Counts per bin; values beyond the last edge go into the last bin, below the first into the first."""
    arr = np.clip(np.asarray(values, dtype=float), edges[0], edges[-1])
    counts, _ = np.histogram(arr, bins=np.asarray(edges, dtype=float))
    return {"edges": list(edges), "counts": [int(c) for c in counts]}


def length_edges(samples: list[list[int]], bins: int = 40) -> list[float]:
    """Shared integer bin edges for word counts, so that several datasets can be overlaid: from 0 to
    the largest 99th percentile (the last bin also holds the longer tail)."""
    upper = 1
    for values in samples:
        if values:
            upper = max(upper, math.ceil(float(np.percentile(values, 99))))
    width = max(1, math.ceil((upper + 1) / bins))
    top = width * math.ceil((upper + 1) / width)
    return [float(x) for x in range(0, top + 1, width)]


Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial share (95% by default); None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1; None with fewer than two values)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def rejection_summary(rejected: list[dict], examples: int = 3) -> dict:
    """Rejections per stage and reason: counts and up to ``examples`` instructions each."""
    by_stage: dict[str, dict[str, dict]] = {}
    counts: dict[str, Counter] = {}
    for r in map(as_rejection, rejected):
        stage, reason = str(r["stage"]), str(r["reason"])
        counts.setdefault(stage, Counter())[reason] += 1
        entry = by_stage.setdefault(stage, {}).setdefault(reason, {"count": 0, "examples": []})
        text = rejected_instruction(r)
        fresh = isinstance(text, str) and text.strip() and text not in entry["examples"]
        if fresh and len(entry["examples"]) < examples:
            entry["examples"].append(text)
    out: dict[str, dict] = {}
    for stage in sorted(by_stage):
        out[stage] = {}
        for reason, c in counts[stage].most_common():
            out[stage][reason] = {"count": c, "examples": by_stage[stage][reason]["examples"]}
    return {"total": len(rejected), "by_stage": out}


def run_requests(manifest: dict) -> dict:
    """Tokens, cost, requests and time from a run's manifest.json: per stage as recorded, and in
    total as ``store.request_totals`` adds them up (the sum every command reports)."""
    requests = manifest.get("requests")
    if not isinstance(requests, dict):
        requests = {}
    keys = (
        "requests",
        "cache_hits",
        "retries",
        "failures",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "seconds_waiting",
    )
    per_stage = {
        stage: {key: c.get(key, 0) for key in keys}
        for stage, c in sorted(requests.items())
        if isinstance(c, dict)
    }
    totals = request_totals(requests)
    backend = manifest.get("backend")
    if not isinstance(backend, dict):
        backend = {}
    return {
        "per_stage": per_stage,
        "requests": totals.requests,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "tokens": totals.tokens,
        "cost_usd": totals.cost_usd,
        "wall_seconds": manifest.get("wall_seconds"),
        "backend": {k: backend.get(k) for k in ("name", "model", "api") if k in backend},
        "counts": manifest.get("counts", {}),
    }
