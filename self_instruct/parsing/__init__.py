"""Read model answers into kept values and rejected parts (docs/parsing.md is the specification).

An answer is cut into consecutive *parts* that together give back the answer character for
character; each part is kept (an instruction, an instance) or rejected with a reason. That is what
"nothing is lost silently" means here, and the corpus tests check it as an identity.

Two answer shapes reach the text parsers: a *continuation* (completions API: the text picks up right
after the prompt's cue) and a *chat answer* (the prompt sent as one user message: the model may add a
preamble, repeat the prompt, use markdown, number its fields and close with a remark). A structured
answer is the JSON object of the stage's schema (``structured.py``).

One module per answer kind, each with its text and its JSON parser: ``instructions`` (bootstrap),
``classification``, ``instances``; ``lines`` and ``jsonlist`` hold what they share. Every stage, and
the answer corpus, reads an answer through ``parse_answer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

from .classification import parse_classification, parse_classification_json
from .instances import bare_label, parse_examples_json, parse_input_first, parse_output_first
from .instructions import clean_instruction, parse_instructions, parse_instructions_json
from .lines import Parsed, Part

__all__ = [
    "Kind",
    "Parsed",
    "Part",
    "Reading",
    "bare_label",
    "clean_instruction",
    "parse_answer",
    "parse_classification",
    "parse_input_first",
    "parse_instructions",
    "parse_output_first",
]

Kind = Literal["bootstrap", "classify", "input_first", "output_first"]


@dataclass(frozen=True)
class Reading:
    """What an answer is read against, besides its text and finish reason."""

    continuation: bool = False  # the completions API: the answer continues our prompt
    structured: bool = False  # JSON of the stage's schema was asked for (text is still read)
    max_items: int = 7  # instructions or instances kept at most
    first_number: int = 9  # bootstrap: the number the model's first item carries
    header: str = ""  # bootstrap: our header, recognised when a chat model repeats it
    shown: tuple[str, ...] = ()  # bootstrap: the instructions the prompt showed
    task: str | None = None  # instances: the target instruction


@overload
def parse_answer(kind: Literal["classify"], text: str, finish_reason: str, how: Reading) -> str: ...


@overload
def parse_answer(
    kind: Literal["bootstrap", "input_first", "output_first"], text: str, finish_reason: str, how: Reading
) -> Parsed: ...


def parse_answer(kind: Kind, text: str, finish_reason: str, how: Reading) -> Parsed | str:
    """One answer of a stage: a classification decision ('yes', 'no', 'truncated', 'ambiguous'), or
    the instructions or instances it holds with its rejected parts. When JSON was asked for, an
    answer that is JSON is read as JSON; one that is no JSON at all (a server that ignored the
    schema) is read as text."""
    if kind == "classify":
        decision = parse_classification_json(text, finish_reason) if how.structured else None
        return decision or parse_classification(text, finish_reason)
    if kind == "bootstrap":
        if how.structured:
            parsed = parse_instructions_json(text, max_items=how.max_items, shown=list(how.shown))
            if parsed is not None:
                return parsed
        return parse_instructions(
            text,
            first_number=how.first_number,
            finish_reason=finish_reason,
            continuation=how.continuation,
            max_items=how.max_items,
            header=how.header,
            shown=list(how.shown),
        )
    output_first = kind == "output_first"
    if how.structured:
        parsed = parse_examples_json(text, output_first=output_first, max_items=how.max_items)
        if parsed is not None:
            return parsed
    read = parse_output_first if output_first else parse_input_first
    return read(text, finish_reason=finish_reason, continuation=how.continuation, task=how.task)
