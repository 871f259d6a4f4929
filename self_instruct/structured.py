"""Structured outputs: the JSON schema each stage asks for (their answers are read by ``parsing``).

The schema goes to the server as ``response_format`` (chat API: OpenAI, vLLM, SGLang, llama.cpp's
server, Ollama) or becomes a llama.cpp grammar in process, so the model can only write the answer's
shape; the few-shot content stays the method's (``prompts.json_demos``). An answer that is no JSON
at all (a server that ignored the schema) is handed back to the text parsers.
"""

from __future__ import annotations

import json

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
