"""Analysis speed, measured in the same run.

1. Verb-noun parsing: ``nlp.pipe`` in batches with the components verb-noun does not need left out
   (what ``self_instruct.analysis`` does) versus one ``nlp(text)`` call per instruction with the full
   pipeline. Both must give the same (verb, noun) pairs; the script checks that, then prints both
   times and the ratio.
2. End to end: ``analyze()`` on a flat JSONL of 50,000 generated rows, with the project's seed file.

The instructions are instruction-like English built from templates (real verbs, nouns, adjectives,
topics) and from the seed instructions, so that the parser meets realistic sentences.

    .venv/bin/python bench/analysis.py                 # 3,000 texts for parsing, 50,000 rows end to end
    .venv/bin/python bench/analysis.py --rows 10000    # a shorter end-to-end run
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from self_instruct.analysis import analyze
from self_instruct.analysis.verbnoun import clip, extract_pairs, load_pipeline, pair_of
from self_instruct.tasks import load_tasks

SEEDS = Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"

VERBS = [
    "write", "describe", "explain", "summarize", "create", "generate", "suggest", "list", "compose",
    "design", "draft", "plan", "recommend", "outline", "rewrite", "translate", "identify", "find",
    "classify", "compare", "evaluate", "name", "give", "provide", "prepare", "build", "propose",
    "invent", "review", "edit", "analyze", "predict", "estimate", "choose", "organize", "rank",
]  # fmt: skip
NOUNS = [
    ("poem", "poems"), ("story", "stories"), ("email", "emails"), ("letter", "letters"),
    ("recipe", "recipes"), ("plan", "plans"), ("list", "lists"), ("summary", "summaries"),
    ("slogan", "slogans"), ("headline", "headlines"), ("question", "questions"), ("tip", "tips"),
    ("idea", "ideas"), ("name", "names"), ("joke", "jokes"), ("review", "reviews"),
    ("speech", "speeches"), ("essay", "essays"), ("outline", "outlines"), ("schedule", "schedules"),
    ("function", "functions"), ("query", "queries"), ("table", "tables"), ("description", "descriptions"),
    ("argument", "arguments"), ("example", "examples"), ("title", "titles"), ("strategy", "strategies"),
    ("menu", "menus"), ("riddle", "riddles"), ("proposal", "proposals"), ("report", "reports"),
]  # fmt: skip
ADJECTIVES = [
    "short", "funny", "formal", "detailed", "simple", "creative", "persuasive", "polite", "clear",
    "brief", "friendly", "professional", "catchy", "healthy", "cheap", "memorable", "useful", "new",
]  # fmt: skip
TOPICS = [
    "the ocean", "climate change", "a rainy day", "remote work", "the history of Rome", "space travel",
    "healthy eating", "a small bakery", "learning to code", "public transport", "a summer festival",
    "online privacy", "saving money", "a job interview", "the solar system", "a birthday party",
    "electric cars", "a mountain hike", "a new smartphone", "renewable energy", "city gardens",
]  # fmt: skip
AUDIENCES = [
    "children", "a new employee", "my manager", "tourists", "a customer", "high school students",
    "a busy parent", "beginners", "my neighbours", "a software team",
]  # fmt: skip
QUESTIONS = [
    "What is the best way to learn {topic}?",
    "Why do people care about {topic}?",
    "How does {topic} affect {audience}?",
    "Is {topic} a good subject for {audience}?",
]
TEMPLATES = [
    "{Verb} a {adj} {noun} about {topic}.",
    "{Verb} {n} {nouns} about {topic} for {audience}.",
    "{Verb} the following {noun} in a {adj} tone.",
    "Please {verb} a {noun} for {audience} about {topic}.",
    "{Verb} a {adj} {noun} that explains {topic} to {audience}.",
    "Give me {n} {adj} {nouns} related to {topic}.",
    "{Verb} the {noun} below and {verb2} the main {nouns}.",
    "Can you {verb} a {adj} {noun} about {topic}?",
    "{Verb} {n} {nouns} for {topic}, and keep each one under twenty words.",
    "Using the given text, {verb} a {noun} about {topic}.",
]
CLAUSES = [
    "",
    "",
    " Keep it short.",
    " Use simple words.",
    " Explain your answer.",
    " Answer in one paragraph.",
]


def make_instructions(n: int, seed: int) -> list[str]:
    """n distinct instruction-like texts: templates and, one in five, a seed instruction with a clause."""
    rng = random.Random(seed)
    seeds = [t.instruction for t in load_tasks(SEEDS)]
    out: dict[str, None] = {}
    while len(out) < n:
        if rng.random() < 0.2:
            text = rng.choice(seeds) + rng.choice(CLAUSES)
            if text in out:
                text = f"{text} Use {rng.randint(2, 99)} words at most."
        elif rng.random() < 0.1:
            text = rng.choice(QUESTIONS).format(topic=rng.choice(TOPICS), audience=rng.choice(AUDIENCES))
        else:
            verb, verb2 = rng.sample(VERBS, 2)
            noun, nouns = rng.choice(NOUNS)
            text = rng.choice(TEMPLATES).format(
                Verb=verb.capitalize(),
                verb=verb,
                verb2=verb2,
                noun=noun,
                nouns=nouns if rng.random() < 0.7 else rng.choice(NOUNS)[1],
                adj=rng.choice(ADJECTIVES),
                topic=rng.choice(TOPICS),
                audience=rng.choice(AUDIENCES),
                n=rng.choice(["two", "three", "four", "five", "ten"]),
            ) + rng.choice(CLAUSES)
        out[text] = None
    return list(out)


def bench_parsing(n: int) -> None:
    texts = make_instructions(n, seed=1)
    full = load_pipeline(full=True)
    lean = load_pipeline()
    # warm both up (first calls allocate)
    for t in texts[:20]:
        full(t)
    list(lean.pipe(texts[:20]))

    t0 = time.perf_counter()
    slow = [pair_of(full(clip(t))) for t in texts]
    t_full = time.perf_counter() - t0

    t0 = time.perf_counter()
    fast = extract_pairs(texts, lean)
    t_pipe = time.perf_counter() - t0

    assert slow == fast, "the lean pipeline gave different verb-noun pairs"
    with_pair = sum(1 for v, o in fast if v and o)
    print(f"verb-noun parsing, {n:,} distinct instructions ({with_pair:,} with a verb-noun pair; same pairs)")
    print(f"  nlp(text) each, full pipeline {full.pipe_names}: {t_full:6.1f} s  ({n / t_full:,.0f}/s)")
    print(f"  nlp.pipe, batches, {lean.pipe_names}: {t_pipe:6.1f} s  ({n / t_pipe:,.0f}/s)")
    print(f"  speed-up: {t_full / t_pipe:.1f}x")


def bench_end_to_end(rows: int) -> None:
    rng = random.Random(2)
    instructions = make_instructions(int(rows * 0.8), seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for k in range(rows):
                instruction = instructions[k] if k < len(instructions) else rng.choice(instructions)
                row = {
                    "instruction": instruction,
                    "input": ""
                    if rng.random() < 0.6
                    else f"Example input number {k} about {rng.choice(TOPICS)}.",
                    "output": " ".join(rng.choice(TOPICS) for _ in range(rng.randint(1, 12))),
                }
                f.write(json.dumps(row) + "\n")
        t0 = time.perf_counter()
        stats = analyze([str(path)], str(Path(tmp) / "report"), seeds=str(SEEDS), progress=False)
        elapsed = time.perf_counter() - t0
    s = stats["inputs"][0]
    print(f"end to end: analyze() on {rows:,} rows ({s['dataset']['instructions']:,} distinct instructions)")
    print(
        f"  {elapsed:.1f} s; verb-noun pairs in {100 * s['verb_noun']['share_with_pair']:.1f}%, "
        f"mean ROUGE-L to the seeds {s['seed_rouge_l']['mean']:.3f}, "
        f"distinct-2 {s['diversity']['distinct_2']:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parse", type=int, default=3000, help="instructions for the parsing comparison")
    ap.add_argument("--rows", type=int, default=50_000, help="rows for the end-to-end run (0: skip)")
    args = ap.parse_args()
    bench_parsing(args.parse)
    if args.rows:
        bench_end_to_end(args.rows)


if __name__ == "__main__":
    main()
