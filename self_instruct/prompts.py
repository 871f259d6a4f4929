"""Prompt templates (plain text files in ``templates/``) and the functions that render them.

Every prompt is a fixed few-shot prefix followed by a short target section, so a backend with a
prompt cache (llama.cpp) re-uses the prefix from one request to the next.

Three renderings of each prompt:
- text, for the completions API: the model continues right after the cue;
- text for a chat model: the same prompt, with a last line that says what to write (one word for
  classify, examples in the demos' format for instances), so that a chat model does what the demos
  show instead of answering the task itself;
- structured (``llm.structured``): the same few-shot demos with each answer written as the JSON
  object that the stage's schema (``structured.py``) asks for.
The answers are read by the ``parsing`` package (text and JSON).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from importlib import resources

TEMPLATE_NAMES = (
    "bootstrap",
    "bootstrap_json",
    "classify",
    "instances_input_first",
    "instances_output_first",
)


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


def render_bootstrap_json(instructions: list[str], max_new: int) -> str:
    """The structured form: the in-context instructions as the JSON object the answer must take."""
    header = template("bootstrap_json").strip().replace("{n}", str(max_new))
    return f"{header}\n{_json({'instructions': [_one_line(t) for t in instructions]})}\n"


# --------------------------------------------------------------------------- classification


CHAT_CLASSIFY_QUESTION = "Is the last task a classification task? Answer Yes or No."


def render_classify(instruction: str, *, chat: bool = False) -> str:
    prompt = f"{template('classify')}Task: {_one_line(instruction)}\nClassification:"
    # A chat model given the bare pattern tends to continue it ("Task: ..."); ask it outright.
    return f"{prompt}\n\n{CHAT_CLASSIFY_QUESTION}" if chat else prompt


def render_classify_json(instruction: str) -> str:
    return _render_json("classify", instruction)


# --------------------------------------------------------------------------- instances


CHAT_INPUT_FIRST_REQUEST = (
    "Write examples for the last task in the same format as above: Example 1, Example 2 and so on, "
    "each with an input and its output, or only an output if the task needs no input."
)
CHAT_OUTPUT_FIRST_REQUEST = (
    "Write examples for the last task in the same format as above: each class label, then an input "
    "that belongs to it."
)


def render_input_first(instruction: str, *, chat: bool = False) -> str:
    head = f"{template('instances_input_first')}Task: {_one_line(instruction)}"
    # A chat model given the bare cue tends to answer the task instead of writing examples of it.
    return f"{head}\n\n{CHAT_INPUT_FIRST_REQUEST}" if chat else f"{head}\nExample 1\n"


def render_output_first(instruction: str, *, chat: bool = False) -> str:
    head = f"{template('instances_output_first')}Task: {_one_line(instruction)}"
    return f"{head}\n\n{CHAT_OUTPUT_FIRST_REQUEST}" if chat else f"{head}\nClass label:"


def render_input_first_json(instruction: str) -> str:
    return _render_json("instances_input_first", instruction)


def render_output_first_json(instruction: str) -> str:
    return _render_json("instances_output_first", instruction)


# --------------------------------------------------------------------------- structured demos

JSON_NOTE = "Each answer is one JSON object."


def header_and_demos(name: str) -> tuple[str, list[tuple[str, str]]]:
    """A few-shot template's first line and its demos as (task, answer text) pairs."""
    head, body = template(name).split("\n\n", 1)
    demos = []
    for block in body.split("\n\nTask: "):
        block = block.strip()
        if not block:
            continue
        task, answer = block.removeprefix("Task: ").split("\n", 1)
        demos.append((task, answer))
    return head, demos


@cache
def json_demos(name: str) -> tuple[str, tuple[tuple[str, dict], ...]]:
    """The demos of a text template with each answer as the JSON object of the structured schema."""
    head, demos = header_and_demos(name)
    out = []
    for task, answer in demos:
        if name == "classify":
            obj: dict = {"answer": answer.removeprefix("Classification:").strip()}
        elif name == "instances_input_first":
            examples = _demo_fields(answer, r"Example \d+", ("Input", "Output"))
            obj = {"examples": [{"input": e.get("Input", ""), "output": e["Output"]} for e in examples]}
        else:
            examples = _demo_fields(answer, "Class label: .*", ("Class label", "Input"))
            obj = {
                "examples": [{"class_label": e["Class label"], "input": e.get("Input", "")} for e in examples]
            }
        out.append((task, obj))
    return head, tuple(out)


def _demo_fields(answer: str, start: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """Our own demo answers, in the one format our templates use (no parser for what models write):
    a line matching ``start`` begins an example; ``Field: value`` begins a field, whose value runs
    over the lines up to the next field or example."""
    examples: list[dict[str, str]] = []
    field = ""
    for line in answer.split("\n"):
        if re.fullmatch(start, line):
            examples.append({})
            field = ""
        name, sep, value = line.partition(": ")
        if sep and name in fields:
            field = name
            examples[-1][field] = value
        elif field:
            examples[-1][field] += "\n" + line
    return [{k: v.strip() for k, v in e.items()} for e in examples]


def _render_json(name: str, instruction: str) -> str:
    head, demos = json_demos(name)
    blocks = [f"Task: {task}\nAnswer: {_json(obj)}" for task, obj in demos]
    return "\n\n".join([f"{head} {JSON_NOTE}", *blocks, f"Task: {_one_line(instruction)}\nAnswer:"])


def _json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _one_line(text: str) -> str:
    return " ".join(text.split())
