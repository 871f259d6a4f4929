"""What a stage is to the executor: a step that says which requests to send next, how to apply one
answer, and what to report. Everything else (sending, applying in request order, writing, commit
markers, crash recovery, progress bars, the session record) is the executor's (``executor.py``).

A step never touches the engine's sending or the files its answers go to: it returns what it kept
and rejected, and the executor writes them. So a second executor (on a cluster) runs the same steps
unchanged: it only has to call ``next`` and ``apply`` in the same order.

The protocol, as the executor drives it:

1. ``recover`` (the executor's): records of units of work that never committed are dropped, using
   the step's ``output``, ``log`` and ``key`` (see ``Step``).
2. ``await step.start(concurrency)``: the step reads the run directory and builds its state.
3. Repeatedly ``step.next(in_flight, limit)``: the requests to send now, given how many are in flight
   and the most the executor keeps in flight. An empty list with nothing in flight ends the step;
   ``None`` ends it at once (the answers still in flight are not needed: bootstrap at its target).
   Which requests a step returns may depend on the answers applied so far and on ``in_flight``, never
   on timing, so a rerun from the cache sends the same requests.
4. ``step.apply(work, response)`` for every answer, in the order the requests were sent, failed
   ones included (the executor records those in failures.jsonl itself).
5. ``step.finish()``: the report (notes for the user, entries for the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .llm.base import Request, Response

if TYPE_CHECKING:
    from .llm.engine import Engine


@dataclass
class Work:
    """One request of a step: the unit of work it belongs to, and what ``apply`` needs besides the
    answer (the record asked about, the tasks shown in the prompt)."""

    key: str | int
    request: Request
    data: Any = None


@dataclass
class Applied:
    """What one answer changed: records for the step's output file, rejections (``store.rejection``),
    the unit's line in the step's commit log (if it has one), and how far the progress bar moves."""

    records: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    log: dict | None = None
    advance: int = 1
    failed: list[dict] = field(default_factory=list)  # set by the executor: failures.jsonl lines


@dataclass
class Report:
    """What a step tells when it ends: one-line notes for the user, entries for the manifest."""

    notes: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)


class Step:
    """The base of every step: the attributes say where its applied work goes (for writing and for
    recovery after a crash), the methods are the protocol above."""

    name: str  # the stage name: progress bar, stats, failure and rejection records
    unit: str = "item"  # what the progress bar counts
    output: str | None = None  # RunDir attribute of the records file (None: a step that asks no model)
    log: str | None = None  # RunDir attribute of a commit log, one line per applied unit (None: the
    # output lines commit their own unit, and a unit's rejections are written before its output line)
    key: str = "id"  # the field naming the unit in the output and log lines (rejections: "key")
    attempts_are_records: bool = False  # a rejection records a finished attempt (kept whether or
    # not its unit committed), not a part of an unfinished unit
    batchable: bool = False  # may go through the OpenAI Batch API (no request waits on another)
    engine: Engine | None = None  # the step's own model (the judge's other model); None: the run's

    async def start(self, concurrency: int) -> None:
        """Read the run directory (recovered) and build the step's state."""

    def next(self, in_flight: int, limit: int) -> list[Work] | None:
        return []

    def apply(self, work: Work, response: Response) -> Applied:
        raise NotImplementedError(f"step {self.name} sends no requests")

    def before_write(self, applied: list[Applied]) -> None:
        """CPU work on applied answers that can run beside the requests (in the writer's thread)."""

    def progress(self) -> tuple[int, int, dict]:
        """(done, total, extra fields) for the progress bar."""
        return 0, 0, {}

    def finish(self) -> Report:
        return Report()

    def close(self) -> None:
        """Release what ``start`` took (called however the step ended)."""
