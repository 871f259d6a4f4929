"""What the JSON parsers share: an answer's JSON found inside a fence or not, and the elements of its
array read one by one, so that a cut-off answer keeps every element written out in full.

Each answer kind's module turns those elements into its values (``parse_json_list``), so every
element ends up kept or rejected (``over_cap``, ``unparsable``, ``prompt_echo``, ``truncated``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TypeVar

from .lines import Parsed, Part, collapse

T = TypeVar("T")  # a kept value: an instruction (str) or an instance

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S | re.I)


def unfence(text: str) -> str:
    m = _FENCE.match(text)
    return m.group(1) if m else text


def looks_like_json(text: str) -> bool:
    return unfence(text).lstrip().startswith("{")


def _elements(text: str, key: str) -> tuple[list, str | None]:
    """The elements of the answer's array, and the raw rest when the JSON is cut off (else None).

    A complete answer is read with json.loads. A cut-off one (the token limit) keeps every array
    element that was written out in full; what follows them is returned as the truncated tail."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, list):
            raise ValueError(f"no '{key}' list")
        return value, None
    m = re.search(r'"' + re.escape(key) + r'"\s*:\s*\[', text)
    if not m:
        raise ValueError(f"no '{key}' list")
    decoder = json.JSONDecoder()
    pos = m.end()
    out: list = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos < len(text) and text[pos] in "]}":
            raise ValueError("invalid JSON")  # complete but malformed: not a cut-off answer
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return out, text[pos:]
        out.append(value)
        pos = end


def parse_json_list(
    text: str,
    key: str,
    value: Callable[[object], T | None],
    show: Callable[[T], str],
    cut: Callable[[str], str],
    *,
    max_items: int,
    is_echo: Callable[[str], bool] = lambda text: False,
) -> Parsed | None:
    """The values of the array under ``key`` of a JSON answer; None when the answer is no JSON at all.

    ``value`` reads one element (None: the wrong shape), ``show`` writes a kept value for a
    rejection record, ``cut`` reads a cut-off tail. Every array element ends up kept or rejected
    (``over_cap``, ``unparsable`` for an element of the wrong shape, ``prompt_echo`` for a value
    that ``is_echo`` says repeats the prompt, ``truncated`` for a cut-off tail); an answer that is
    JSON but has no usable list is one ``unparsable`` part."""
    if not looks_like_json(text):
        return None
    out = Parsed(parts=[])
    try:
        values, tail = _elements(unfence(text), key)
    except ValueError:
        out.rejected.append(("unparsable", collapse(text)))
        out.parts.append(Part(text, "unparsable", collapse(text)))
        return out
    for element in values:
        kept = value(element)
        if kept is None:
            reason, text_ = "unparsable", collapse(json.dumps(element, ensure_ascii=False))
        elif isinstance(kept, str) and is_echo(kept):
            reason, text_ = "prompt_echo", kept
        elif len(out.kept) >= max_items:
            reason, text_ = "over_cap", show(kept)
        else:
            out.kept.append(kept)
            out.parts.append(Part(json.dumps(element, ensure_ascii=False)))
            continue
        out.rejected.append((reason, text_))
        out.parts.append(Part(json.dumps(element, ensure_ascii=False), reason, text_))
    if tail is not None and tail.strip():
        out.rejected.append(("truncated", cut(tail)))
        out.parts.append(Part(tail, "truncated", cut(tail)))
    return out
