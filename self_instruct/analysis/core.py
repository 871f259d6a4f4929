"""``analyze``: load each PATH, compute its statistics, compare them, write the report."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from ..errors import UserError
from . import stats as st
from .load import Loaded, load_input, load_seed_instructions
from .report import Report, fmt, fmt_float, fmt_int, fmt_pct, fmt_usd, write_report

STATS_VERSION = 1


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _labels(loaded: list[Loaded]) -> list[str]:
    """Short names for the inputs (the file or directory name), made unique with a number."""
    names = [Path(x.path).name or x.path for x in loaded]
    out = []
    for k, name in enumerate(names):
        out.append(f"{name} ({k + 1})" if names.count(name) > 1 else name)
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


# ---------------------------------------------------------------- one input


def _analyze_one(
    loaded: Loaded,
    label: str,
    *,
    seeds: str | None,
    seed_cache: dict[str, list[str]],
    sample: int,
    seed: int,
    progress: bool,
) -> tuple[dict, dict]:
    """The statistics of one input, and the raw values its histograms are drawn from."""
    from .verbnoun import extract_pairs, summarize

    tasks = loaded.tasks
    instructions = [t.instruction for t in tasks]
    notes: list[str] = []
    out: dict = {"path": loaded.path, "label": label, "kind": loaded.kind}
    out["dataset"] = st.dataset_stats(tasks)
    out["dataset"]["repeated_instructions"] = loaded.repeated
    if loaded.repeated:
        notes.append(
            f"{loaded.repeated} tasks repeat an earlier instruction: counted once, with their instances "
            "added to the first."
        )

    pairs = extract_pairs(instructions, progress=progress)
    out["verb_noun"] = summarize(pairs)
    out["diversity"] = {
        "distinct_verb_noun_pairs": out["verb_noun"]["distinct_pairs"],
        "distinct_1": st.distinct_n(instructions, 1),
        "distinct_2": st.distinct_n(instructions, 2),
        "pairwise_rouge_l": st.pairwise_rouge(instructions, sample, seed),
    }

    raw = {"lengths": st.lengths(tasks), "seed_rouge": None}
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
        scores = st.seed_similarity(instructions, seed_texts)
        raw["seed_rouge"] = scores
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
        }
        if not loaded.run.manifest:
            notes.append("The run directory has no manifest.json: no tokens, cost or time.")
    out["judge"] = None
    out["notes"] = notes
    return out, raw


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


# ---------------------------------------------------------------- comparison


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


# ---------------------------------------------------------------- report


def _hist_panels(per_input: list[tuple[str, dict]], edges_by_kind: dict[str, list[float]]) -> list:
    names = {"instruction": "instructions", "input": "inputs (non-empty)", "output": "outputs (non-empty)"}
    return [
        (names[kind], edges_by_kind[kind], [(label, h[kind]["counts"]) for label, h in per_input])
        for kind in ("instruction", "input", "output")
    ]


def _dataset_table(s: dict) -> list[list[str]]:
    d = s["dataset"]
    rows = [["instructions (distinct)", fmt_int(d["instructions"])]]
    if d["classification"] is not None:
        rows.append(["classification tasks", fmt_int(d["classification"])])
        rows.append(["non-classification tasks", fmt_int(d["non_classification"])])
        if d["classification_unknown"]:
            rows.append(["not classified", fmt_int(d["classification_unknown"])])
    rows.append(["instances", fmt_int(d["instances"])])
    rows.append(["instances with empty input", fmt_int(d["empty_inputs"])])
    if d["empty_outputs"]:
        rows.append(["instances with empty output", fmt_int(d["empty_outputs"])])
    return rows


def _length_table(s: dict) -> list[list[str]]:
    names = {"instruction": "instructions", "input": "inputs (non-empty)", "output": "outputs (non-empty)"}
    rows = []
    for kind, name in names.items():
        x = s["dataset"]["length_words"][kind]
        rows.append(
            [name, fmt_int(x["n"]), fmt_float(x["mean"], 1), fmt_float(x["median"], 1), fmt_int(x["max"])]
        )
    return rows


def _section(rep: Report, s: dict, prefix: str, figures: dict[str, bytes]) -> None:
    rep.h(f"{s['label']}" if prefix else "Dataset", 2)
    if prefix:
        rep.p(f"{s['path']} ({s['kind']})")
    rep.table(["", "count"], _dataset_table(s))
    rep.h("Length in words", 3)
    rep.table(["", "n", "mean", "median", "max"], _length_table(s))
    if "lengths" in figures:
        rep.figure(f"{prefix}lengths.png", figures["lengths"], "length histograms (words)")

    vn = s["verb_noun"]
    rep.h("Verb-noun structure", 3)
    rep.p(
        f"{fmt_int(vn['with_pair'])} of {fmt_int(vn['instructions'])} instructions "
        f"({fmt_pct(vn['share_with_pair'])}) have a root verb with a direct-object noun "
        f"({fmt_int(vn['with_verb'])} have a root verb); {fmt_int(vn['distinct_pairs'])} distinct pairs, "
        f"{fmt_int(vn['distinct_verbs'])} distinct verbs. Top verbs (counted over the instructions with a "
        "pair) and their most common nouns:"
    )
    if vn["top"]:
        rep.table(
            ["verb", "pairs", "top nouns"],
            [
                [v["verb"], fmt_int(v["count"]), ", ".join(f"{n['noun']} ({n['count']})" for n in v["nouns"])]
                for v in vn["top"]
            ],
            align="lrl",
        )
    if "verbs" in figures:
        rep.figure(
            f"{prefix}verbs.png", figures["verbs"], "top root verbs (inner ring) and their direct objects"
        )

    d = s["diversity"]
    rep.h("Diversity", 3)
    pr = d["pairwise_rouge_l"]
    rep.table(
        ["metric", "value"],
        [
            ["distinct verb-noun pairs", fmt_int(d["distinct_verb_noun_pairs"])],
            ["distinct-1 (instructions)", fmt_float(d["distinct_1"])],
            ["distinct-2 (instructions)", fmt_float(d["distinct_2"])],
            [f"mean pairwise ROUGE-L ({fmt_int(pr['pairs'])} pairs)", fmt_float(pr["mean"])],
        ],
    )

    rep.h("ROUGE-L to the most similar seed", 3)
    sr = s["seed_rouge_l"]
    if sr:
        rep.p(
            f"Against {fmt_int(sr['seeds'])} seed instructions ({sr['seed_file']}): "
            f"mean {fmt_float(sr['mean'])}, median {fmt_float(sr['median'])}; "
            f"{fmt_pct(sr['share_below_0_3'])} of the instructions score below 0.3."
        )
        if "seed_rouge" in figures:
            rep.figure(f"{prefix}seed_rouge.png", figures["seed_rouge"], "ROUGE-L to the most similar seed")
    for note in s["notes"]:
        rep.p(note)

    if s["run"]:
        _run_section(rep, s["run"], figures, prefix)
    if s["judge"]:
        _judge_section(rep, s["judge"])


def _run_section(rep: Report, run: dict, figures: dict[str, bytes] | None = None, prefix: str = "") -> None:
    rej = run["rejected"]
    rep.h("Rejections", 3)
    if rej["total"]:
        rows = []
        for stage, reasons in rej["by_stage"].items():
            for reason, r in reasons.items():
                examples = " / ".join(e if len(e) <= 90 else e[:87] + "..." for e in r["examples"])
                rows.append([stage, reason, examples, fmt_int(r["count"])])
        rep.table(["stage", "reason", "examples", "count"], rows, align="lllr")
        rep.p(f"{fmt_int(rej['total'])} rejected in all.")
    else:
        rep.p("Nothing was rejected.")
    if run["failures"]["total"]:
        by = ", ".join(f"{k} {v}" for k, v in run["failures"]["by_stage"].items())
        rep.p(f"Failed requests: {run['failures']['total']} ({by}).")

    c = run.get("classification")
    if c:
        rep.h("Classification (calibrated)", 3)
        rep.p(
            f"Each task is scored by the first answer token's margin log P(yes) - log P(no); the threshold "
            f"{fmt_float(c['threshold'])} was fitted on {fmt_int(c['seeds'])} labelled seed tasks "
            f"({fmt_int(c['positives'])} classification)."
        )
        rep.table(
            ["", "value"],
            [
                ["cross-validated accuracy on the seeds", fmt_float(c["cv_accuracy"])],
                ["cross-validated balanced accuracy", fmt_float(c["cv_balanced_accuracy"])],
                ["AUC of the margin", fmt_float(c["auc"])],
                ["seeds labelled classification", fmt_pct(c["positives"] / c["seeds"])],
                ["seeds called classification: greedy", fmt_pct(c["greedy_yes_rate"])],
                ["seeds called classification: calibrated", fmt_pct(c["calibrated_yes_rate"])],
                ["this run's instructions called classification", fmt_pct(c["run_yes_rate"])],
            ],
        )
        if figures and "margins" in figures:
            rep.figure(f"{prefix}margins.png", figures["margins"], "yes-no margins and the threshold")

    req = run["requests"]
    if req["per_stage"]:
        rep.h("Requests, tokens, cost", 3)
        rows = []
        for stage, r in req["per_stage"].items():
            rows.append(
                [
                    stage,
                    fmt_int(r["requests"]),
                    fmt_int(r["cache_hits"]),
                    fmt_int(r["retries"]),
                    fmt_int(r["failures"]),
                    fmt_int(r["prompt_tokens"]),
                    fmt_int(r["completion_tokens"]),
                    fmt_usd(r["cost_usd"]),
                    fmt_float(r["seconds_waiting"], 1),
                ]
            )
        rows.append(
            [
                "total",
                fmt_int(req["requests"]),
                "",
                "",
                "",
                fmt_int(req["prompt_tokens"]),
                fmt_int(req["completion_tokens"]),
                fmt_usd(req["cost_usd"]),
                "",
            ]
        )
        rep.table(
            ["stage", "requests", "cache hits", "retries", "failures", "prompt tokens", "completion tokens",
             "cost", "model wait (s)"],
            rows,
        )  # fmt: skip
        backend = req["backend"]
        who = " / ".join(str(backend[k]) for k in ("name", "model", "api") if backend.get(k))
        wall = req["wall_seconds"]
        rep.p(
            f"{fmt_int(req['tokens'])} tokens in all"
            + (f"; run time {fmt_float(wall, 1)} s" if wall is not None else "")
            + (f"; backend {who}" if who else "")
            + "."
        )


def _judge_section(rep: Report, j: dict) -> None:
    from .judge import LABELS, QUESTIONS

    rep.h("LLM judge", 3)
    backend = " / ".join(str(v) for v in j["backend"].values() if v)
    rep.p(
        f"{fmt_int(j['sample'])} instances sampled and reviewed by {backend}; "
        f"{fmt_int(j['failed'])} requests failed. Unparsable answers are left out of each share."
    )
    rows = []
    for q in QUESTIONS:
        r = j[q]
        ci = r["ci95"]
        rows.append(
            [
                LABELS[q],
                fmt_int(r["yes"]),
                fmt_int(r["n"]),
                fmt_pct(r["share"]),
                f"{fmt_pct(ci[0])} – {fmt_pct(ci[1])}" if ci else "–",
                fmt_int(r["unparsable"]),
            ]
        )
    rep.table(["question", "yes", "answered", "share", "95% Wilson interval", "unparsable"], rows)


def _build_report(
    inputs: list[dict], length_edges: dict[str, list[float]], comparison: dict | None, settings: dict
) -> Report:
    from . import plots

    many = len(inputs) > 1
    rep = Report("Self-Instruct data analysis" + ("" if many else f": {inputs[0]['label']}"))
    rep.p(
        "Inputs: "
        + "; ".join(f"{s['label']} = {s['path']}" for s in inputs)
        + f". Pairwise ROUGE-L over up to {settings['sample']} random pairs (seed {settings['seed']})."
    )

    if many:
        rep.h("Comparison", 2)
        rows = []
        for m in comparison["metrics"]:
            summary_kind = "f1" if m["format"] == "int" else m["format"]  # a mean of counts has decimals
            values = [fmt(v, m["format"]) for v in m["values"]]
            rows.append([m["label"], *values, fmt(m["mean"], summary_kind), fmt(m["std"], summary_kind)])
        rep.table(["metric", *comparison["labels"], "mean", "std (n-1)"], rows)
        series = [(s["label"], s["length_histograms"]) for s in inputs]
        rep.figure(
            "compare-lengths.png",
            plots.histograms("Length in words (share of each input)", _hist_panels(series, length_edges),
                             xlabel="words", shares=True, tail=True),
            "length histograms, one line per input",
        )  # fmt: skip
        with_seeds = [s for s in inputs if s["seed_rouge_l"]]
        if with_seeds:
            panel = (
                "",
                st.ROUGE_EDGES,
                [(s["label"], s["seed_rouge_l"]["histogram"]["counts"]) for s in with_seeds],
            )
            rep.figure(
                "compare-seed_rouge.png",
                plots.histograms("ROUGE-L to the most similar seed (share of each input)", [panel],
                                 xlabel="ROUGE-L F", shares=True),
                "ROUGE-L to the most similar seed, one line per input",
            )  # fmt: skip

    for k, s in enumerate(inputs):
        prefix = f"{k + 1}-" if many else ""
        figures = {}
        vn = s["verb_noun"]
        if vn["top"]:
            figures["verbs"] = plots.verb_noun_sunburst(
                vn["top"], f"Top {len(vn['top'])} root verbs and their direct objects"
            )
        if not many:
            series = [(s["label"], s["length_histograms"])]
            figures["lengths"] = plots.histograms(
                "Length in words", _hist_panels(series, length_edges), xlabel="words", tail=True
            )
            if s["seed_rouge_l"]:
                panel = ("", st.ROUGE_EDGES, [(s["label"], s["seed_rouge_l"]["histogram"]["counts"])])
                figures["seed_rouge"] = plots.histograms(
                    "ROUGE-L to the most similar seed", [panel], xlabel="ROUGE-L F"
                )
        c = (s["run"] or {}).get("classification")
        if c and c["seed_margins"]:
            figures["margins"] = plots.margin_histogram(
                c["seed_margins"], c["seed_labels"], c["run_margins"], c["threshold"]
            )
        _section(rep, s, prefix, figures)
    return rep


# ---------------------------------------------------------------- entry point


async def _judge_all(
    engine, loaded: list[Loaded], inputs: list[dict], k: int, seed: int, progress: bool, close: bool
) -> None:
    """Judge every input in one event loop: an HTTP client's connections belong to the loop that
    opened them, so the backend must not meet a second loop (nor be closed from one)."""
    from .judge import judge_async

    try:
        for item, s in zip(loaded, inputs, strict=True):
            _say(progress, f"judging {min(k, s['dataset']['instances'])} instances of {item.path}")
            s["judge"] = await judge_async(engine, item.tasks, k, seed=seed, progress=progress)
    finally:
        if close:
            await engine.backend.close()


def analyze(
    paths: list[str],
    out_dir: str,
    *,
    seeds: str | None = None,
    sample: int = 2000,
    seed: int = 0,
    judge_engine=None,
    judge_k: int = 0,
    progress: bool = True,
    close_judge: bool = False,
) -> dict:
    """Analyse one or more datasets and write ``out_dir``/report.html, report.md (+ PNG figures) and
    stats.json; returns the statistics (what stats.json holds).

    ``paths``: run directories, flat or seed-schema JSONL files, Alpaca JSON files or saved Hugging
    Face datasets. ``seeds``: the seed file for ROUGE-L to the seeds (default: a run's own seed file,
    when it can be found). ``sample``: pairs for the mean pairwise ROUGE-L. ``seed``: for every random
    sample. ``judge_engine`` (a ``self_instruct.llm.engine.Engine``) and ``judge_k`` > 0: its model
    reviews ``judge_k`` sampled instances per input, all in one ``asyncio.run`` (so do not call this
    from a running event loop); ``close_judge``: close the engine's backend in that loop when done.
    Bad input raises UserError naming the path, before anything is written.
    """
    if not paths:
        raise UserError("analyze: no input given")
    if sample < 0:
        raise UserError(f"analyze: sample must be >= 0 (got {sample})")
    if judge_k < 0:
        raise UserError(f"analyze: judge sample size must be >= 0 (got {judge_k})")
    started = time.perf_counter()
    loaded = [load_input(p) for p in paths]
    # Read the seed file before the long part: a bad one fails at once.
    seed_cache = {seeds: load_seed_instructions(seeds)} if seeds is not None else {}
    labels = _labels(loaded)
    inputs, raw = [], []
    for item, label in zip(loaded, labels, strict=True):
        _say(progress, f"analysing {item.path}: {len(item.tasks)} instructions")
        s, r = _analyze_one(
            item, label, seeds=seeds, seed_cache=seed_cache, sample=sample, seed=seed, progress=progress
        )
        inputs.append(s)
        raw.append(r)
    if judge_engine is not None and judge_k > 0:
        asyncio.run(_judge_all(judge_engine, loaded, inputs, judge_k, seed, progress, close_judge))
    # Shared bins, so that the inputs' histograms overlay.
    length_edges = {
        kind: st.length_edges([r["lengths"][kind] for r in raw])
        for kind in ("instruction", "input", "output")
    }
    for s, r in zip(inputs, raw, strict=True):
        s["length_histograms"] = {
            kind: st.histogram(r["lengths"][kind], e) for kind, e in length_edges.items()
        }
    comparison = compare(inputs) if len(inputs) > 1 else None
    settings = {"seeds": seeds, "sample": sample, "seed": seed, "judge_k": judge_k if judge_engine else 0}
    report = _build_report(inputs, length_edges, comparison, settings)
    stats = {
        "version": STATS_VERSION,
        "settings": settings,
        "inputs": inputs,
        "comparison": comparison,
    }
    written = write_report(report, stats, out_dir)
    _say(progress, f"report: {written['html']} ({time.perf_counter() - started:.1f} s)")
    return stats
