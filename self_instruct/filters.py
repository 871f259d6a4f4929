"""Keep/reject rules. Each filter returns None to keep, or a short reason string to reject.

Reasons are stable identifiers: they are written to rejected.jsonl and counted in the manifest.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

from .tasks import Instance

# Things a text-only model cannot do or produce (the method's list plus the media words Alpaca added).
BLACKLIST = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
)
_BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)

MIN_WORDS = 4
MAX_WORDS = 150

InstructionFilter = Callable[[str], str | None]


def too_short_or_long(text: str) -> str | None:
    n = len(text.split())
    if n < MIN_WORDS:
        return "too_short"
    if n > MAX_WORDS:
        return "too_long"
    return None


def blacklisted_keyword(text: str) -> str | None:
    m = _BLACKLIST_RE.search(text)
    return f"keyword:{m.group(1).lower()}" if m else None


def write_a_program(text: str) -> str | None:
    return "write_a_program" if text.lower().startswith("write a program") else None


def bad_first_character(text: str) -> str | None:
    if not text:
        return "empty"
    if text[0] in string.punctuation:
        return "starts_with_punctuation"
    if not text[0].isascii():
        return "starts_with_non_ascii"
    return None


INSTRUCTION_FILTERS: tuple[InstructionFilter, ...] = (
    bad_first_character,
    too_short_or_long,
    blacklisted_keyword,
    write_a_program,
)


def check_instruction(text: str, filters: Sequence[InstructionFilter] = INSTRUCTION_FILTERS) -> str | None:
    """The first reason any filter gives, or None when the instruction passes them all."""
    for f in filters:
        reason = f(text)
        if reason:
            return reason
    return None


def check_instance(inst: Instance) -> str | None:
    """Per-instance rules of the method."""
    if not inst.output.strip():
        return "empty_output"
    if inst.input.strip() == inst.output.strip():
        return "input_equals_output"
    if inst.input.strip().endswith(":") or inst.output.strip().endswith(":"):
        return "ends_with_colon"
    return None


def filter_instances(
    instances: Sequence[Instance], max_instances: int = 5
) -> tuple[list[Instance], list[tuple[Instance, str]]]:
    """Apply the instance rules to one task's instances: (kept, [(rejected, reason)]).

    Order matters and follows the method: per-instance rules, then a task whose instances give
    different outputs for the same non-empty input loses all its instances (the task is ambiguous), then exact
    duplicates, then the cap.
    """
    kept: list[Instance] = []
    rejected: list[tuple[Instance, str]] = []
    for inst in instances:
        reason = check_instance(inst)
        if reason:
            rejected.append((inst, reason))
        else:
            kept.append(inst)
    # Only non-empty inputs: a no-input task ("Suggest a name for...") rightly has many outputs.
    outputs_by_input: dict[str, set[str]] = {}
    for inst in kept:
        if not inst.input.strip():
            continue
        outputs_by_input.setdefault(inst.input.strip(), set()).add(inst.output.strip())
    if any(len(outs) > 1 for outs in outputs_by_input.values()):
        rejected.extend((inst, "conflicting_outputs") for inst in kept)
        return [], rejected
    unique: list[Instance] = []
    seen: set[tuple[str, str]] = set()
    for inst in kept:
        key = (inst.input.strip(), inst.output.strip())
        if key in seen:
            rejected.append((inst, "duplicate_instance"))
        elif len(unique) >= max_instances:
            rejected.append((inst, "over_cap"))
        else:
            seen.add(key)
            unique.append(inst)
    return unique, rejected
