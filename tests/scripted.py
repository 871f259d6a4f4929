"""A scripted model for fast tests: it reads our prompts and answers in their formats.

Instructions are built from a fixed word list with a seeded RNG per prompt, so they are diverse
enough to pass the ROUGE-L rule, and the same prompt always gets the same answer (like a greedy
or seeded model). Used both in-process (ScriptedBackend) and behind the test HTTP server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random

from self_instruct.llm.base import Request, Response
from self_instruct.prompts import CHAT_CLASSIFY_QUESTION

WORDS = [
    "river",
    "orbit",
    "ledger",
    "violin",
    "harvest",
    "quartz",
    "lantern",
    "tundra",
    "compass",
    "glacier",
    "meadow",
    "prism",
    "ferry",
    "canyon",
    "saddle",
    "beacon",
    "orchard",
    "pigment",
    "falcon",
    "summit",
    "harbor",
    "velvet",
    "cipher",
    "meteor",
    "pebble",
    "thunder",
    "tapestry",
    "marble",
    "willow",
    "copper",
    "nectar",
    "lagoon",
    "ember",
    "plateau",
    "scroll",
    "anchor",
    "bamboo",
    "citadel",
    "dune",
    "feather",
    "garnet",
    "horizon",
    "island",
    "jasmine",
    "kettle",
    "lotus",
    "mosaic",
    "nebula",
    "oasis",
    "parcel",
    "quiver",
    "raven",
    "sapphire",
    "timber",
    "umbrella",
    "vessel",
    "walnut",
    "yarn",
    "zephyr",
    "atlas",
    "banjo",
    "cobalt",
    "delta",
    "easel",
    "fjord",
    "gondola",
    "hazel",
    "igloo",
    "juniper",
    "kayak",
]
VERBS = ("Describe", "Explain", "Summarize", "Compare", "List", "Suggest", "Classify", "Classify", "Classify")


def _rng(prompt: str) -> random.Random:
    return random.Random(hashlib.sha256(prompt.encode()).hexdigest())


def instruction_text(rng: random.Random) -> str:
    verb = rng.choice(VERBS)
    words = " ".join(rng.sample(WORDS, 7))
    suffix = " as positive or negative label" if verb == "Classify" else ""
    return f"{verb} the {words}{suffix}."


def json_answer(prompt: str, schema: dict) -> str:
    """A structured answer: the JSON object the schema asks for, with the same content as the text."""
    rng = _rng(prompt)
    props = schema["properties"]
    instruction = prompt.rstrip().rsplit("Task:", 1)[-1]
    if "answer" in props:
        return json.dumps({"answer": "Yes" if "Classify" in instruction or "Task:" not in prompt else "No"})
    if "instructions" in props:
        return json.dumps({"instructions": [instruction_text(rng) for _ in range(rng.randint(2, 5))]})
    if "class_label" in props["examples"]["items"]["properties"]:
        pairs = [("Positive", "A bright, kind morning."), ("Negative", "A cold, rude evening.")]
        return json.dumps({"examples": [{"class_label": c, "input": i} for c, i in pairs]})
    k = rng.randint(1, 99)
    return json.dumps({"examples": [{"input": f"case {j}", "output": f"result {j}"} for j in (k, k + 1)]})


def respond(kind: str, body: dict) -> str:
    """The scripted model behind the test HTTP server (both APIs, structured outputs included)."""
    prompt = body["messages"][-1]["content"] if kind == "chat" else body["prompt"]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json_answer(prompt, fmt["json_schema"]["schema"])
    return answer(prompt, chat=kind == "chat")


def answer(prompt: str, *, chat: bool = False) -> str:
    """What the scripted model says to one of our prompts."""
    rng = _rng(prompt)
    tail = prompt.rstrip().removesuffix(CHAT_CLASSIFY_QUESTION).rstrip()
    if tail.endswith("### Review"):  # analyze --judge (chat)
        return "Valid: yes\nInput fits: yes\nOutput correct: no"
    if tail.endswith("### Review\nValid:"):  # analyze --judge (completions: the first label is given)
        return " yes\nInput fits: yes\nOutput correct: no"
    if tail.endswith("Classification:"):
        instruction = tail.rsplit("Task:", 1)[1]
        return " Yes" if "Classify" in instruction else " No"
    if tail.endswith("Class label:"):
        return (
            " Positive\nInput: A bright, kind morning.\nClass label: Negative\nInput: A cold, rude evening."
        )
    if prompt.endswith("Example 1\n"):
        k = rng.randint(1, 99)
        first, second = f"Input: case {k}\nOutput: result {k}", f"Input: case {k + 1}\nOutput: result {k + 1}"
        return f"{first}\nExample 2\n{second}"
    # Bootstrap: continue the numbered list from the number the prompt ends with.
    start = int(tail.rsplit("\n", 1)[1].rstrip(".")) if tail.endswith(".") else 9
    items = [instruction_text(rng) for _ in range(rng.randint(2, 5))]
    if chat:
        return "Here are some new tasks:\n\n" + "\n".join(f"{start + k}. {t}" for k, t in enumerate(items))
    return " " + items[0] + "".join(f"\n{start + k}. {t}" for k, t in enumerate(items[1:], start=1))


class ScriptedBackend:
    """In-process backend with the scripted model; counts calls, optional jittered latency."""

    name = "scripted"
    model = "scripted-model"

    def __init__(self, api: str = "completions", *, max_concurrency: int = 64, jitter: float = 0.0) -> None:
        self.api = api
        self.max_concurrency = max_concurrency
        self.jitter = jitter
        self.calls: list[Request] = []

    async def complete(self, request: Request) -> Response:
        self.calls.append(request)
        if self.jitter:
            await asyncio.sleep(random.random() * self.jitter)
        if request.schema:
            text = json_answer(request.prompt, json.loads(request.schema))
        else:
            text = answer(request.prompt, chat=self.api == "chat")
        for s in request.stop:
            if s in text:
                text = text[: text.index(s)]
        return Response(
            text=text,
            finish_reason="stop",
            prompt_tokens=len(request.prompt.split()),
            completion_tokens=len(text.split()),
        )

    async def close(self) -> None:
        pass
