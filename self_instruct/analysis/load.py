"""Read whatever the user points ``analyze`` at into one shape: a list of tasks plus, for a run
directory, its rejections, failures and manifest.

Accepted inputs:
- a run directory (``store.RunDir``: the same rule as export and view);
- a JSONL file, flat ``{"instruction", "input", "output"}`` rows or the seed schema;
- an Alpaca JSON file: one JSON list of ``{"instruction", "input", "output"}`` objects;
- a directory written by ``datasets.Dataset.save_to_disk`` (a Dataset or a DatasetDict, whose
  splits are concatenated) with ``instruction``, ``output`` and optionally ``input`` columns.

Anything else, or an input with no rows, is a UserError naming the path. JSON Lines (a run's files
too) are read with ``scan_jsonl``: a torn or unreadable line is kept in ``Loaded.unread`` for the
report and the command to name, and the rest is analysed; a readable record that is no task is bad
input, named by its line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..store import LenientReader, RunDir, Unread, first_unread, scan_jsonl_lines
from ..tasks import Instance, Task, load_tasks, tasks_from_records


@dataclass
class RunInfo:
    """What only a run directory knows."""

    rejected: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    seed_file: str | None = None  # the seed file the run was made from, when it still exists
    calibration: dict | None = None  # calibration.json: the classification threshold and seed margins
    margins: list[float] = field(default_factory=list)  # the run's classified instructions (calibrated)
    ratings: list[str] = field(default_factory=list)  # quality.judge's rating of each judged instance
    min_rating: str | None = None  # the lowest rating the run kept (judged runs)


@dataclass
class Loaded:
    path: str
    kind: str  # "run", "jsonl", "alpaca" or "hf"
    tasks: list[Task]
    run: RunInfo | None = None
    repeated: int = 0  # seed-schema tasks that repeated an earlier instruction (merged into it)
    unread: list[Unread] = field(default_factory=list)  # lines of its JSON Lines that were not read


def _group(rows: list[tuple[str, str, str]]) -> list[Task]:
    """Flat rows -> tasks, one per distinct (stripped) instruction, in order of first appearance."""
    by_instruction: dict[str, Task] = {}
    for instruction, inp, out in rows:
        key = instruction.strip()
        task = by_instruction.get(key)
        if task is None:
            task = by_instruction[key] = Task(instruction=key, id=f"task_{len(by_instruction)}")
        task.instances.append(Instance(input=inp, output=out))
    return list(by_instruction.values())


def _row(obj, where: str) -> tuple[str, str, str]:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected an object with 'instruction' and 'output'")
    values = []
    for key in ("instruction", "input", "output"):
        value = obj.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise UserError(f"{where}: '{key}' must be a string")
        values.append(value)
    if "instruction" not in obj or "output" not in obj:
        raise UserError(f"{where}: expected 'instruction' and 'output'")
    if not values[0].strip():
        raise UserError(f"{where}: 'instruction' is empty")
    return values[0], values[1], values[2]


def _load_jsonl(path: Path) -> tuple[list[Task], int, list[Unread]]:
    """The tasks of a JSON Lines file in either schema of ``load_tasks`` (seed records, flat rows),
    how many seed records repeated an earlier instruction (their instances join the first: for
    analysis a repeat is data, not an error), and the lines that could not be read."""
    numbered, unread = scan_jsonl_lines(path)
    tasks, repeats = tasks_from_records(((f"{path}:{n}", obj) for n, obj in numbered), allow_repeats=True)
    return tasks, repeats, unread


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def _load_file(path: Path) -> Loaded:
    try:
        start = path.read_bytes().lstrip()[:1]  # bytes: a JSON Lines file may hold a line of no UTF-8
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    if not start:
        raise UserError(f"{path}: empty file, nothing to analyse")
    if start == b"[":
        try:
            data = json.loads(_read_text(path))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not data:
            raise UserError(f"{path}: empty list, nothing to analyse")
        rows = [_row(obj, f"{path}: item {k}") for k, obj in enumerate(data)]
        return Loaded(str(path), "alpaca", _group(rows))
    if start == b"{" or path.suffix == ".jsonl":  # a .jsonl file whose first line is damaged too
        if path.suffix == ".json":
            try:
                data = json.loads(_read_text(path))
            except (UserError, json.JSONDecodeError):
                data = None  # JSON Lines under a .json name: read it as such below
            if isinstance(data, dict):
                raise UserError(f"{path}: a JSON object; expected a JSON list of records or JSON Lines")
        tasks, repeats, unread = _load_jsonl(path)
        return Loaded(str(path), "jsonl", tasks, repeated=repeats, unread=unread)
    raise UserError(f"{path}: neither JSON Lines nor a JSON list of records")


def _is_hf_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _load_hf(path: Path) -> Loaded:
    from ..errors import require_extra

    require_extra("hf", ("datasets",), f"analyzing the saved Hugging Face dataset {path}")
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as e:  # a broken save: the library's message, on one line
        raise UserError(f"{path}: cannot load the saved dataset ({e.__class__.__name__}: {e})") from None
    if isinstance(data, datasets.DatasetDict):
        splits = [data[name] for name in data]
        if not splits:
            raise UserError(f"{path}: the saved DatasetDict has no splits")
        data = datasets.concatenate_datasets(splits)
    columns = set(data.column_names)
    missing = {"instruction", "output"} - columns
    if missing:
        raise UserError(
            f"{path}: the saved dataset lacks column(s) {', '.join(sorted(missing))} "
            f"(it has {', '.join(sorted(columns)) or 'none'})"
        )
    if len(data) == 0:
        raise UserError(f"{path}: the saved dataset has no rows")
    instructions = data["instruction"]
    outputs = data["output"]
    inputs = data["input"] if "input" in columns else [""] * len(data)
    rows = [
        _row({"instruction": i, "input": x, "output": o}, f"{path}: row {k}")
        for k, (i, x, o) in enumerate(zip(instructions, inputs, outputs, strict=True))
    ]
    return Loaded(str(path), "hf", _group(rows))


def _find_seed_file(run_dir: Path, manifest: dict) -> str | None:
    """The run's seed file as the manifest names it, if it can still be found."""
    names = []
    seed = manifest.get("seed_file")
    if isinstance(seed, dict) and isinstance(seed.get("path"), str):
        names.append(seed["path"])
    config = manifest.get("config")
    if isinstance(config, dict) and isinstance(config.get("seed_file"), str):
        names.append(config["seed_file"])
    for name in names:
        p = Path(name)
        # Relative names were relative to where the run was started: usually the directory above
        # the output directory (outputs/<run>), else the current one.
        candidates = [p] if p.is_absolute() else [run_dir.parent.parent / p, Path.cwd() / p]
        for c in candidates:
            if c.is_file():
                return str(c)
    return None


def _load_run(files: RunDir) -> Loaded:
    path = files.root
    manifest = files.read_manifest(strict=True)
    source = files.require_dataset()
    tasks, _, unread = _load_jsonl(source)
    if not tasks:
        raise UserError(f"{source}: no task could be read{first_unread(unread)}")
    calibration = None
    if files.calibration.is_file():
        try:
            calibration = json.loads(_read_text(files.calibration))
        except json.JSONDecodeError as e:
            raise UserError(f"{files.calibration}:{e.lineno}: invalid JSON ({e.msg})") from None
    read = LenientReader()
    rejected, failures, classifications, judgments = (
        read(p)
        for p in (files.rejected.path, files.failures.path, files.classifications.path, files.judgments.path)
    )
    unread += read.unread
    run = RunInfo(
        rejected=rejected,
        failures=failures,
        manifest=manifest,
        seed_file=_find_seed_file(path, manifest),
        calibration=calibration,
        margins=[r["margin"] for r in classifications if "margin" in r],
        ratings=[str(r.get("rating")) for r in judgments],
        min_rating=(manifest.get("config", {}).get("quality") or {}).get("min_rating") if judgments else None,
    )
    return Loaded(str(path), "run", tasks, run, unread=unread)


def load_input(path: str | Path) -> Loaded:
    """Load one PATH given to ``analyze``; raises UserError naming it when it is none of the above."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    if p.is_dir():
        # A directory is a run by the one rule every reader uses (RunDir.open, which names the path
        # when it is none), unless it is a saved Hugging Face dataset, which is no run.
        if _is_hf_dir(p) and not RunDir.is_run(p):
            return _load_hf(p)
        return _load_run(RunDir.open(p))
    loaded = _load_file(p)
    if not loaded.tasks:
        raise UserError(f"{p}: no rows to analyse{first_unread(loaded.unread)}")
    return loaded


def load_seed_instructions(path: str | Path) -> list[str]:
    """The instructions of a seed file (either schema accepted by ``load_tasks``)."""
    return [t.instruction for t in load_tasks(path)]
