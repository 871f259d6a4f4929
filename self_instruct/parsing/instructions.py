"""A bootstrap answer: new instructions continuing our numbered list, as text or as the JSON object
``{"instructions": [...]}``. See docs/parsing.md, "Bootstrap"."""

from __future__ import annotations

import re

from .jsonlist import parse_json_list
from .lines import (
    BULLETED,
    Lines,
    Parsed,
    Seg,
    collapse,
    is_blank,
    normalized,
    segments_to_parts,
    unbold,
    undecorate,
)

_ITEM = re.compile(r"^(?:\*\*|__)?(\d{1,3})[ \t]*[.):](?:\*\*|__)?(?:[ \t]+|$)(.*)$")
_BOLD = r"(?:\*\*|__)?"
_TASK_WORD = r"(?:new[ \t]+)?(?:task|instruction)"
# 'Task 10: ...', '**Task 11:** ...', 'Instruction 12. ...', 'Task 13 - ...', or '### Task 14' alone on
# its line with the instruction below: a model asked to continue a list of tasks often labels its items.
_LABELLED_ITEM = re.compile(
    rf"^(?P<open>{_BOLD}){_TASK_WORD}[ \t]*#?\d{{1,3}}(?P<close>{_BOLD})[ \t]*"
    rf"(?:[.):\u2013\u2014-](?P<after>{_BOLD})(?:[ \t]+|$)|$)(?P<text>.*)$",
    re.I,
)
# 'Task:', 'New task:', '**Instruction:**', 'Task 9:', 'Task 9.', '**Task 9**:' before an item's text
_TASK_LABEL = re.compile(
    rf"^{_BOLD}{_TASK_WORD}(?:[ \t]*#?\d{{1,3}}{_BOLD}[ \t]*[:.)]|{_BOLD}[ \t]*:){_BOLD}[ \t]*", re.I
)
_BOLD_TITLE = re.compile(r"^(?:\*\*[^*]+:\*\*|\*\*[^*]+\*\*[ \t]*:)[ \t]+(?=\S)")
_NUMBERED = re.compile(r"^\d{1,3}[.)]\s+")
ECHO_WORDS = 8  # a line holding this many first words of our header repeats it


def clean_instruction(text: str) -> str:
    """Whitespace collapsed, markdown and 'Task:' labels and bold titles removed, first letter raised."""
    text = collapse(text)
    text = _NUMBERED.sub("", text)  # a JSON string may still carry its list number
    text = _TASK_LABEL.sub("", text)
    text = _BOLD_TITLE.sub("", text)
    text = unbold(text)
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    return text


def _item(body: str) -> str | None:
    """The text of a list item, numbered ('10. ...') or labelled ('Task 10: ...'); None for any other line.

    A labelled line is an item of its own, not a wrapped line of the item before it: in a continuation,
    'Task 10: ...' right after item 9 is a new instruction."""
    m = _ITEM.match(body)
    if m:
        return m.group(2)
    m = _LABELLED_ITEM.match(body)
    if m is None:
        return None
    if m.group("open") and not (m.group("close") or m.group("after")):
        return m.group("open") + m.group("text")  # '**Task 9: A title**': the bold runs on past the label
    return m.group("text")


def parse_instructions(
    text: str,
    *,
    first_number: int,
    finish_reason: str,
    continuation: bool,
    max_items: int,
    header: str = "",
    shown: list[str] | None = None,
) -> Parsed:
    """New instructions from a numbered (or, in chat, bulleted) list; see docs/parsing.md.

    ``header`` and ``shown``: our prompt's header and in-context instructions, to recognise them
    when a chat model repeats them."""
    lines = Lines(text)
    echo = " ".join(header.split()[:ECHO_WORDS]).lower() if header else None
    segs: list[Seg] = []
    gap = False  # a blank line since the last non-blank one
    for i, line in enumerate(lines.text):
        if is_blank(line):
            gap = gap or bool(segs) or continuation
            continue
        body = undecorate(line)
        indent = len(line) - len(line.lstrip())
        bulleted = bool(BULLETED.match(line))
        item = _item(f"{first_number}. {line.strip()}" if i == 0 and continuation else body)
        items = [s for s in segs if s.reason is None]
        last = segs[-1] if segs else None
        if echo and echo in collapse(line).lower():
            segs.append(Seg(i, "prompt_echo"))
        elif (item is not None or bulleted) and items and indent > items[-1].indent + 1 and not gap:
            segs.append(Seg(i, "sub_item"))
        elif item is not None or (bulleted and not continuation):
            if last is not None and last.reason == "closing_remark":
                last.reason = "list_intro"  # text between items (a section heading) introduces them
            segs.append(Seg(i, None, indent, [body if item is None else item]))
        elif not items:
            if last is None or last.reason != "preamble":
                segs.append(Seg(i, "preamble"))
        elif gap:
            if last is None or last.reason != "closing_remark":
                segs.append(Seg(i, "closing_remark"))
        elif line.rstrip().endswith(":"):
            segs.append(Seg(i, "list_intro"))
        elif last is not None and last.reason is None:
            last.lines.append(line)  # a wrapped item
        # else: a line right after a sub-item or a rejected line belongs to that part
        gap = False
    parts = segments_to_parts(lines, segs)
    return _sort_items(parts, segs, Echoes(shown or []), finish_reason, max_items)


class Echoes:
    """The instructions our prompt showed, to recognise a chat model repeating them: an item that is
    one of them, or starts with one (a model that glues the next shown task onto it)."""

    MIN_WORDS = 4  # a shorter shown instruction is too generic to count as a prefix

    def __init__(self, shown: list[str]) -> None:
        self.exact = {normalized(clean_instruction(t)) for t in shown}
        self.prefixes = [p.rstrip(".?!:;") for p in self.exact if len(p.split()) >= self.MIN_WORDS]

    def __contains__(self, text: str) -> bool:
        t = normalized(text)
        return t in self.exact or any(t.startswith(p) for p in self.prefixes)


def _sort_items(parts, segs, echoes, finish_reason, max_items) -> Parsed:
    """Decide each item: kept, or echo / list intro / over the cap / truncated."""
    out = Parsed(parts=parts)
    kept = 0
    for k, (part, seg) in enumerate(zip(parts, segs, strict=False)):
        if seg.reason is not None:
            part.text = collapse(part.raw)
            out.rejected.append((seg.reason, part.text))
            continue
        text = clean_instruction(" ".join(seg.lines))
        nxt = segs[k + 1] if k + 1 < len(segs) else None
        if text in echoes:
            reason = "prompt_echo"
        elif finish_reason == "length" and nxt is None:
            reason = "truncated"
        elif text.endswith(":") and nxt is not None and nxt.reason is None and nxt.indent <= seg.indent:
            reason = "list_intro"
        elif kept >= max_items:
            reason = "over_cap"
        else:
            reason = None
        part.reason, part.text = reason, text
        if reason:
            out.rejected.append((reason, text))
        else:
            kept += 1
            out.kept.append(text)
    return out


def parse_instructions_json(text: str, *, max_items: int, shown: list[str] | None = None) -> Parsed | None:
    """Instructions from ``{"instructions": [...]}``; None when the answer is no JSON at all."""
    return parse_json_list(
        text,
        "instructions",
        lambda v: clean_instruction(v) if isinstance(v, str) and v.strip() else None,
        str,
        # A cut-off instruction reads like a cut-off text item.
        lambda tail: clean_instruction(tail.strip().removeprefix('"')),
        max_items=max_items,
        is_echo=Echoes(shown or []).__contains__,
    )
