"""What every text parser shares: lines, markdown decoration, field labels, and the parts an answer
is cut into (each kept or rejected with a reason; together they give the answer back whole)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BULLET = r"[-*+\u2022]"
_DECOR = re.compile(rf"^[ \t]*(?:#{{1,6}}[ \t]+)?(?:{_BULLET}[ \t]+)?")
BULLETED = re.compile(rf"^[ \t]*{_BULLET}[ \t]+")
_RULE = re.compile(r"^[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*$")
EMPH = r"(?:\*\*|__|\*|_)?"
_WORD = r"[A-Za-z0-9][\w'/-]*"
_NAME = rf"(?P<name>[A-Za-z][\w'/-]*(?:[ \t]+{_WORD}){{0,3}})"
_LABEL = re.compile(rf"^{EMPH}{_NAME}{EMPH}[ \t]*:(?!//){EMPH}[ \t]*(?P<value>.*)$")
# 'Example 2', '**Example 2:**', '### Example 2: A title' (a title holds no colon)
HEADER = re.compile(
    r"^(?:\*\*|__)?example[ \t]*(?:\d*[ \t]*[:.]?|\d+[ \t]*[:.)\u2013-][ \t]*[^:]*?)"
    r"[ \t]*(?:\*\*|__)?[ \t]*[:.]?[ \t]*$",
    re.I,
)

INPUT_NAMES = {"input"}
OUTPUT_NAMES = {"output", "expected output"}
CLASS_NAMES = {"class label", "label", "class"}
EXPLAIN_NAMES = {"explanation", "reason", "reasoning", "rationale", "justification"}
TASK_NAMES = {"task"}

EMPTY_INPUTS = {"", "none", "n/a", "na", "no input", "nothing", "-", "empty", "<noinput>", "noinput"}

REMARK = re.compile(
    r"^\(?(?:I hope|Hope this|Let me know|Feel free|These examples|These are|Each example|Each of these|"
    r"In each example|Note:|Note that|If you|Would you like|I can|Happy to|Enjoy|This covers|"
    r"All of these|Please let|Is there anything)",
    re.I,
)


def is_blank(line: str) -> bool:
    return not line.strip() or bool(_RULE.match(line))


def undecorate(line: str) -> str:
    """The line without indentation, heading marks and one list bullet."""
    m = _DECOR.match(line)  # every part of it is optional: it always matches
    return line[m.end() :] if m else line


@dataclass(frozen=True)
class Label:
    name: str  # lower case, whitespace collapsed, without a trailing number ("input 2" -> "input")
    full: str  # the name as written, lower case ("sentence 1")
    value: str
    written: str = ""  # the name as written

    def plain(self) -> str:
        """The label line without markdown: 'Email: ...' for '- **Email:** ...'."""
        return f"{self.written}: {self.value}".rstrip()


def label(line: str) -> Label | None:
    """The field label a line starts with (docs/parsing.md, "Field labels"), or None."""
    m = _LABEL.match(undecorate(line).rstrip())
    if not m or len(m.group("name")) > 30:
        return None
    full = " ".join(m.group("name").lower().split())
    name = re.sub(r"[ \t]*\d+$", "", full)
    return Label(name, full, unbold(m.group("value").strip()), " ".join(m.group("name").split()))


def unbold(value: str) -> str:
    """Bold or italic markers around a whole one-line value, or left over from a label, removed."""
    for mark in ("**", "__"):
        n = value.count(mark)
        if n == 2 and value.startswith(mark) and value.endswith(mark) and len(value) > 4:
            return value[2:-2].strip()
        if n == 1 and value.endswith(mark):
            return value[:-2].strip()
        if n == 1 and value.startswith(mark):
            return value[2:].strip()
    return value


def empty_input(value: str) -> bool:
    """An input written as nothing: '', 'None', 'N/A', '(none)', '**N/A.**', ..."""
    return unbold(value.strip()).strip("\"'`[]()").rstrip(".").strip().lower() in EMPTY_INPUTS


def collapse(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- parts


@dataclass
class Part:
    """A slice of an answer: kept (``reason`` None) or rejected with a reason."""

    raw: str
    reason: str | None = None
    text: str = ""  # what a rejection record shows: the cleaned item, or the raw text collapsed


@dataclass
class Parsed:
    """What an answer gave: kept values in order, rejected (reason, text) in order, and the parts."""

    kept: list = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)


class Lines:
    """An answer as lines that keep their newline, so slices of lines join back into the answer."""

    def __init__(self, text: str) -> None:
        pieces = text.split("\n")
        self.raw = [p + "\n" for p in pieces[:-1]] + [pieces[-1]]
        self.text = pieces

    def __len__(self) -> int:
        return len(self.text)

    def join(self, start: int, end: int) -> str:
        return "".join(self.raw[start:end])


@dataclass
class Seg:
    start: int  # the line the segment starts on; it runs to the next segment's start
    reason: str | None  # None: an item
    indent: int = 0
    lines: list[str] = field(default_factory=list)


def segments_to_parts(lines: Lines, segs: list) -> list[Part]:
    """Each segment's raw text: from its start to the next one's (blank lines go with the part before
    them; blank lines before the first segment go with it)."""
    if not segs:  # an answer of blank lines only: one part, nothing in it
        return [Part(lines.join(0, len(lines)))] if lines.join(0, len(lines)) else []
    bounds = [0] + [s.start for s in segs[1:]] + [len(lines)]
    return [Part(lines.join(bounds[k], bounds[k + 1]), s.reason) for k, s in enumerate(segs)]


def normalized(text: str) -> str:
    return collapse(unbold(text)).lower()
