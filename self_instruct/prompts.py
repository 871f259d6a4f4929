"""Prompt templates (plain text files in ``templates/``) and the functions that render and parse them.

Every prompt is a fixed few-shot prefix followed by a short target section, so a backend with a
prompt cache (llama.cpp) re-uses the prefix from one request to the next.

Parsers accept both a raw continuation (completions API: the text picks up right after the prompt)
and a chat answer (the same prompt sent as one user message: the answer may open with a sentence,
repeat the target header, or use markdown list markers and bold labels).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from .tasks import Instance

TEMPLATE_NAMES = ("bootstrap", "classify", "instances_input_first", "instances_output_first")


@cache
def template(name: str) -> str:
    return resources.files("self_instruct").joinpath("templates", f"{name}.txt").read_text(encoding="utf-8")


def template_hashes() -> dict[str, str]:
    return {n: hashlib.sha256(template(n).encode()).hexdigest()[:16] for n in TEMPLATE_NAMES}


# --------------------------------------------------------------------------- bootstrap


def render_bootstrap(instructions: list[str]) -> str:
    """Header, the in-context instructions as a numbered list, then the next number for the model."""
    lines = [template("bootstrap").rstrip("\n")]
    lines += [f"{i}. {_one_line(text)}" for i, text in enumerate(instructions, start=1)]
    lines.append(f"{len(instructions) + 1}.")
    return "\n".join(lines)


_ITEM = re.compile(r"^\s*(?:[-*+]\s+)?(?:\*\*)?(\d{1,3})\s*[.):]\s*(?:\*\*)?\s*(.*)$")
_BULLET = re.compile(r"^\s*[-*+\u2022]\s+(.*)$")
_LABEL = re.compile(r"^(?:\*\*)?(?:new\s+)?(?:task|instruction)(?:\s*\d+)?\s*:(?:\*\*)?\s*", re.IGNORECASE)


@dataclass
class ParsedList:
    items: list[str] = field(default_factory=list)
    truncated: str | None = None  # the last item of a response cut off by the token limit


def clean_instruction(text: str) -> str:
    """Whitespace collapsed, markdown and 'Task:' labels removed, first letter upper-cased (only it)."""
    text = " ".join(text.split())
    text = _LABEL.sub("", text)
    text = text.removeprefix("**").removesuffix("**").strip()  # markdown bold around the item
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    return text


def parse_instructions(
    text: str, *, first_number: int, finish_reason: str, continuation: bool, max_items: int
) -> ParsedList:
    """Split a response into new instructions.

    continuation: the text continues the prompt right after ``"{first_number}."`` (completions API).
    Text after a blank line that is not a list item ends the list (chat answers add closing remarks;
    completions stop at the blank line itself, as in the reference). A
    response cut off by the token limit keeps its complete items; the last one is returned apart.
    """
    if continuation:
        text = f"{first_number}." + text
    items: list[str] = []
    gap = False
    for line in text.splitlines():
        m = _ITEM.match(line)
        b = None if m or continuation else _BULLET.match(line)
        if m or b:
            items.append(m.group(2) if m else b.group(1))
            gap = False
        elif not line.strip():
            gap = True
        elif items:
            if gap:
                break  # text after a blank line that is no list item: the list is over
            items[-1] += " " + line.strip()
    parsed = ParsedList([clean_instruction(t) for t in items])
    if finish_reason == "length" and parsed.items:
        parsed.truncated = parsed.items.pop()
    if len(parsed.items) > max_items:
        del parsed.items[max_items:]
    return parsed


# --------------------------------------------------------------------------- classification


def render_classify(instruction: str) -> str:
    return f"{template('classify')}Task: {_one_line(instruction)}\nClassification:"


def parse_classification(text: str) -> bool | None:
    """True for a clear yes, False for a clear no, None when the answer is neither."""
    word = re.sub(r"[^a-z]", " ", text.lower()).split()
    if not word:
        return None
    if word[0] == "yes":
        return True
    if word[0] == "no":
        return False
    return None


# --------------------------------------------------------------------------- instances


def render_input_first(instruction: str) -> str:
    return f"{template('instances_input_first')}Task: {_one_line(instruction)}\nExample 1\n"


def render_output_first(instruction: str) -> str:
    return f"{template('instances_output_first')}Task: {_one_line(instruction)}\nClass label:"


_EXAMPLE_HEADER = re.compile(
    r"^\s*(?:#+\s*)?(?:\*\*)?Example\s*\d+\s*:?(?:\*\*)?\s*:?\s*$", re.IGNORECASE | re.M
)
_FIELD = r"^\s*(?:[-*]\s+)?(?:\*\*)?{name}\s*:(?:\*\*)?[ \t]*"
_INPUT = re.compile(_FIELD.format(name="Input"), re.IGNORECASE | re.M)
_OUTPUT = re.compile(_FIELD.format(name="Output"), re.IGNORECASE | re.M)
_CLASS = re.compile(_FIELD.format(name="Class label"), re.IGNORECASE | re.M)
_NEXT_TASK = re.compile(r"^\s*(?:\*\*)?Task\s*:", re.IGNORECASE | re.M)


@dataclass
class ParsedInstances:
    instances: list[Instance] = field(default_factory=list)
    unparsable: list[str] = field(default_factory=list)  # chunks with no recognisable fields
    truncated: str | None = None


def _body(text: str, *, skip_target_header: bool) -> str:
    """The part of a response that belongs to the target task: stop where a next 'Task:' starts."""
    if skip_target_header:
        # A chat answer may repeat the target's own "Task: ..." line first; drop it.
        m = _NEXT_TASK.match(text)
        if m:
            text = text[text.find("\n", m.end()) + 1 :] if "\n" in text[m.end() :] else ""
    m = _NEXT_TASK.search(text)
    return text[: m.start()] if m else text


def _collect(parsed: list[tuple[Instance | None, str]], finish_reason: str) -> ParsedInstances:
    """Sort parsed chunks into instances and unparsable text; a cut-off response loses its last chunk."""
    out = ParsedInstances()
    if finish_reason == "length" and parsed:
        out.truncated = parsed.pop()[1].strip()
    for inst, chunk in parsed:
        if inst is None:
            out.unparsable.append(chunk.strip())
        else:
            out.instances.append(inst)
    return out


def parse_input_first(text: str, *, finish_reason: str, continuation: bool) -> ParsedInstances:
    """Examples written as 'Example N' / 'Input: ...' / 'Output: ...' (no Input line: empty input)."""
    body = _body(text, skip_target_header=not continuation)
    parsed: list[tuple[Instance | None, str]] = []
    for chunk in _EXAMPLE_HEADER.split(body):
        if not chunk.strip():
            continue
        m_out = _OUTPUT.search(chunk)
        if not m_out:
            parsed.append((None, chunk))
            continue
        m_in = _INPUT.search(chunk, 0, m_out.start())
        inp = chunk[m_in.end() : m_out.start()] if m_in else ""
        parsed.append((Instance(inp.strip(), chunk[m_out.end() :].strip()), chunk))
    return _collect(parsed, finish_reason)


def parse_output_first(text: str, *, finish_reason: str, continuation: bool) -> ParsedInstances:
    """Pairs written as 'Class label: L' then 'Input: ...': the instance's output is the label."""
    if continuation:
        text = "Class label:" + text
    body = _body(text, skip_target_header=not continuation)
    starts = list(_CLASS.finditer(body))
    parsed: list[tuple[Instance | None, str]] = []
    for k, m in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(body)
        chunk = body[m.end() : end]
        m_in = _INPUT.search(chunk)
        if not m_in:
            parsed.append((None, chunk))
            continue
        parsed.append((Instance(chunk[m_in.end() :].strip(), chunk[: m_in.start()].strip()), chunk))
    return _collect(parsed, finish_reason)


def _one_line(text: str) -> str:
    return " ".join(text.split())
