"""What every stage shares: the context its step runs in."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..llm.engine import Engine
from ..store import RunDir


@dataclass
class StageContext:
    cfg: Config
    engine: Engine | None  # None for stages that call no model
    files: RunDir
    structured: bool = False  # answers are JSON of each stage's schema (llm.structured, resolved)

    @property
    def api_is_completions(self) -> bool:
        return self.engine is not None and self.engine.backend.api == "completions"
