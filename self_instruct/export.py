"""Exports users can train on, with a dataset card, from one or more run directories.

Formats:
- ``jsonl``: flat ``{"instruction", "input", "output"}`` lines (the method's release format);
- ``alpaca``: a JSON list of the same records;
- ``openai-chat``: ``{"messages": [system?, user, assistant]}`` lines for chat fine-tuning;
- ``prompt-completion``: ``{"prompt", "completion"}`` rendered through one of five templates, chosen
  at random (seeded) per example, since the method varied its templates: the first two of each list
  are the formats of the method's own fine-tuning release, the other three are ours;
- ``hf``: a ``datasets.DatasetDict`` saved with ``save_to_disk``, plus one parquet file per split;
- ``parquet``: one parquet file per split.

Everything is written into a temporary directory next to ``out`` and renamed into place at the end,
so a failed export leaves nothing half-written. A line of a run file that cannot be read (a torn last
line, a line that is not a JSON object) is left out, and named in the card and to the caller, never
dropped silently; the run directories are only read.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .store import LenientReader, RunDir, Unread, first_unread
from .tasks import load_tasks

FORMATS = ("jsonl", "alpaca", "openai-chat", "prompt-completion", "hf", "parquet")

# Prompt templates for the prompt-completion format; {instruction} and {input}. The first two of each
# (the blank-line form and the "Task: / Input: / Output:" form) are the method's release formats;
# the other three are our own.
PROMPT_TEMPLATES_WITH_INPUT = (
    "{instruction}\n\n{input}\n\n",
    "Task: {instruction}\nInput: {input}\nOutput:",
    "Instruction: {instruction}\n\nInput:\n{input}\n\nResponse:",
    "{instruction}\n\nHere is the input:\n{input}\n\nAnswer:",
    "Follow the instruction using the given input.\n\nInstruction: {instruction}\nInput: {input}\n\n",
)
PROMPT_TEMPLATES_NO_INPUT = (
    "{instruction}\n\n",
    "Task: {instruction}\nOutput:",
    "Instruction: {instruction}\n\nResponse:",
    "{instruction}\n\nAnswer:",
    "Follow the instruction.\n\nInstruction: {instruction}\n\n",
)

_FIELD_LABEL = re.compile(r"^[A-Z][A-Za-z ]{0,30}:\s+(?=\S)")


@dataclass
class ExportOptions:
    format: str = "jsonl"
    test_size: float = 0.0  # share of instructions (not instances) that go to the test split
    seed: int = 0
    include_seeds: bool = False
    dedupe: bool = True
    max_per_instruction: int = 0  # 0: keep all
    system: str = ""  # system message for openai-chat
    strip_field_label: bool = False  # prompt-completion: drop a lone leading "Field:" label from inputs
    overwrite: bool = False


def load_records(run_dirs: list[str], opts: ExportOptions) -> tuple[list[dict], list[dict], list[Unread]]:
    """All instances of the given runs as flat records (with provenance), the runs' manifests, and
    the lines of their dataset files (tasks.jsonl, else dataset.jsonl) that could not be read."""
    records: list[dict] = []
    manifests: list[dict] = []
    read = LenientReader()
    seed_files: list[str] = []
    for run_dir in run_dirs:
        files = RunDir.open(run_dir)
        manifest = files.read_manifest(strict=True)
        manifests.append(manifest)
        files.require_dataset()  # a run with no dataset yet is refused, by name
        for row in files.task_records(read):
            for inst in row["instances"]:
                records.append(
                    {
                        "instruction": row["instruction"],
                        "input": inst["input"],
                        "output": inst["output"],
                        "is_classification": row.get("is_classification"),
                        "source": f"{Path(run_dir).name}/{row['id']}",
                        "rating": inst.get("rating"),  # quality.judge's, when the run was judged
                    }
                )
        seed_file = manifest.get("seed_file", {}).get("path")
        if opts.include_seeds and seed_file and seed_file not in seed_files:
            seed_files.append(seed_file)
    for seed_file in seed_files:
        for task in load_tasks(seed_file):
            for inst in task.instances:
                records.append(
                    {
                        "instruction": task.instruction,
                        "input": inst.input,
                        "output": inst.output,
                        "is_classification": task.is_classification,
                        "source": f"seed/{task.id}",
                        "rating": None,
                    }
                )
    if not records:
        raise UserError(f"{', '.join(run_dirs)}: no instances to export{first_unread(read.unread)}")
    return records, manifests, read.unread


def select(records: list[dict], opts: ExportOptions) -> list[dict]:
    """Exact duplicates dropped and the per-instruction cap applied, order kept."""
    out: list[dict] = []
    seen: set[tuple[str, str, str]] = set()
    per: dict[str, int] = {}
    for r in records:
        key = (r["instruction"], r["input"], r["output"])
        if opts.dedupe and key in seen:
            continue
        if opts.max_per_instruction and per.get(r["instruction"], 0) >= opts.max_per_instruction:
            continue
        seen.add(key)
        per[r["instruction"]] = per.get(r["instruction"], 0) + 1
        out.append(r)
    return out


def split(records: list[dict], opts: ExportOptions) -> dict[str, list[dict]]:
    """Train/test by instruction, so no instruction has instances on both sides."""
    if opts.test_size <= 0:
        return {"train": records}
    instructions = sorted({r["instruction"] for r in records})
    random.Random(opts.seed).shuffle(instructions)
    n_test = max(1, round(len(instructions) * opts.test_size))
    test = set(instructions[:n_test])
    return {
        "train": [r for r in records if r["instruction"] not in test],
        "test": [r for r in records if r["instruction"] in test],
    }


def strip_label(text: str) -> str:
    """'Sentence: The cat sat.' -> 'The cat sat.' when the input is one labelled line."""
    if "\n" in text.strip():
        return text
    return _FIELD_LABEL.sub("", text, count=1)


def render(record: dict, opts: ExportOptions, rng: random.Random) -> dict:
    ins, inp, out = record["instruction"], record["input"], record["output"]
    if opts.format == "openai-chat":
        user = f"{ins}\n\n{inp}" if inp.strip() else ins
        messages = [{"role": "system", "content": opts.system}] if opts.system else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": out}]
        return {"messages": messages}
    if opts.format == "prompt-completion":
        if opts.strip_field_label:
            inp = strip_label(inp)
        if inp.strip():
            prompt = rng.choice(PROMPT_TEMPLATES_WITH_INPUT).format(instruction=ins, input=inp)
        else:
            prompt = rng.choice(PROMPT_TEMPLATES_NO_INPUT).format(instruction=ins)
        return {"prompt": prompt, "completion": " " + out if not prompt.endswith(("\n", " ")) else out}
    return {"instruction": ins, "input": inp, "output": out}


def _words(text: str) -> int:
    return len(text.split())


def _ratings(rows: list[dict]) -> list[str]:
    """The judge's ratings of the instances (quality.judge), when any were rated."""
    counts = Counter(r["rating"] for r in rows if r.get("rating"))
    if not counts:
        return []
    spread = ", ".join(f"{k} {counts[k]}" for k in sorted(counts))
    unrated = len(rows) - sum(counts.values())
    return [f"- rated by the judge (A best, D worst): {spread}; not rated: {unrated}"]


def dataset_card(
    splits: dict[str, list[dict]],
    manifests: list[dict],
    opts: ExportOptions,
    runs: list[str],
    unread: list[Unread],
) -> str:
    """README.md in the Hugging Face card style: counts, lengths, model and parameters, provenance,
    and the lines of the runs' files that could not be read."""
    all_rows = [r for rows in splits.values() for r in rows]
    n = len(all_rows)
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    instructions = {r["instruction"] for r in all_rows}
    cls = {r["instruction"] for r in all_rows if r["is_classification"]}

    def lengths(key: str) -> str:
        vals = [_words(r[key]) for r in all_rows if r[key].strip()]
        if not vals:
            return "-"
        return f"{statistics.mean(vals):.1f} / {statistics.median(vals):g}"

    lines = [
        "---",
        "language:",
        "- en",
        "task_categories:",
        "- text-generation",
        f"size_categories:\n- {size}",
        "tags:",
        "- self-instruct",
        "- synthetic",
        "---",
        "",
        "# Self-Instruct dataset",
        "",
        f"Generated with self-instruct from {len(runs)} run(s): {', '.join(Path(r).name for r in runs)}.",
        f"Export format: `{opts.format}`.",
        "",
        "## Counts",
        "",
        "| split | instances | instructions |",
        "|---|---:|---:|",
    ]
    for name, rows in splits.items():
        lines.append(f"| {name} | {len(rows)} | {len({r['instruction'] for r in rows})} |")
    lines += [
        "",
        f"- instances: {n}",
        f"- instructions: {len(instructions)} ({len(cls)} classification tasks)",
        f"- instances with empty input: {sum(1 for r in all_rows if not r['input'].strip())}",
        f"- from seed tasks: {sum(1 for r in all_rows if r['source'].startswith('seed/'))}",
        *_ratings(all_rows),
        "",
        "## Lengths in words (mean / median)",
        "",
        f"- instruction: {lengths('instruction')}",
        f"- input (non-empty): {lengths('input')}",
        f"- output: {lengths('output')}",
        "",
        "## Generation",
        "",
    ]
    described = []
    for run, m in zip(runs, manifests, strict=True):
        # A merged batch directory describes each of its source runs.
        described += list(m["sources"].items()) if "sources" in m else [(run, m)]
    for run, m in described:
        cfg = m.get("config", {})
        backend = m.get("backend") or {}
        b, c, i = cfg.get("bootstrap", {}), cfg.get("classify", {}), cfg.get("instances", {})
        lines += [
            f"### {Path(run).name}",
            "",
            f"- model: `{backend.get('model', '?')}` "
            f"({backend.get('name', '?')} backend, {backend.get('api', '?')} API)",
            f"- random seed: {m.get('random_seed', '?')}; target: {cfg.get('target', '?')} instructions",
            f"- bootstrap: temperature {b.get('temperature')}, top_p {b.get('top_p')}, presence_penalty "
            f"{b.get('presence_penalty')}, max_tokens {b.get('max_tokens')}, ROUGE-L threshold "
            f"{b.get('similarity_threshold')}",
            f"- classify: max_tokens {c.get('max_tokens')}, temperature {c.get('temperature')}",
            f"- instances: temperature {i.get('temperature')}, presence_penalty {i.get('presence_penalty')}, "
            f"max_tokens {i.get('max_tokens_input_first')} (input-first) / "
            f"{i.get('max_tokens_output_first')} (output-first), at most {i.get('max_instances')} per task",
            f"- seed tasks: `{m.get('seed_file', {}).get('path', '?')}` "
            f"(sha256 {m.get('seed_file', {}).get('sha256', '?')[:16]})",
            f"- prompt templates (sha256): {json.dumps(m.get('templates_sha256', {}))}",
            f"- packages: {json.dumps(m.get('packages', {}))}",
            f"- created {m.get('created', '?')}, updated {m.get('updated', '?')}",
            "",
        ]
    lines += [
        "## Caveats",
        "",
        "Machine-generated data: instructions, inputs and outputs were written by the model above and",
        "filtered by rules (length, keywords, ROUGE-L novelty, instance checks), not reviewed by people.",
        "",
    ]
    if unread:
        # A run killed mid-write, or a damaged file: the export holds every other line of it.
        lines += ["## Lines not read", "", *(f"- {u}" for u in unread), ""]
    return "\n".join(lines)


def _write_split(fmt: str, name: str, rows: list[dict], tmp: Path) -> None:
    if fmt == "alpaca":
        (tmp / f"{name}.json").write_text(
            json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
    elif fmt in ("jsonl", "openai-chat", "prompt-completion"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (tmp / f"{name}.jsonl").write_text(text, encoding="utf-8")


def export(
    run_dirs: list[str],
    out: str,
    opts: ExportOptions,
    push_to_hub: str = "",
    on_unread: Callable[[Unread], None] | None = None,
) -> dict:
    """Write the export and its card into ``out``; returns the counts per split. ``on_unread`` is
    told each line of a run file that could not be read (the card lists them too)."""
    if opts.format not in FORMATS:
        raise UserError(f"--format: unknown format '{opts.format}' (choose from {', '.join(FORMATS)})")
    if not 0 <= opts.test_size < 1:
        raise UserError("--test-size: must be at least 0 and below 1")
    if push_to_hub and opts.format != "hf":
        raise UserError("--push-to-hub: needs --format hf")
    out_path = Path(out)
    if out_path.exists() and not (out_path.is_dir() and not any(out_path.iterdir())) and not opts.overwrite:
        raise UserError(f"{out_path}: already exists (use --overwrite to replace it)")
    records, manifests, unread = load_records(run_dirs, opts)
    if on_unread is not None:
        for u in unread:
            on_unread(u)
    splits = split(select(records, opts), opts)
    rng = random.Random(opts.seed)
    rendered = {name: [render(r, opts, rng) for r in rows] for name, rows in splits.items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        if opts.format in ("hf", "parquet"):
            import datasets
            from datasets import Dataset, DatasetDict

            datasets.disable_progress_bars()  # the export is quick; keep the terminal for our own line
            dd = DatasetDict({name: Dataset.from_list(rows) for name, rows in rendered.items()})
            if opts.format == "hf":
                dd.save_to_disk(str(tmp))
            for name, ds in dd.items():
                ds.to_parquet(str(tmp / f"{name}.parquet"))
        else:
            for name, rows in rendered.items():
                _write_split(opts.format, name, rows, tmp)
        (tmp / "README.md").write_text(
            dataset_card(splits, manifests, opts, run_dirs, unread), encoding="utf-8"
        )
        if out_path.exists():
            old = out_path.with_name(f".{out_path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_path.rename(old)
            tmp.rename(out_path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if push_to_hub:
        from datasets import load_from_disk

        load_from_disk(str(out_path)).push_to_hub(push_to_hub)  # pragma: no cover - needs the network
    return {name: len(rows) for name, rows in splits.items()}
