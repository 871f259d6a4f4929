"""Stage 4: assemble the dataset from the stage files (no model calls).

Writes, each through a temporary file and a rename:
- ``tasks.jsonl``: one record per machine task, seed schema (``is_classification`` and all instances);
- ``dataset.jsonl``: flat ``{"instruction", "input", "output"}``, one line per instance.
A task left with no instance is rejected here (reason ``no_instances``).
"""

from __future__ import annotations

from ..step import Report, Step
from ..store import RunDir, drop_uncommitted, rejection, write_jsonl_atomic

STAGE = "dataset"


class DatasetStep(Step):
    """Derived from the stage files each time it runs: asks no model, so it has no requests."""

    name = STAGE
    unit = "task"

    def __init__(self, files: RunDir) -> None:
        self.files = files

    async def start(self, concurrency: int) -> None:
        files = self.files
        accepted = files.instructions.read()
        generated = {r["id"]: r for r in files.instances.read()}
        tasks, rows, empty = [], [], []
        for rec in accepted:
            gen = generated.get(rec["id"])
            if gen is None:
                continue
            if not gen["instances"]:
                empty.append(rejection(STAGE, rec["id"], "no_instances", rec["instruction"]))
                continue
            tasks.append(
                {
                    "id": rec["id"],
                    "name": rec["id"],
                    "instruction": rec["instruction"],
                    "instances": gen["instances"],
                    "is_classification": gen["is_classification"],
                }
            )
            rows += [{"instruction": rec["instruction"], **inst} for inst in gen["instances"]]
        # This stage is derived and may run many times: replace its rejections instead of adding to them.
        drop_uncommitted(files.rejected, STAGE, set())
        files.rejected.append(empty)
        write_jsonl_atomic(files.tasks, tasks)
        write_jsonl_atomic(files.dataset, rows)
        self.tasks, self.pending = len(tasks), len(accepted) - len(generated)

    def finish(self) -> Report:
        if not self.pending:
            return Report()
        return Report(
            [
                f"{self.pending} accepted instructions have no instances yet (see failures.jsonl "
                "and the classify rejections in rejected.jsonl)"
            ]
        )
