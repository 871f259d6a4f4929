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

from self_instruct.llm.base import BackendBase, Request, Response
from self_instruct.prompts import CHAT_CLASSIFY_QUESTION, CHAT_INPUT_FIRST_REQUEST, CHAT_OUTPUT_FIRST_REQUEST

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


def judged(prompt: str) -> str:
    """The rating the scripted judge gives an instance: chosen by a hash of the instance's output."""
    output = prompt.rsplit("\nOutput: ", 1)[1].split("\n\nAnswer in two lines", 1)[0]
    return "ABCD"[int(hashlib.sha256(output.encode()).hexdigest()[:8], 16) % 4]


def json_answer(prompt: str, schema: dict) -> str:
    """A structured answer: the JSON object the schema asks for, with the same content as the text."""
    rng = _rng(prompt)
    props = schema["properties"]
    if "rating" in props:
        return json.dumps({"rating": judged(prompt), "reason": "as the scripted judge sees it"})
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


def _labels() -> dict[str, bool]:
    from helpers import SEEDS

    from self_instruct.tasks import load_tasks

    return {t.instruction: t.is_classification for t in load_tasks(SEEDS)}


SEED_LABELS = _labels()


def known_margin(instruction: str) -> float:
    """The scripted model's log P(yes) - log P(no) for a task: it knows the seeds' labels (with a
    jitter of up to 0.8), and calls a generated 'Classify ...' instruction a classification."""
    instruction = instruction.strip()
    jitter = (int(hashlib.sha256(instruction.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 0.5) * 1.6
    label = SEED_LABELS.get(instruction, "Classify" in instruction)
    return (1.0 if label else -1.0) + jitter


def classify_logprobs(prompt: str, *, chat: bool = False) -> dict[str, float]:
    """Top alternatives of the first answer token for a classification prompt (greedy says "No" to
    all: the margin is shifted down by 2, the miscalibration calibration is for)."""
    instruction = prompt.removesuffix(CHAT_CLASSIFY_QUESTION).rstrip().rsplit("Task:", 1)[1]
    instruction = instruction.removesuffix("Classification:").strip()
    m = known_margin(instruction) - 2.0
    space = "" if chat else " "
    return {f"{space}No": -0.3, f"{space}Yes": -0.3 + m, f"{space}Maybe": -6.0}


def logprober(kind: str, body: dict) -> dict[str, float] | None:
    prompt = body["messages"][-1]["content"] if kind == "chat" else body["prompt"]
    return classify_logprobs(prompt, chat=kind == "chat")


def respond(kind: str, body: dict) -> str:
    """The scripted model behind the test HTTP server (both APIs, structured outputs included)."""
    prompt = body["messages"][-1]["content"] if kind == "chat" else body["prompt"]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json_answer(prompt, fmt["json_schema"]["schema"])
    return answer(prompt, chat=kind == "chat")


def answer(prompt: str, *, chat: bool = False) -> str:
    """What the scripted model says to one of our prompts."""
    # A chat prompt ends with a request; answer it as if the completions cue stood there.
    if prompt.endswith(CHAT_INPUT_FIRST_REQUEST):
        prompt = prompt.removesuffix(CHAT_INPUT_FIRST_REQUEST).rstrip() + "\nExample 1\n"
    elif prompt.endswith(CHAT_OUTPUT_FIRST_REQUEST):
        prompt = prompt.removesuffix(CHAT_OUTPUT_FIRST_REQUEST).rstrip() + "\nClass label:"
    rng = _rng(prompt)
    tail = prompt.rstrip().removesuffix(CHAT_CLASSIFY_QUESTION).rstrip()
    if tail.endswith("Reason: <one short sentence>"):  # quality.judge
        return f"Rating: {judged(prompt)}\nReason: as the scripted judge sees it."
    if tail.endswith("### Review"):  # analyze --judge (chat)
        return "Valid: yes\nInput fits: yes\nOutput correct: no"
    if tail.endswith("### Review\nValid:"):  # analyze --judge (completions: the first label is given)
        return " yes\nInput fits: yes\nOutput correct: no"
    if tail.endswith("Classification:"):
        instruction = tail.rsplit("Task:", 1)[1]
        return " Yes" if "Classify" in instruction else " No"
    if tail.endswith("Class label:"):
        pairs = (
            " Positive\nInput: A bright, kind morning.\nClass label: Negative\nInput: A cold, rude evening."
        )
        return f"Class label:{pairs}" if chat else pairs
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


class ScriptedBackend(BackendBase):
    """In-process backend with the scripted model; counts calls, optional jittered latency."""

    name = "scripted"
    model = "scripted-model"

    def __init__(
        self,
        api: str = "completions",
        *,
        max_concurrency: int = 64,
        jitter: float = 0.0,
        logprobs: bool = True,
    ) -> None:
        self.api = api
        self.logprobs = logprobs  # answers logprob requests (False: like a server without them)
        self.max_concurrency = max_concurrency
        self.jitter = jitter
        self.calls: list[Request] = []

    async def complete(self, request: Request) -> Response:
        self.calls.append(request)
        if self.jitter:
            await asyncio.sleep(random.random() * self.jitter)
        top = None
        if request.schema:
            text = json_answer(request.prompt, json.loads(request.schema))
        elif request.logprobs and self.logprobs:
            top = classify_logprobs(request.prompt, chat=self.api == "chat")
            text = max(top, key=top.get)
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
            top_logprobs=top,
        )

    async def close(self) -> None:
        pass
