"""Structured outputs: the JSON schema each stage asks for, and the parsing of JSON answers.

The schema goes to the server as ``response_format`` (chat API: OpenAI, vLLM, SGLang, llama.cpp's
server, Ollama) or becomes a llama.cpp grammar in process, so the model can only write the answer's
shape; the few-shot content stays the method's (``prompts.json_demos``). An answer that is no JSON
at all (a server that ignored the schema) is handed back to the text parsers.
"""

from __future__ import annotations

import json
import re

from .parsing import Echoes, Parsed, Part, bare_label, clean_instruction, collapse, empty_input
from .tasks import Instance

KINDS = ("bootstrap", "classify", "input_first", "output_first")
_ARRAY_KEY = {"bootstrap": "instructions", "input_first": "examples", "output_first": "examples"}


def schema(kind: str, max_items: int) -> dict:
    """The JSON schema of one stage's answer (strict-mode compatible: every key required, no extras)."""
    if kind == "classify":
        props: dict = {"answer": {"type": "string", "enum": ["Yes", "No"]}}
    else:
        if kind == "bootstrap":
            item: dict = {"type": "string"}
        else:
            fields = ("input", "output") if kind == "input_first" else ("class_label", "input")
            item = {
                "type": "object",
                "properties": {f: {"type": "string"} for f in fields},
                "required": list(fields),
                "additionalProperties": False,
            }
        props = {_ARRAY_KEY[kind]: {"type": "array", "items": item, "minItems": 1, "maxItems": max_items}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def schema_text(kind: str, max_items: int) -> str:
    """The schema as compact JSON: what a Request carries (hashable, part of the cache key)."""
    return json.dumps(schema(kind, max_items), sort_keys=True, separators=(",", ":"))


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S | re.I)


def _unfence(text: str) -> str:
    m = _FENCE.match(text)
    return m.group(1) if m else text


def looks_like_json(text: str) -> bool:
    return _unfence(text).lstrip().startswith("{")


def parse_classification_json(text: str, finish_reason: str) -> str | None:
    """'yes' / 'no' / 'truncated' / 'ambiguous' from {"answer": ...}; None when the text is no JSON."""
    if not looks_like_json(text):
        return None
    try:
        obj = json.loads(_unfence(text))
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


def parse_list_json(
    text: str, kind: str, *, finish_reason: str, max_items: int, shown: list[str] | None = None
) -> Parsed | None:
    """Instructions or instances from a JSON answer; None when the answer is no JSON at all.

    Every array element ends up kept or rejected (``over_cap``, ``unparsable`` for an element of
    the wrong shape, ``truncated`` for a cut-off tail); an answer that is JSON but has no usable
    list is one ``unparsable`` part."""
    if not looks_like_json(text):
        return None
    key = _ARRAY_KEY[kind]
    out = Parsed(parts=[])
    try:
        values, tail = _elements(_unfence(text), key)
    except ValueError:
        out.rejected.append(("unparsable", collapse(text)))
        out.parts.append(Part(text, "unparsable", collapse(text)))
        return out
    echoes = Echoes(shown or [])
    for value in values:
        kept = _value(kind, value)
        if kept is None:
            reason, text_ = "unparsable", collapse(json.dumps(value, ensure_ascii=False))
        elif isinstance(kept, str) and kept in echoes:
            reason, text_ = "prompt_echo", kept
        elif len(out.kept) >= max_items:
            reason, text_ = "over_cap", kept if isinstance(kept, str) else _show(kept)
        else:
            out.kept.append(kept)
            out.parts.append(Part(json.dumps(value, ensure_ascii=False)))
            continue
        out.rejected.append((reason, text_))
        out.parts.append(Part(json.dumps(value, ensure_ascii=False), reason, text_))
    if tail is not None and tail.strip():
        # A cut-off instruction reads like a cut-off text item; a cut-off example stays as written.
        cut = clean_instruction(tail.strip().removeprefix('"')) if kind == "bootstrap" else collapse(tail)
        out.rejected.append(("truncated", cut))
        out.parts.append(Part(tail, "truncated", cut))
    return out


def _show(inst: Instance) -> str:
    return collapse(f"{inst.input} => {inst.output}")


def _value(kind: str, value) -> str | Instance | None:
    if kind == "bootstrap":
        return clean_instruction(value) if isinstance(value, str) and value.strip() else None
    if not isinstance(value, dict):
        return None
    if kind == "input_first":
        inp, out = value.get("input"), value.get("output")
    else:
        inp, out = value.get("input"), value.get("class_label")
    if not isinstance(out, str) or not isinstance(inp, str | None):
        return None
    inp = (inp or "").strip()
    output = out.strip() if kind == "input_first" else bare_label(out)  # as the text parser reads it
    return Instance("" if empty_input(inp) else inp, output)
