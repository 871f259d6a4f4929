"""An instances answer: examples of one task, input-first (``Example N`` / input / ``Output:``) or
output-first (``Class label:`` then an input), as text or as the JSON object ``{"examples": [...]}``.
See docs/parsing.md, "Instances"."""

from __future__ import annotations

import re

from ..tasks import Instance
from .jsonlist import parse_json_list
from .lines import (
    CLASS_NAMES,
    EMPH,
    EXPLAIN_NAMES,
    HEADER,
    INPUT_NAMES,
    OUTPUT_NAMES,
    REMARK,
    TASK_NAMES,
    Lines,
    Parsed,
    Seg,
    collapse,
    empty_input,
    is_blank,
    label,
    normalized,
    segments_to_parts,
    unbold,
    undecorate,
)


def _example_starts(lines: Lines, lo: int, hi: int, *, class_labels: bool) -> list[int]:
    """Line indices in [lo, hi) where an example (input-first) or class (output-first) begins."""
    starts: list[int] = []
    first_name = None  # the name of the first label of the current example's input
    seen_output = False
    for i in range(lo, hi):
        line = lines.text[i]
        if is_blank(line):
            continue
        body = undecorate(line)
        lab = label(line)
        if class_labels:
            if lab and lab.name in CLASS_NAMES:
                starts.append(i)
            continue
        if HEADER.match(body.strip()):
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
    lines = Lines(text)
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
        segs.append(Seg(lo, "preamble"))
    elif not starts and lo < end:
        segs.append(Seg(lo, "unparsable"))
    bounds = [*starts, end]
    examples: list[tuple[Seg, int]] = []  # (segment, end of its data)
    for k, s in enumerate(starts):
        e = bounds[k + 1]
        if k == len(starts) - 1:
            e = _closing_remark(lines, s, e) or e
        x = next((i for i in range(s + 1, e) if (lb := label(lines.text[i])) and lb.name in EXPLAIN_NAMES), e)
        seg = Seg(s, None)
        segs.append(seg)
        examples.append((seg, x))
        if x < e:
            segs.append(Seg(x, "explanation"))
        if e < bounds[k + 1]:
            segs.append(Seg(e, "closing_remark"))
    if end < n:
        segs.append(Seg(end, "next_task"))
    parts = segments_to_parts(lines, segs)
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


def _has_text(lines: Lines, lo: int, hi: int) -> bool:
    """Whether lines [lo, hi) hold more than blank lines and rules (which never make a part alone)."""
    return any(not is_blank(t) for t in lines.text[lo:hi])


def _opening(lines: Lines, output_first: bool, task: str | None) -> tuple[list[Seg], int]:
    """A chat answer's opening up to its first example or field (a preamble, our 'Task:' echoed),
    and the line where the content starts."""
    segs: list[Seg] = []
    for i, line in enumerate(lines.text):
        if is_blank(line):
            continue
        body = undecorate(line).strip()
        lab = label(line)
        if lab and lab.name in TASK_NAMES:
            if task is not None and not _same_task(lab.value, task):
                break  # another task: the answer holds no examples of ours before it
            segs.append(Seg(i, "prompt_echo"))
            continue
        if output_first:
            if lab and lab.name in CLASS_NAMES | INPUT_NAMES:
                break
        elif HEADER.match(body) or (lab and not _PREAMBLE.match(body)):
            break
        if not segs or segs[-1].reason != "preamble":
            segs.append(Seg(i, "preamble"))
    else:
        return [], 0  # no example and no field anywhere: the answer is one unparsable part
    return segs, i


def _closing_remark(lines: Lines, s: int, e: int) -> int | None:
    """The line where a closing remark starts inside the last example, if there is one."""
    for i in range(s + 1, e):
        if (
            not is_blank(lines.text[i])
            and is_blank(lines.text[i - 1])
            and REMARK.match(undecorate(lines.text[i]))
        ):
            return i
    return None


def _value_lines(lines: Lines, lo: int, hi: int, first_value: str | None) -> str:
    """The text of a field: its first line's value, then the following lines as written (a content
    label among them loses its markdown: '**Email:**' reads 'Email:')."""
    rows = [first_value] if first_value is not None else []
    for i in range(lo, hi):
        line = lines.text[i]
        lab = label(line) if line[:1] in "*_-#+ \t\u2022" else None
        rows.append(lab.plain() if lab else line)
    while rows and is_blank(rows[-1]):  # a trailing markdown rule separates, it is not content
        rows.pop()
    return "\n".join(r.rstrip() for r in rows).strip()


def _input_first_instance(lines: Lines, s: int, e: int) -> Instance | None:
    i = s
    if HEADER.match(undecorate(lines.text[s]).strip()):
        i += 1
    found = next(
        ((k, lab) for k in range(i, e) if (lab := label(lines.text[k])) and lab.name in OUTPUT_NAMES), None
    )
    if found is None:
        return None
    out_at, out_label = found
    output = _value_lines(lines, out_at + 1, e, out_label.value)
    return Instance(_input_text(lines, i, out_at), output)


def _input_text(lines: Lines, i: int, end: int) -> str:
    """The input in lines [i, end): a leading 'Input:' label removed (other labels stay), and the
    words for "no input" read as ''."""
    while i < end and is_blank(lines.text[i]):
        i += 1
    first = label(lines.text[i]) if i < end else None
    if first and first.name in INPUT_NAMES:
        inp = _value_lines(lines, i + 1, end, first.value)
    else:
        inp = _value_lines(lines, i, end, None)
    return "" if empty_input(inp) else inp


# The cue our output-first prompt writes before each label (templates/instances_output_first.txt).
_CLASS_CUE = re.compile(rf"^{EMPH}class[ \t]+label(?:[ \t]*\d+)?{EMPH}[ \t]*:{EMPH}[ \t]*", re.I)


def bare_label(value: str) -> str:
    """A class label as kept: our 'Class label:' cue removed where the model repeats it as part of the
    label (a continuation of '... Class label:' that starts 'Class label: Fact', or '**Class label:**
    Fact' as a JSON value), and bold around it removed. Any other name before a colon stays."""
    return unbold(_CLASS_CUE.sub("", value.strip(), count=1))


def _output_first_instance(lines: Lines, s: int, e: int, continued: bool) -> Instance | None:
    if continued:
        value, i = lines.text[s].strip(), s + 1
    else:
        lab = label(lines.text[s])
        value, i = (lab.value if lab else lines.text[s].strip()), s + 1
    value = bare_label(value)
    if not value:  # the label sits on the next non-blank line
        while i < e and is_blank(lines.text[i]):
            i += 1
        if i >= e:
            return None
        value, i = bare_label(undecorate(lines.text[i])), i + 1
    return Instance(_input_text(lines, i, e), value)


def _same_task(written: str, task: str) -> bool:
    """Whether a 'Task:' line restates our target: chat models repeat it loosely (a word changed,
    the final period dropped), so most of its words are enough."""
    a, b = set(normalized(written).split()), set(normalized(task).split())
    return bool(a) and len(a & b) >= 0.6 * max(len(a), len(b))


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


def parse_examples_json(text: str, *, output_first: bool, max_items: int) -> Parsed | None:
    """Instances from ``{"examples": [...]}``; None when the answer is no JSON at all. A cut-off
    example stays as written in its rejection."""

    def value(element: object) -> Instance | None:
        return _example(element, output_first)

    return parse_json_list(text, "examples", value, _show, collapse, max_items=max_items)


def _show(inst: Instance) -> str:
    return collapse(f"{inst.input} => {inst.output}")


def _example(value: object, output_first: bool) -> Instance | None:
    """One element of the examples array, read as the text parser reads the same example."""
    if not isinstance(value, dict):
        return None
    inp, out = value.get("input"), value.get("class_label" if output_first else "output")
    if not isinstance(out, str) or not isinstance(inp, str | None):
        return None
    inp = (inp or "").strip()
    output = bare_label(out) if output_first else out.strip()
    return Instance("" if empty_input(inp) else inp, output)
