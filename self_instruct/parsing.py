"""Parse model answers into kept values and rejected parts (docs/parsing.md is the specification).

An answer is cut into consecutive *parts* that together give back the answer character for
character; each part is kept (an instruction, an instance) or rejected with a reason. That is what
"nothing is lost silently" means here, and the corpus tests check it as an identity.

Two answer shapes reach the parsers: a *continuation* (completions API: the text picks up right after
the prompt's cue) and a *chat answer* (the prompt sent as one user message: the model may add a
preamble, repeat the prompt, use markdown, number its fields and close with a remark).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .tasks import Instance

# --------------------------------------------------------------------------- lines and labels

_BULLET = r"[-*+\u2022]"
_DECOR = re.compile(rf"^[ \t]*(?:#{{1,6}}[ \t]+)?(?:{_BULLET}[ \t]+)?")
_BULLETED = re.compile(rf"^[ \t]*{_BULLET}[ \t]+")
_RULE = re.compile(r"^[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*$")
_EMPH = r"(?:\*\*|__|\*|_)?"
_WORD = r"[A-Za-z0-9][\w'/-]*"
_NAME = rf"(?P<name>[A-Za-z][\w'/-]*(?:[ \t]+{_WORD}){{0,3}})"
_LABEL = re.compile(rf"^{_EMPH}{_NAME}{_EMPH}[ \t]*:(?!//){_EMPH}[ \t]*(?P<value>.*)$")
# 'Example 2', '**Example 2:**', '### Example 2: A title' (a title holds no colon)
_HEADER = re.compile(
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

_REMARK = re.compile(
    r"^\(?(?:I hope|Hope this|Let me know|Feel free|These examples|These are|Each example|Each of these|"
    r"In each example|Note:|Note that|If you|Would you like|I can|Happy to|Enjoy|This covers|"
    r"All of these|Please let|Is there anything)",
    re.I,
)


def _blank(line: str) -> bool:
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


class _Lines:
    """An answer as lines that keep their newline, so slices of lines join back into the answer."""

    def __init__(self, text: str) -> None:
        pieces = text.split("\n")
        self.raw = [p + "\n" for p in pieces[:-1]] + [pieces[-1]]
        self.text = pieces

    def __len__(self) -> int:
        return len(self.text)

    def join(self, start: int, end: int) -> str:
        return "".join(self.raw[start:end])


# --------------------------------------------------------------------------- bootstrap

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


@dataclass
class _Seg:
    start: int  # the line the segment starts on; it runs to the next segment's start
    reason: str | None  # None: an item
    indent: int = 0
    lines: list[str] = field(default_factory=list)


def _segments_to_parts(lines: _Lines, segs: list) -> list[Part]:
    """Each segment's raw text: from its start to the next one's (blank lines go with the part before
    them; blank lines before the first segment go with it)."""
    if not segs:  # an answer of blank lines only: one part, nothing in it
        return [Part(lines.join(0, len(lines)))] if lines.join(0, len(lines)) else []
    bounds = [0] + [s.start for s in segs[1:]] + [len(lines)]
    return [Part(lines.join(bounds[k], bounds[k + 1]), s.reason) for k, s in enumerate(segs)]


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
    lines = _Lines(text)
    echo = " ".join(header.split()[:ECHO_WORDS]).lower() if header else None
    segs: list[_Seg] = []
    gap = False  # a blank line since the last non-blank one
    for i, line in enumerate(lines.text):
        if _blank(line):
            gap = gap or bool(segs) or continuation
            continue
        body = undecorate(line)
        indent = len(line) - len(line.lstrip())
        bulleted = bool(_BULLETED.match(line))
        item = _item(f"{first_number}. {line.strip()}" if i == 0 and continuation else body)
        items = [s for s in segs if s.reason is None]
        last = segs[-1] if segs else None
        if echo and echo in collapse(line).lower():
            segs.append(_Seg(i, "prompt_echo"))
        elif (item is not None or bulleted) and items and indent > items[-1].indent + 1 and not gap:
            segs.append(_Seg(i, "sub_item"))
        elif item is not None or (bulleted and not continuation):
            if last is not None and last.reason == "closing_remark":
                last.reason = "list_intro"  # text between items (a section heading) introduces them
            segs.append(_Seg(i, None, indent, [body if item is None else item]))
        elif not items:
            if last is None or last.reason != "preamble":
                segs.append(_Seg(i, "preamble"))
        elif gap:
            if last is None or last.reason != "closing_remark":
                segs.append(_Seg(i, "closing_remark"))
        elif line.rstrip().endswith(":"):
            segs.append(_Seg(i, "list_intro"))
        elif last is not None and last.reason is None:
            last.lines.append(line)  # a wrapped item
        # else: a line right after a sub-item or a rejected line belongs to that part
        gap = False
    parts = _segments_to_parts(lines, segs)
    return _sort_items(parts, segs, Echoes(shown or []), finish_reason, max_items)


class Echoes:
    """The instructions our prompt showed, to recognise a chat model repeating them: an item that is
    one of them, or starts with one (a model that glues the next shown task onto it)."""

    MIN_WORDS = 4  # a shorter shown instruction is too generic to count as a prefix

    def __init__(self, shown: list[str]) -> None:
        self.exact = {_norm(clean_instruction(t)) for t in shown}
        self.prefixes = [p.rstrip(".?!:;") for p in self.exact if len(p.split()) >= self.MIN_WORDS]

    def __contains__(self, text: str) -> bool:
        t = _norm(text)
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


# --------------------------------------------------------------------------- classification

_ANSWER_LABEL = re.compile(r"^(?:classification|answer|decision)\s*:\s*", re.I)
_STATEMENT = re.compile(r"^(?:this|it)\s+is\s+(not\s+)?a\s+classification\s+task", re.I)


def parse_classification(text: str, finish_reason: str = "stop") -> str:
    """'yes', 'no', 'truncated' (a cut-off, incomplete word) or 'ambiguous'."""
    s = undecorate(text.strip())
    s = re.sub(r"^[*_`\"']+", "", s)
    s = _ANSWER_LABEL.sub("", s)
    s = re.sub(r"^[*_`\"' \t]+", "", s)
    m = re.match(r"([A-Za-z]+)(.?)", s, re.S)
    if m:
        word, after = m.group(1).lower(), m.group(2)
        complete = bool(after) or finish_reason != "length"
        if word in ("yes", "no"):
            return word if complete else "truncated"
        if finish_reason == "length" and not after and ("yes".startswith(word) or "no".startswith(word)):
            return "truncated"
    st = _STATEMENT.match(s)
    if st:
        return "no" if st.group(1) else "yes"
    return "ambiguous"


# --------------------------------------------------------------------------- instances


def _example_starts(lines: _Lines, lo: int, hi: int, *, class_labels: bool) -> list[int]:
    """Line indices in [lo, hi) where an example (input-first) or class (output-first) begins."""
    starts: list[int] = []
    first_name = None  # the name of the first label of the current example's input
    seen_output = False
    for i in range(lo, hi):
        line = lines.text[i]
        if _blank(line):
            continue
        body = undecorate(line)
        lab = label(line)
        if class_labels:
            if lab and lab.name in CLASS_NAMES:
                starts.append(i)
            continue
        if _HEADER.match(body.strip()):
            starts.append(i)
            first_name, seen_output = None, False
            continue
        if lab is None:
            if not starts:
                starts.append(i)
            continue
        new = False
        if lab.name in OUTPUT_NAMES:
            new = seen_output
            seen_output = True
        elif lab.name in INPUT_NAMES or lab.full == first_name:
            new = seen_output
        if new or not starts:
            starts.append(i)
            seen_output = lab.name in OUTPUT_NAMES
            first_name = None
        if first_name is None and lab.name not in OUTPUT_NAMES | EXPLAIN_NAMES and not seen_output:
            first_name = lab.full
    return starts


_PREAMBLE = re.compile(
    r"^(?:Sure|Certainly|Here are|Here is|Here's|Below are|Of course|Okay|OK|Absolutely|Great|"
    r"I'd be happy|I would be happy|The following)\b",
    re.I,
)


def _parse_instances(
    text: str, finish_reason: str, continuation: bool, output_first: bool, task: str | None
) -> Parsed:
    lines = _Lines(text)
    n = len(lines)
    segs, lo = ([], 0) if continuation else _opening(lines, output_first, task)
    # A 'Task:' line after the examples starts the next task: it and what follows are not ours.
    end = next((i for i in range(lo, n) if (lab := label(lines.text[i])) and lab.name in TASK_NAMES), n)
    starts = _example_starts(lines, lo, end, class_labels=output_first)
    # A continuation starts inside the first example. When all it wrote before its first example or
    # class is blank (it broke the line after our cue, e.g. to write 'Class label: Fact' again), that
    # example starts the answer and the blank lines go with it: they are no empty example.
    if continuation and (not starts or _has_text(lines, 0, starts[0])):
        starts.insert(0, 0)
    if starts and _has_text(lines, lo, starts[0]):
        segs.append(_Seg(lo, "preamble"))
    elif not starts and lo < end:
        segs.append(_Seg(lo, "unparsable"))
    bounds = [*starts, end]
    examples: list[tuple[_Seg, int]] = []  # (segment, end of its data)
    for k, s in enumerate(starts):
        e = bounds[k + 1]
        if k == len(starts) - 1:
            e = _closing_remark(lines, s, e) or e
        x = next((i for i in range(s + 1, e) if (lb := label(lines.text[i])) and lb.name in EXPLAIN_NAMES), e)
        seg = _Seg(s, None)
        segs.append(seg)
        examples.append((seg, x))
        if x < e:
            segs.append(_Seg(x, "explanation"))
        if e < bounds[k + 1]:
            segs.append(_Seg(e, "closing_remark"))
    if end < n:
        segs.append(_Seg(end, "next_task"))
    parts = _segments_to_parts(lines, segs)
    out = Parsed(parts=parts)
    last = examples[-1][0] if examples else None
    data = {id(seg): x for seg, x in examples}
    for part, seg in zip(parts, segs, strict=False):
        if seg.reason is None:
            # A cut-off answer loses its last example, unless a remark or a next task follows it.
            if finish_reason == "length" and seg is last and segs[-1] is seg:
                seg.reason = "truncated"
            else:
                x = data[id(seg)]
                inst = (
                    _output_first_instance(lines, seg.start, x, continuation and seg.start == 0)
                    if output_first
                    else _input_first_instance(lines, seg.start, x)
                )
                if inst is not None:
                    out.kept.append(inst)
                    continue
                seg.reason = "unparsable"
        part.reason, part.text = seg.reason, collapse(part.raw)
        out.rejected.append((part.reason, part.text))
    return out


def _has_text(lines: _Lines, lo: int, hi: int) -> bool:
    """Whether lines [lo, hi) hold more than blank lines and rules (which never make a part alone)."""
    return any(not _blank(t) for t in lines.text[lo:hi])


def _opening(lines: _Lines, output_first: bool, task: str | None) -> tuple[list[_Seg], int]:
    """A chat answer's opening up to its first example or field (a preamble, our 'Task:' echoed),
    and the line where the content starts."""
    segs: list[_Seg] = []
    for i, line in enumerate(lines.text):
        if _blank(line):
            continue
        body = undecorate(line).strip()
        lab = label(line)
        if lab and lab.name in TASK_NAMES:
            if task is not None and not _same_task(lab.value, task):
                break  # another task: the answer holds no examples of ours before it
            segs.append(_Seg(i, "prompt_echo"))
            continue
        if output_first:
            if lab and lab.name in CLASS_NAMES | INPUT_NAMES:
                break
        elif _HEADER.match(body) or (lab and not _PREAMBLE.match(body)):
            break
        if not segs or segs[-1].reason != "preamble":
            segs.append(_Seg(i, "preamble"))
    else:
        return [], 0  # no example and no field anywhere: the answer is one unparsable part
    return segs, i


def _closing_remark(lines: _Lines, s: int, e: int) -> int | None:
    """The line where a closing remark starts inside the last example, if there is one."""
    for i in range(s + 1, e):
        if (
            not _blank(lines.text[i])
            and _blank(lines.text[i - 1])
            and _REMARK.match(undecorate(lines.text[i]))
        ):
            return i
    return None


def _value_lines(lines: _Lines, lo: int, hi: int, first_value: str | None) -> str:
    """The text of a field: its first line's value, then the following lines as written (a content
    label among them loses its markdown: '**Email:**' reads 'Email:')."""
    rows = [first_value] if first_value is not None else []
    for i in range(lo, hi):
        line = lines.text[i]
        lab = label(line) if line[:1] in "*_-#+ \t\u2022" else None
        rows.append(lab.plain() if lab else line)
    while rows and _blank(rows[-1]):  # a trailing markdown rule separates, it is not content
        rows.pop()
    return "\n".join(r.rstrip() for r in rows).strip()


def _input_first_instance(lines: _Lines, s: int, e: int) -> Instance | None:
    i = s
    if _HEADER.match(undecorate(lines.text[s]).strip()):
        i += 1
    found = next(
        ((k, lab) for k in range(i, e) if (lab := label(lines.text[k])) and lab.name in OUTPUT_NAMES), None
    )
    if found is None:
        return None
    out_at, out_label = found
    output = _value_lines(lines, out_at + 1, e, out_label.value)
    return Instance(_input_text(lines, i, out_at), output)


def _input_text(lines: _Lines, i: int, end: int) -> str:
    """The input in lines [i, end): a leading 'Input:' label removed (other labels stay), and the
    words for "no input" read as ''."""
    while i < end and _blank(lines.text[i]):
        i += 1
    first = label(lines.text[i]) if i < end else None
    if first and first.name in INPUT_NAMES:
        inp = _value_lines(lines, i + 1, end, first.value)
    else:
        inp = _value_lines(lines, i, end, None)
    return "" if empty_input(inp) else inp


# The cue our output-first prompt writes before each label (templates/instances_output_first.txt).
_CLASS_CUE = re.compile(rf"^{_EMPH}class[ \t]+label(?:[ \t]*\d+)?{_EMPH}[ \t]*:{_EMPH}[ \t]*", re.I)


def bare_label(value: str) -> str:
    """A class label as kept: our 'Class label:' cue removed where the model repeats it as part of the
    label (a continuation of '... Class label:' that starts 'Class label: Fact', or '**Class label:**
    Fact' as a JSON value), and bold around it removed. Any other name before a colon stays."""
    return unbold(_CLASS_CUE.sub("", value.strip(), count=1))


def _output_first_instance(lines: _Lines, s: int, e: int, continued: bool) -> Instance | None:
    if continued:
        value, i = lines.text[s].strip(), s + 1
    else:
        lab = label(lines.text[s])
        value, i = (lab.value if lab else lines.text[s].strip()), s + 1
    value = bare_label(value)
    if not value:  # the label sits on the next non-blank line
        while i < e and _blank(lines.text[i]):
            i += 1
        if i >= e:
            return None
        value, i = bare_label(undecorate(lines.text[i])), i + 1
    return Instance(_input_text(lines, i, e), value)


def _same_task(written: str, task: str) -> bool:
    """Whether a 'Task:' line restates our target: chat models repeat it loosely (a word changed,
    the final period dropped), so most of its words are enough."""
    a, b = set(_norm(written).split()), set(_norm(task).split())
    return bool(a) and len(a & b) >= 0.6 * max(len(a), len(b))


def _norm(text: str) -> str:
    return collapse(unbold(text)).lower()


def parse_input_first(
    text: str, *, finish_reason: str, continuation: bool, task: str | None = None
) -> Parsed:
    """Examples written as 'Example N' / input / 'Output: ...'; see docs/parsing.md.

    ``task``: the target instruction, to tell our prompt echoed back from a next task."""
    return _parse_instances(text, finish_reason, continuation, False, task)


def parse_output_first(
    text: str, *, finish_reason: str, continuation: bool, task: str | None = None
) -> Parsed:
    """Classes written as 'Class label: L' then an input of that label; see docs/parsing.md."""
    return _parse_instances(text, finish_reason, continuation, True, task)
