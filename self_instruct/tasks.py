"""Task and Instance records, and loading seed files with line-numbered validation.

Two on-disk shapes are accepted:
- the reference seed schema, one task a line:
  ``{"id", "name", "instruction", "instances": [{"input", "output"}], "is_classification"}``
- flat records, one instance a line: ``{"instruction", "input", "output"}``; lines that share an
  instruction become one task with several instances.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError


@dataclass(frozen=True)
class Instance:
    input: str
    output: str

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "output": self.output}


@dataclass
class Task:
    instruction: str
    instances: list[Instance] = field(default_factory=list)
    is_classification: bool | None = None
    id: str = ""
    name: str = ""

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "instruction": self.instruction,
            "instances": [i.to_dict() for i in self.instances],
            "is_classification": self.is_classification,
        }


def _need_str(obj: dict, key: str, where: str, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise UserError(f"{where}: '{key}' must be a string")
    if not allow_empty and not value.strip():
        raise UserError(f"{where}: '{key}' is empty")
    return value


def _parse_instances(obj: dict, where: str) -> list[Instance]:
    raw = obj.get("instances")
    if not isinstance(raw, list):
        raise UserError(f"{where}: 'instances' must be a list")
    out = []
    for k, inst in enumerate(raw):
        here = f"{where}: instances[{k}]"
        if not isinstance(inst, dict):
            raise UserError(f"{here} must be an object")
        out.append(
            Instance(
                input=_need_str(inst, "input", here, allow_empty=True),
                output=_need_str(inst, "output", here, allow_empty=True),
            )
        )
    return out


def load_tasks(path: str | Path) -> list[Task]:
    """Load a seed file in either accepted shape; raise UserError naming ``file:line`` on bad input.

    A seed-schema task that repeats an earlier instruction is an error: generation needs each
    seed once."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: seed file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object")
        records.append((where, obj))
    tasks, _ = tasks_from_records(records, allow_repeats=False)
    if not tasks:
        raise UserError(f"{path}: no tasks in seed file")
    return tasks


def tasks_from_records(records: Iterable[tuple[str, dict]], *, allow_repeats: bool) -> tuple[list[Task], int]:
    """Tasks from records in either accepted shape, each given with where it was read (``file:line``,
    named by any error). ``allow_repeats`` (analysis: a repeat is data, not an error): a seed-schema
    task that repeats an earlier instruction adds its instances to the first; returns the tasks and
    how many repeats there were."""
    repeats = 0
    tasks: list[Task] = []
    by_instruction: dict[str, Task] = {}
    for where, obj in records:
        instruction = _need_str(obj, "instruction", where).strip()
        if "instances" in obj:
            is_cls = obj.get("is_classification")
            if is_cls is not None and not isinstance(is_cls, bool):
                raise UserError(f"{where}: 'is_classification' must be true or false")
            first = by_instruction.get(instruction)
            if first is not None:
                if not allow_repeats:
                    raise UserError(f"{where}: duplicate instruction (first seen as task {first.id})")
                repeats += 1
                first.instances.extend(_parse_instances(obj, where))
                continue
            task = Task(
                instruction=instruction,
                instances=_parse_instances(obj, where),
                is_classification=is_cls,
                id=str(obj.get("id", f"seed_task_{len(tasks)}")),
                name=str(obj.get("name", "")),
            )
            tasks.append(task)
            by_instruction[instruction] = task
        elif "output" in obj:
            inst = Instance(
                input=_need_str(obj, "input", where, allow_empty=True) if "input" in obj else "",
                output=_need_str(obj, "output", where, allow_empty=True),
            )
            owner = by_instruction.get(instruction)
            if owner is None:
                owner = Task(instruction=instruction, id=f"seed_task_{len(tasks)}")
                tasks.append(owner)
                by_instruction[instruction] = owner
            owner.instances.append(inst)
        else:
            raise UserError(f"{where}: expected 'instances' (seed schema) or 'output' (flat schema)")
    return tasks, repeats


def packaged_seed_file() -> Path:
    """Our 175 seed tasks as installed with the package (``seeds/seed_tasks.jsonl`` is their source
    in the repository; a test keeps the two identical)."""
    from importlib import resources

    return Path(str(resources.files("self_instruct").joinpath("seeds", "seed_tasks.jsonl")))
