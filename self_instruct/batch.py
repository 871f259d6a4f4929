"""Grids of runs from one plan file, a shared response cache, and one merged dataset at the end.

A plan (TOML):

    name = "grid"                 # optional; default: the plan file's name
    output_dir = "outputs"        # optional

    [base]                        # settings every run shares: the keys of a run config
    target = 200
    [base.llm]
    base_url = "http://localhost:8000/v1"

    [matrix]                      # every combination is one run
    seed = [1, 2, 3]
    "llm.model" = ["model-a", "model-b"]

    [merge]
    similarity_threshold = 0.7    # the ROUGE-L rule applied across runs

Runs go to ``<output_dir>/<name>/runs/<label>`` and share ``<output_dir>/<name>/cache``. Running the
same plan again resumes every run (finished ones cost nothing) and merges again. The merge keeps a
task only if its instruction passes the novelty rule against every task kept before it (runs in
plan order), and records each dropped one with the neighbour that blocked it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from . import config as config_mod
from .errors import RunIncomplete, UserError, os_error
from .novelty import NoveltyIndex
from .pipeline import STAGES, run
from .store import RunDir, read_jsonl, rejection, write_json_atomic, write_jsonl_atomic, writer_lock

PLAN_KEYS = {"name", "output_dir", "base", "matrix", "merge"}
RESERVED = {"run_name", "output_dir", "llm.cache_dir"}


@dataclass
class Plan:
    name: str
    root: Path
    base: dict[str, object]
    matrix: dict[str, list]
    threshold: float

    def runs(self) -> list[tuple[str, dict[str, object]]]:
        """(label, overrides) for every combination, in a stable order."""
        keys = list(self.matrix)
        out: list[tuple[str, dict[str, object]]] = []
        seen: list[tuple[str, dict]] = []
        for values in itertools.product(*(self.matrix[k] for k in keys)):
            combo = dict(zip(keys, values, strict=True))
            label = "_".join(f"{k}-{v}" for k, v in combo.items()) or "run"
            label = re.sub(r"[^A-Za-z0-9._=-]+", "-", label)[:120]
            clash = next((other for lbl, other in seen if lbl == label), None)
            if clash is not None:
                raise UserError(
                    f"[matrix]: the combinations {clash} and {combo} both get the run directory name "
                    f"'{label}'; make their values differ in letters or digits"
                )
            seen.append((label, combo))
            out.append((label, {**self.base, **combo}))
        return out


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    table = config_mod.read_toml(path, "plan file")
    if not table.get("base") and not table.get("matrix"):
        raise UserError(
            f"{path}: the plan sets no run: give the settings every run shares under [base], "
            "and the values to combine under [matrix]"
        )
    unknown = set(table) - PLAN_KEYS
    if unknown:
        raise UserError(
            f"{path}: unknown plan key '{sorted(unknown)[0]}' (expected {', '.join(sorted(PLAN_KEYS))})"
        )
    try:
        base = config_mod.flatten(table.get("base", {}))
    except UserError as e:
        raise UserError(f"{path}: [base]: {e}") from None
    matrix = table.get("matrix", {})
    if not isinstance(matrix, dict):
        raise UserError(f"{path}: [matrix] must be a table")
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: [matrix] '{key}' must be a non-empty list")
    for key in set(base) | set(matrix):
        if key in RESERVED:
            raise UserError(f"{path}: '{key}' is set by the batch itself")
        if key not in config_mod.settings():
            raise UserError(f"{path}: unknown setting '{key}'")
    merge = table.get("merge", {})
    threshold = merge.get("similarity_threshold", 0.7) if isinstance(merge, dict) else None
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise UserError(f"{path}: [merge] similarity_threshold must be a number between 0 and 1")
    try:
        name = config_mod.plain_name(str(table.get("name", path.stem)), "name")
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    root = Path(str(table.get("output_dir", "outputs"))) / name
    return Plan(name, root, base, matrix, float(threshold))


def _run_config(plan: Plan, label: str, overrides: dict, where: str) -> config_mod.Config:
    values: dict[str, object] = {
        k: v if isinstance(v, (str, list)) else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in overrides.items()
    }
    values.update(
        {"output_dir": str(plan.root / "runs"), "run_name": label, "llm.cache_dir": str(plan.root / "cache")}
    )
    try:
        return config_mod.load_config(None, values)
    except UserError as e:
        raise UserError(f"{where}: run '{label}': {e}") from None


def merge(plan: Plan, labels: list[str]) -> dict:
    """One dataset from every run, without instructions that repeat another run's (ROUGE-L rule)."""
    index = NoveltyIndex(plan.threshold)
    tasks, rows, dropped = [], [], []
    for label in labels:
        files = RunDir.open(plan.root / "runs" / label)
        for task in read_jsonl(files.tasks):
            blocker, _ = index.admit(task["instruction"])
            if blocker is not None:
                near = {"instruction": blocker.text, "score": blocker.score}
                key = f"{label}/{task['id']}"
                dropped.append(
                    rejection("merge", key, "too_similar", task["instruction"], run=label, most_similar=near)
                )
                continue
            tasks.append({**task, "id": f"{label}/{task['id']}"})
            rows += [{"instruction": task["instruction"], **inst} for inst in task["instances"]]
    out = RunDir(plan.root / "merged")
    sources = {}
    for label in labels:
        manifest = RunDir.open(plan.root / "runs" / label).read_manifest(strict=True)
        if manifest:
            sources[label] = manifest
    # The merged directory is a run directory too: export reads it, and its card lists every source.
    write_json_atomic(out.manifest, {"tool": "self-instruct", "merged_from": labels, "sources": sources})
    write_jsonl_atomic(out.tasks, tasks)
    write_jsonl_atomic(out.dataset, rows)
    write_jsonl_atomic(out.rejected.path, dropped)
    return {"tasks": len(tasks), "instances": len(rows), "dropped": len(dropped), "dir": str(out.root)}


def _run_task(cfg: config_mod.Config, backend, command: str) -> Exception | None:
    """One run of the plan, in a Ray task: the run's own error (a UserError or RunIncomplete) comes
    back as a value, so the driver raises it as it is, not wrapped by Ray."""
    try:
        run(cfg, STAGES, backend=backend, command=command)
    except (UserError, RunIncomplete) as e:
        return e
    return None


def _submit(configs: list[tuple[str, config_mod.Config]], backend, command: str, announce):
    """Start the runs whose executor is ray, each as a Ray task (the run itself works in that task,
    with the local executor); returns a function that waits for them all and raises the first error
    in plan order. The run directories must lie where every node sees them (shared storage)."""
    from .cluster import connect, cpu_share, worker_options

    ray = connect(configs[0][1].ray.address)
    task = ray.remote(_run_task).options(num_cpus=cpu_share(ray, len(configs)), **worker_options())
    refs = []
    for label, cfg in configs:
        if announce:
            announce(f"{label} (a Ray task)")
        local = cfg.model_copy(update={"executor": "local", "progress": False})
        refs.append(task.remote(local, backend, command))

    def wait() -> None:
        errors = ray.get(refs)
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    return wait


def summary_rows(plan: Plan, labels: list[str]) -> list[dict]:
    rows = []
    for label in labels:
        files = RunDir.open(plan.root / "runs" / label)
        m, totals = files.read_manifest(strict=True), files.totals()
        c = m["counts"]
        rows.append(
            {
                "run": label,
                "accepted": c["machine_instructions"],
                "tasks": c["dataset_tasks"],
                "instances": c["dataset_rows"],
                "rejected": {
                    f"{stage}:{reason}": n
                    for stage, reasons in c["rejected_by_stage"].items()
                    for reason, n in reasons.items()
                },
                "failures": c["failures"],
                "tokens": totals.tokens,
                "cost_usd": totals.cost_usd,
                "seconds": m.get("wall_seconds", 0),
            }
        )
    return rows


def run_plan(plan_path: str | Path, *, backend=None, announce=None) -> dict:
    """Run (or resume) every run of the plan, then merge; returns the summary written to summary.json."""
    plan = load_plan(plan_path)
    runs = plan.runs()
    configs = [
        (label, _run_config(plan, label, ov, str(plan_path))) for label, ov in runs
    ]  # validate all first
    try:
        # One batch per plan directory at a time (each run also locks its own directory).
        with writer_lock(plan.root, f"batch {plan_path}"):
            command = f"batch {plan_path}"
            on_ray = [(label, cfg) for label, cfg in configs if cfg.executor == "ray"]
            tasks = _submit(on_ray, backend, command, announce) if on_ray else None
            for label, cfg in configs:
                if cfg.executor != "ray":
                    if announce:
                        announce(label)
                    run(cfg, STAGES, backend=backend, command=command)
            if tasks is not None:
                tasks()
            labels = [label for label, _ in configs]
            merged = merge(plan, labels)
            summary = {"plan": str(plan_path), "runs": summary_rows(plan, labels), "merged": merged}
            write_json_atomic(plan.root / "summary.json", summary)
    except OSError as e:
        raise os_error(e) from None
    return summary


def format_summary(summary: dict) -> str:
    head = (
        f"{'run':<32} {'accepted':>8} {'tasks':>6} {'instances':>9} {'failed':>6} {'tokens':>9} "
        f"{'cost $':>8} {'time s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in summary["runs"]:
        lines.append(
            f"{r['run'][:32]:<32} {r['accepted']:>8} {r['tasks']:>6} {r['instances']:>9} {r['failures']:>6} "
            f"{r['tokens']:>9} {r['cost_usd']:>8.4f} {r['seconds']:>7.1f}"
        )
        top = sorted(r["rejected"].items(), key=lambda kv: -kv[1])[:5]
        if top:
            lines.append("    rejected: " + ", ".join(f"{k} {n}" for k, n in top))
    m = summary["merged"]
    lines.append(
        f"merged: {m['tasks']} tasks, {m['instances']} instances; {m['dropped']} tasks dropped as "
        f"too similar to another run's -> {m['dir']}"
    )
    return "\n".join(lines)
