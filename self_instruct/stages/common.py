"""What every stage shares: the context its step runs in."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..llm.engine import Engine
from ..quality.decontaminate import BenchmarkIndex
from ..store import RunDir


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
