"""Instruction-like synthetic text for benchmarks: a verb, function words and a Zipf-distributed
vocabulary (common words are very common, most words are rare), 5 to 30 tokens."""

from __future__ import annotations

import random

VERBS = [
    "write",
    "explain",
    "describe",
    "list",
    "summarize",
    "classify",
    "translate",
    "rewrite",
    "create",
    "generate",
    "suggest",
    "compare",
    "identify",
    "extract",
    "find",
    "convert",
    "plan",
    "compute",
    "design",
    "outline",
    "give",
    "recommend",
    "sort",
    "answer",
    "predict",
    "correct",
    "tell",
    "name",
    "evaluate",
    "rank",
    "estimate",
    "draft",
]
FUNCTION = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "for",
    "with",
    "that",
    "on",
    "as",
    "by",
    "from",
    "this",
    "is",
    "an",
    "each",
    "your",
    "into",
    "about",
]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "ze",
    "pa",
    "qu",
    "ri",
    "sto",
    "an",
    "el",
    "or",
    "ex",
    "im",
    "un",
    "de",
]


def make_vocab(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class TextGen:
    def __init__(self, seed: int = 0, vocab_size: int = 30_000) -> None:
        self.rng = random.Random(seed)
        self.vocab = make_vocab(vocab_size, self.rng)
        # Zipf weights: the r-th word has weight 1/r.
        self.cum = []
        total = 0.0
        for r in range(1, vocab_size + 1):
            total += 1.0 / r
            self.cum.append(total)

    def sentence(self) -> str:
        rng = self.rng
        n = rng.randint(5, 30)
        words = [rng.choice(VERBS).capitalize()]
        content = rng.choices(self.vocab, cum_weights=self.cum, k=n)
        for w in content:
            if rng.random() < 0.35:
                words.append(rng.choice(FUNCTION))
            words.append(w)
        return " ".join(words) + rng.choice([".", "?", ":", "."])
