"""A run's budget: ``llm.max_cost`` (USD) and ``llm.max_tokens_total``, over all its sessions.

What a run has spent is read from its usage.jsonl when a session starts (answered requests' tokens
and cost, and the estimated prompt tokens of requests a killed session left unanswered, which the
server may have billed), so the budget holds across kills and resumes. Before a request that is not
in the cache goes out, its worst case (the estimated prompt tokens plus its max_tokens) is reserved;
a request whose worst case would take spent + reserved past a limit is not sent. The executor then
stops asking for more, applies what is in flight, and ends the session with ``BudgetReached``: exit
status 3, naming the setting. The same command with a larger budget resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class BudgetReached(Exception):
    """The next request could take the run past its budget."""


@dataclass
class Budget:
    max_cost: float = 0.0  # USD; 0: no limit
    max_tokens: int = 0  # prompt + completion tokens; 0: no limit
    spent_cost: float = 0.0
    spent_tokens: int = 0
    _reserved: dict[int, tuple[int, float]] = field(default_factory=dict)

    def refuse(self, ticket: int, tokens: int, cost: float) -> str | None:
        """Reserve a request's worst case (``tokens``, ``cost``) under ``ticket``; or, when it does
        not fit, the one-line reason naming the setting (nothing reserved)."""
        held_tokens = sum(t for t, _ in self._reserved.values())
        held_cost = sum(c for _, c in self._reserved.values())
        if self.max_tokens and self.spent_tokens + held_tokens + tokens > self.max_tokens:
            return (
                f"the budget llm.max_tokens_total = {self.max_tokens} is reached: {self.spent_tokens} tokens "
                f"spent, and the next request may take up to {tokens} more"
            )
        if self.max_cost and self.spent_cost + held_cost + cost > self.max_cost:
            return (
                f"the budget llm.max_cost = ${self.max_cost:g} is reached: ${self.spent_cost:.4f} spent, and "
                f"the next request may cost up to ${cost:.4f} more"
            )
        self._reserved[ticket] = (tokens, cost)
        return None

    def settle(self, ticket: int, tokens: int = 0, cost: float = 0.0) -> None:
        """The request under ``ticket`` ended: its reservation is replaced by what it spent."""
        if self._reserved.pop(ticket, None) is not None:
            self.spent_tokens += tokens
            self.spent_cost += cost


def spent(usage_totals: dict) -> tuple[int, float, int]:
    """(tokens, cost, estimated prompt tokens of requests left unanswered by a kill) of a run, from
    ``manifest.usage_counts`` over all its sessions."""
    tokens = cost = unanswered = 0.0
    for c in usage_totals.values():
        tokens += c.get("prompt_tokens", 0) + c.get("completion_tokens", 0)
        cost += c.get("cost_usd", 0.0)
        unanswered += c.get("unanswered_prompt_tokens_est", 0)
    return int(tokens), float(cost), int(unanswered)
