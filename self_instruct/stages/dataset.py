"""Stage 4: assemble the dataset from the stage files (no model calls).

Writes, each through a temporary file and a rename:
- ``tasks.jsonl``: one record per machine task, seed schema (``is_classification`` and all instances);
- ``dataset.jsonl``: flat ``{"instruction", "input", "output"}``, one line per instance.
A task left with no instance is rejected here (reason ``no_instances``).
"""

from __future__ import annotations

from ..step import Report, Step
from ..store import RunDir, drop_uncommitted, rejection, write_jsonl_atomic
from .judge import instance_key, passes

STAGE = "dataset"


class DatasetStep(Step):
    """Derived from the stage files each time it runs: asks no model, so it has no requests."""

    name = STAGE
    unit = "task"

    def __init__(self, files: RunDir, min_rating: str | None = None) -> None:
        """``min_rating``: with quality.judge on, keep only instances rated this or better (an
        instance not rated yet is left out until it is), each with its rating."""
        self.files, self.min_rating = files, min_rating
        self.unrated = 0

    async def start(self, concurrency: int) -> None:
        files = self.files
        accepted = files.instructions.read()
        generated = {r["id"]: r for r in files.instances.read()}
        judged = {j["key"]: j for j in files.judgments.read()} if self.min_rating else None
        tasks, rows, empty = [], [], []
        for rec in accepted:
            gen = generated.get(rec["id"])
            if gen is None:
                continue
            if not gen["instances"]:
                empty.append(rejection(STAGE, rec["id"], "no_instances", rec["instruction"]))
                continue
            instances = gen["instances"]
            if judged is not None:
                instances, low = self._rated(rec, instances, judged)
                empty += low
                if not instances:
                    continue
            tasks.append(
                {
                    "id": rec["id"],
                    "name": rec["id"],
                    "instruction": rec["instruction"],
                    "instances": instances,
                    "is_classification": gen["is_classification"],
                }
            )
            rows += [{"instruction": rec["instruction"], **inst} for inst in instances]
        # This stage is derived and may run many times: replace its rejections instead of adding to them.
        drop_uncommitted(files.rejected, STAGE, set())
        files.rejected.append(empty)
        write_jsonl_atomic(files.tasks, tasks)
        write_jsonl_atomic(files.dataset, rows)
        self.tasks, self.pending = len(tasks), len(accepted) - len(generated)

    def _rated(self, rec: dict, instances: list[dict], judged: dict) -> tuple[list[dict], list[dict]]:
        """The instances rated min_rating or better, each with its rating, and a low_quality
        rejection for each rated worse."""
        assert self.min_rating is not None
        kept, low = [], []
        for k, inst in enumerate(instances):
            key = instance_key(rec["id"], k)
            j = judged.get(key)
            if j is None:
                self.unrated += 1
            elif passes(j["rating"], self.min_rating):
                kept.append({**inst, "rating": j["rating"]})
            else:
                text = f"{inst['input']} => {inst['output']}"
                why = {"rating": j["rating"], "judge_reason": j["reason"]}
                low.append(
                    rejection(STAGE, key, "low_quality", text, instruction=rec["instruction"], **inst, **why)
                )
        return kept, low

    def finish(self) -> Report:
        notes = []
        if self.pending:
            notes.append(
                f"{self.pending} accepted instructions have no instances yet (see failures.jsonl "
                "and the classify rejections in rejected.jsonl)"
            )
        if self.unrated:
            notes.append(f"{self.unrated} instances have no rating yet: left out of the dataset until rated")
        return Report(notes)
