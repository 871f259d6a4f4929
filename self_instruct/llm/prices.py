"""Built-in price estimates (USD per million tokens, prompt / completion) for the cost line.

Prices change: these are list prices as published by the providers in 2025, for estimates only.
Override them with llm.price_prompt / llm.price_completion. Models not listed (and the local
backend) are estimated at zero.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    prompt: float
    completion: float


PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-3.5-turbo-instruct": Price(1.50, 2.00),
}


def price_for(
    model: str, prompt: float = -1.0, completion: float = -1.0, table: dict[str, list[float]] | None = None
) -> Price | None:
    """The configured price when given (both >= 0), else the model's entry in the user's table, else in
    the built-in one, else None."""
    if prompt >= 0 and completion >= 0:
        return Price(prompt, completion)
    if table and model in table:
        return Price(*table[model])
    return PRICES.get(model)
