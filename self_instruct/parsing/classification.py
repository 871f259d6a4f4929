"""A classification answer: yes, no, or neither (``truncated``, ``ambiguous``), as text or as the
JSON object ``{"answer": "Yes"}``. See docs/parsing.md, "Classify"."""

from __future__ import annotations

import json
import re

from .jsonlist import looks_like_json, unfence
from .lines import (
    undecorate,
)

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


def parse_classification_json(text: str, finish_reason: str) -> str | None:
    """'yes' / 'no' / 'truncated' / 'ambiguous' from {"answer": ...}; None when the text is no JSON."""
    if not looks_like_json(text):
        return None
    try:
        obj = json.loads(unfence(text))
    except json.JSONDecodeError:
        # Cut off after a complete value ({"answer": "No") still says what it says.
        m = re.search(r'"answer"\s*:\s*"(yes|no)"', text, re.I)
        if m:
            return m.group(1).lower()
        return "truncated" if finish_reason == "length" else "ambiguous"
    answer = obj.get("answer") if isinstance(obj, dict) else None
    if isinstance(answer, str) and answer.strip().lower() in ("yes", "no"):
        return answer.strip().lower()
    return "ambiguous"
