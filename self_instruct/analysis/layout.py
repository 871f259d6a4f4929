"""Laying out the report: the statistics (what stats.json holds) as headings, tables and figures,
a comparison first when there are several inputs, then one section per input."""

from __future__ import annotations

from . import stats as st
from .report import Report, fmt, fmt_float, fmt_int, fmt_pct, fmt_usd

LENGTH_NAMES = {"instruction": "instructions", "input": "inputs (non-empty)", "output": "outputs (non-empty)"}


def _hist_panels(per_input: list[tuple[str, dict]], edges_by_kind: dict[str, list[float]]) -> list:
    return [
        (name, edges_by_kind[kind], [(label, h[kind]["counts"]) for label, h in per_input])
        for kind, name in LENGTH_NAMES.items()
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
    rows = []
    for kind, name in LENGTH_NAMES.items():
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

    j = run.get("judge_ratings")
    if j:
        rep.h("Judge ratings (quality.judge)", 3)
        rep.p(
            "Every instance rated by the judge on the Self-Instruct paper's scale: A valid and satisfying, "
            "B acceptable with minor imperfections, C responds with significant errors, D irrelevant or "
            f"invalid. The dataset keeps {j['min_rating'] or '?'} or better."
        )
        rows = [
            [r, fmt_int(n), fmt_pct(n / j["rated"]), "kept" if j["kept"][r] else "rejected (low_quality)"]
            for r, n in j["counts"].items()
        ]
        rep.table(["rating", "instances", "share", "in the dataset"], rows, align="lrrl")

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


def _seed_panel(inputs: list[dict]) -> tuple:
    """One histogram panel of ROUGE-L to the seeds, a series for each input that has it."""
    return ("", st.ROUGE_EDGES, [(s["label"], s["seed_rouge_l"]["histogram"]["counts"]) for s in inputs])


def _comparison_section(
    rep: Report, inputs: list[dict], comparison: dict, length_edges: dict[str, list[float]]
) -> None:
    from . import plots

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
        title = "ROUGE-L to the most similar seed (share of each input)"
        rep.figure(
            "compare-seed_rouge.png",
            plots.histograms(title, [_seed_panel(with_seeds)], xlabel="ROUGE-L F", shares=True),
            "ROUGE-L to the most similar seed, one line per input",
        )


def _figures(s: dict, length_edges: dict[str, list[float]], alone: bool) -> dict[str, bytes]:
    """One input's figures; its histograms only when it is ``alone`` (else the comparison overlays them)."""
    from . import plots

    figures = {}
    vn = s["verb_noun"]
    if vn["top"]:
        figures["verbs"] = plots.verb_noun_sunburst(
            vn["top"], f"Top {len(vn['top'])} root verbs and their direct objects"
        )
    if alone:
        series = [(s["label"], s["length_histograms"])]
        figures["lengths"] = plots.histograms(
            "Length in words", _hist_panels(series, length_edges), xlabel="words", tail=True
        )
        if s["seed_rouge_l"]:
            figures["seed_rouge"] = plots.histograms(
                "ROUGE-L to the most similar seed", [_seed_panel([s])], xlabel="ROUGE-L F"
            )
    c = (s["run"] or {}).get("classification")
    if c and c["seed_margins"]:
        figures["margins"] = plots.margin_histogram(
            c["seed_margins"], c["seed_labels"], c["run_margins"], c["threshold"]
        )
    return figures


def build_report(
    inputs: list[dict], length_edges: dict[str, list[float]], comparison: dict | None, settings: dict
) -> Report:
    """The whole report: the inputs, the comparison (several inputs), then each input's section."""
    many = len(inputs) > 1
    rep = Report("Self-Instruct data analysis" + ("" if many else f": {inputs[0]['label']}"))
    rep.p(
        "Inputs: "
        + "; ".join(f"{s['label']} = {s['path']}" for s in inputs)
        + f". Pairwise ROUGE-L over up to {settings['sample']} random pairs (seed {settings['seed']})."
    )
    if comparison is not None:
        _comparison_section(rep, inputs, comparison, length_edges)
    for k, s in enumerate(inputs):
        _section(rep, s, f"{k + 1}-" if many else "", _figures(s, length_edges, alone=not many))
    return rep
