"""Analysing one input: its counts, lengths, verb-noun structure, diversity, ROUGE-L to the seeds
and, for a run directory, its rejections, failures, requests and classification calibration."""

from __future__ import annotations

from pathlib import Path

from . import stats as st
from .load import Loaded, load_seed_instructions


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def analyze_one(
    loaded: Loaded,
    label: str,
    *,
    seeds: str | None,
    seed_cache: dict[str, list[str]],
    sample: int,
    seed: int,
    progress: bool,
    mapper=None,
) -> tuple[dict, dict[str, list[int]]]:
    """The statistics of one input, and the word counts its length histograms are drawn from.
    ``mapper``: does the per-instruction work elsewhere (``cluster.analysis.RayDataMap``), with
    the same results; None: in this process."""
    from .verbnoun import extract_pairs, summarize

    tasks = loaded.tasks
    instructions = [t.instruction for t in tasks]
    notes: list[str] = []
    out: dict = {"path": loaded.path, "label": label, "kind": loaded.kind}
    out["dataset"] = st.dataset_stats(tasks)
    out["dataset"]["repeated_instructions"] = loaded.repeated
    # Lines of the input's files that were not read: in the report's notes, and for the command to print.
    out["unread"] = [str(u) for u in loaded.unread]
    notes += out["unread"]
    if loaded.repeated:
        notes.append(
            f"{loaded.repeated} tasks repeat an earlier instruction: counted once, with their instances "
            "added to the first."
        )

    if mapper is None:
        pairs = extract_pairs(instructions, progress=progress)
    else:
        pairs = mapper.pairs(instructions, progress=progress)
    out["verb_noun"] = summarize(pairs)
    out["diversity"] = {
        "distinct_verb_noun_pairs": out["verb_noun"]["distinct_pairs"],
        "distinct_1": st.distinct_n(instructions, 1),
        "distinct_2": st.distinct_n(instructions, 2),
        "pairwise_rouge_l": st.pairwise_rouge(instructions, sample, seed),
    }

    seed_file = seeds or (loaded.run.seed_file if loaded.run else None)
    out["seed_rouge_l"] = None
    if seed_file is None:
        notes.append("No seed file (give --seeds FILE): ROUGE-L to the seeds is not computed.")
    elif _same_file(seed_file, loaded.path):
        notes.append("The input is the seed file itself: ROUGE-L to the seeds is not computed.")
    else:
        if seed_file not in seed_cache:
            seed_cache[seed_file] = load_seed_instructions(seed_file)
        seed_texts = seed_cache[seed_file]
        if mapper is None:
            scores = st.seed_similarity(instructions, seed_texts)
        else:
            scores = mapper.seed_scores(instructions, seed_texts)
        s = st.summary(scores)
        out["seed_rouge_l"] = {
            "seed_file": seed_file,
            "seeds": len(seed_texts),
            "mean": s["mean"],
            "median": s["median"],
            "share_below_0_3": sum(1 for x in scores if x < st.LOW_SEED_ROUGE) / len(scores),
            "histogram": st.histogram(scores, st.ROUGE_EDGES),
        }

    out["run"] = None
    if loaded.run is not None:
        failures: dict[str, int] = {}
        for r in loaded.run.failures:
            stage = str(r.get("stage", "?"))
            failures[stage] = failures.get(stage, 0) + 1
        out["run"] = {
            "rejected": st.rejection_summary(loaded.run.rejected),
            "failures": {"total": len(loaded.run.failures), "by_stage": dict(sorted(failures.items()))},
            "requests": st.run_requests(loaded.run.manifest),
            "seed_file": loaded.run.seed_file,
            "classification": _classification(loaded.run.calibration, loaded.run.margins),
            "judge_ratings": _ratings(loaded.run.ratings, loaded.run.min_rating),
        }
        if not loaded.run.manifest:
            notes.append("The run directory has no manifest.json: no tokens, cost or time.")
    out["judge"] = None
    out["notes"] = notes
    return out, st.lengths(tasks)


def _ratings(ratings: list[str], min_rating: str | None) -> dict | None:
    """quality.judge's ratings of a run's instances: how many got each, and which were kept."""
    if not ratings:
        return None
    order = "ABCD"
    counts = {r: ratings.count(r) for r in order}
    kept = {r: min_rating is not None and order.index(r) <= order.index(min_rating) for r in order}
    return {"counts": counts, "rated": len(ratings), "min_rating": min_rating, "kept": kept}


def _classification(fit: dict | None, margins: list[float]) -> dict | None:
    """A calibrated run's threshold, its cross-validated quality and the margins on both sides."""
    if not fit:
        return None
    keys = ("threshold", "seeds", "positives", "cv_accuracy", "cv_balanced_accuracy", "auc")
    out = {k: fit.get(k) for k in keys}
    out.update(greedy_yes_rate=fit.get("greedy_yes_rate"), calibrated_yes_rate=fit.get("calibrated_yes_rate"))
    out["seed_margins"] = fit.get("seed_margins") or []
    out["seed_labels"] = fit.get("seed_labels") or []
    out["run_margins"] = margins
    out["run_yes_rate"] = sum(m >= fit["threshold"] for m in margins) / len(margins) if margins else None
    return out
