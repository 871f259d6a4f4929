"""Comparing inputs: one row per metric, each input's value, their mean and standard deviation."""

from __future__ import annotations

from . import stats as st


def _at(s: dict, *keys):
    """s[k1][k2]...; None as soon as a step is missing or None."""
    for k in keys:
        if not isinstance(s, dict) or s.get(k) is None:
            return None
        s = s[k]
    return s


def _empty_input_share(s: dict) -> float | None:
    d = s["dataset"]
    return d["empty_inputs"] / d["instances"] if d["instances"] else None


def _run_total(key: str):
    def get(s: dict):
        req = _at(s, "run", "requests")
        return req[key] if req and req["per_stage"] else None

    return get


# (key, label, format, getter)
METRICS = [
    ("instructions", "instructions", "int", lambda s: s["dataset"]["instructions"]),
    ("instances", "instances", "int", lambda s: s["dataset"]["instances"]),
    ("empty_input_share", "instances with empty input", "pct", _empty_input_share),
    (
        "instruction_words",
        "mean instruction length (words)",
        "f1",
        lambda s: _at(s, "dataset", "length_words", "instruction", "mean"),
    ),
    (
        "input_words",
        "mean input length (words, non-empty)",
        "f1",
        lambda s: _at(s, "dataset", "length_words", "input", "mean"),
    ),
    (
        "output_words",
        "mean output length (words, non-empty)",
        "f1",
        lambda s: _at(s, "dataset", "length_words", "output", "mean"),
    ),
    (
        "share_with_pair",
        "instructions with a verb-noun pair",
        "pct",
        lambda s: _at(s, "verb_noun", "share_with_pair"),
    ),
    ("distinct_pairs", "distinct verb-noun pairs", "int", lambda s: _at(s, "verb_noun", "distinct_pairs")),
    ("distinct_1", "distinct-1", "f3", lambda s: _at(s, "diversity", "distinct_1")),
    ("distinct_2", "distinct-2", "f3", lambda s: _at(s, "diversity", "distinct_2")),
    (
        "pairwise_rouge_l",
        "mean pairwise ROUGE-L",
        "f3",
        lambda s: _at(s, "diversity", "pairwise_rouge_l", "mean"),
    ),
    ("seed_rouge_l", "mean ROUGE-L to the most similar seed", "f3", lambda s: _at(s, "seed_rouge_l", "mean")),
    (
        "seed_rouge_below_0_3",
        "ROUGE-L to seeds < 0.3",
        "pct",
        lambda s: _at(s, "seed_rouge_l", "share_below_0_3"),
    ),
    ("rejected", "rejected", "int", lambda s: _at(s, "run", "rejected", "total")),
    ("tokens", "tokens", "int", _run_total("tokens")),
    ("cost_usd", "cost (USD)", "usd", _run_total("cost_usd")),
    ("wall_seconds", "run time (s)", "f1", lambda s: _at(s, "run", "requests", "wall_seconds")),
    ("judge_valid", "judge: valid instruction", "pct", lambda s: _at(s, "judge", "valid", "share")),
    ("judge_input_fits", "judge: input fits", "pct", lambda s: _at(s, "judge", "input_fits", "share")),
    (
        "judge_output_correct",
        "judge: output correct",
        "pct",
        lambda s: _at(s, "judge", "output_correct", "share"),
    ),
]


def compare(inputs: list[dict]) -> dict:
    """One row per metric: the value for each input, their mean and sample standard deviation."""
    rows = []
    for key, label, kind, get in METRICS:
        values = [get(s) for s in inputs]
        if all(v is None for v in values):
            continue
        mean, std = st.mean_std(values)
        rows.append(
            {"metric": key, "label": label, "format": kind, "values": values, "mean": mean, "std": std}
        )
    return {"labels": [s["label"] for s in inputs], "metrics": rows}
