"""``analyze``: load each PATH, compute its statistics, compare them, lay out and write the report."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from ..errors import UserError
from . import stats as st
from .compare import compare
from .compute import analyze_one
from .layout import build_report
from .load import Loaded, load_input, load_seed_instructions
from .report import write_report

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
    executor: str = "local",
    ray_address: str = "",
) -> dict:
    """Analyse one or more datasets and write ``out_dir``/report.html, report.md (+ PNG figures) and
    stats.json; returns the statistics (what stats.json holds).

    ``paths``: run directories, flat or seed-schema JSONL files, Alpaca JSON files or saved Hugging
    Face datasets. ``seeds``: the seed file for ROUGE-L to the seeds (default: a run's own seed file,
    when it can be found). ``sample``: pairs for the mean pairwise ROUGE-L. ``seed``: for every random
    sample. ``judge_engine`` (a ``self_instruct.llm.engine.Engine``) and ``judge_k`` > 0: its model
    reviews ``judge_k`` sampled instances per input, all in one ``asyncio.run`` (so do not call this
    from a running event loop); ``close_judge``: close the engine's backend in that loop when done.
    ``executor`` "ray": verb-noun parsing and ROUGE-L to the seeds run on Ray Data, on the cluster at
    ``ray_address`` (empty: a local Ray), with the same statistics.
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
    mapper = None
    if executor == "ray":
        from ..cluster.analysis import RayDataMap

        mapper = RayDataMap(ray_address, progress)
    inputs: list[dict] = []
    lengths: list[dict[str, list[int]]] = []  # word counts, by kind
    for item, label in zip(loaded, labels, strict=True):
        _say(progress, f"analysing {item.path}: {len(item.tasks)} instructions")
        s, words = analyze_one(
            item,
            label,
            seeds=seeds,
            seed_cache=seed_cache,
            sample=sample,
            seed=seed,
            progress=progress,
            mapper=mapper,
        )
        inputs.append(s)
        lengths.append(words)
    if judge_engine is not None and judge_k > 0:
        asyncio.run(_judge_all(judge_engine, loaded, inputs, judge_k, seed, progress, close_judge))
    # Shared bins, so that the inputs' histograms overlay.
    length_edges = {
        kind: st.length_edges([words[kind] for words in lengths])
        for kind in ("instruction", "input", "output")
    }
    for s, words in zip(inputs, lengths, strict=True):
        s["length_histograms"] = {kind: st.histogram(words[kind], e) for kind, e in length_edges.items()}
    comparison = compare(inputs) if len(inputs) > 1 else None
    settings = {"seeds": seeds, "sample": sample, "seed": seed, "judge_k": judge_k if judge_engine else 0}
    report = build_report(inputs, length_edges, comparison, settings)
    stats = {
        "version": STATS_VERSION,
        "settings": settings,
        "inputs": inputs,
        "comparison": comparison,
    }
    written = write_report(report, stats, out_dir)
    _say(progress, f"report: {written['html']} ({time.perf_counter() - started:.1f} s)")
    return stats
