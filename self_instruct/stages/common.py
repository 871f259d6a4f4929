"""What every stage shares: the context its step runs in."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..llm.base import Request
from ..llm.engine import Engine
from ..quality.decontaminate import BenchmarkIndex
from ..step import Work
from ..store import RunDir, as_rejection


@dataclass
class StageContext:
    cfg: Config
    engine: Engine | None  # None for stages that call no model
    files: RunDir
    structured: bool = False  # answers are JSON of each stage's schema (llm.structured, resolved)
    contamination: BenchmarkIndex | None = None  # quality.decontaminate's benchmarks, when set

    def contaminated(self, texts: list[str]) -> list[dict | None]:
        """For each text, the details of its benchmark hit (for a rejection record), or None."""
        if self.contamination is None:
            return [None] * len(texts)
        return [None if hit is None else hit.details() for hit in self.contamination.check(texts)]

    @property
    def api_is_completions(self) -> bool:
        return self.engine is not None and self.engine.backend.api == "completions"


def attempts(files: RunDir, stage: str) -> Counter:
    """How many unusable answers each item of a stage that asks again has had so far (its finished
    attempts), from rejected.jsonl: a resumed run asks what an uninterrupted one asks."""
    return Counter(r["key"] for r in map(as_rejection, files.rejected.read()) if r["stage"] == stage)


class Rounds:
    """Questions asked again after an unusable answer (classify, judge), in rounds: one per attempt
    number, in the items' order, so the same questions go out in the same order however the work is
    split into sessions. An item whose request failed in this session waits for the next one."""

    def __init__(self, key: str, max_attempts: int) -> None:
        self.key, self.max_attempts = key, max_attempts
        self.todo: deque[dict] = deque()
        self.round_no = 0  # the attempt number of the round being asked
        self.failed: set[str] = set()  # sent in this session and not answered usably yet

    def next(
        self,
        items: list[dict],
        done: set[str],
        attempts: Counter,
        in_flight: int,
        limit: int,
        request: Callable[[dict], Request],
    ) -> list[Work]:
        """The requests to send now: a new round once the last one is all answered."""
        if not self.todo and not in_flight:
            undecided = [r for r in items if r[self.key] not in done and r[self.key] not in self.failed]
            round_no = min((attempts[r[self.key]] for r in undecided), default=None)
            if round_no is not None and round_no < self.max_attempts:
                self.round_no = round_no
                self.todo.extend(r for r in undecided if attempts[r[self.key]] == round_no)
                self.failed.update(r[self.key] for r in self.todo)
        out: list[Work] = []
        while self.todo and in_flight + len(out) < limit:
            item = self.todo.popleft()
            out.append(Work(item[self.key], request(item), item))
        return out
