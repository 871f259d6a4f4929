"""ROUGE-L novelty index: the method's "keep only if ROUGE-L F <= 0.7 against every pool entry" rule.

Scores match ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)``:
- tokenizer: lower-case, every run of characters outside ``[a-z0-9]`` becomes a space, split;
- LCS over the token sequences (exact, rapidfuzz's bit-parallel LCSseq over integer token ids);
- F computed the way rouge_score computes it: precision and recall first, then 2PR/(P+R). The
  algebraically equal 2*LCS/(m+n) can differ in the last bit and flip decisions at exactly 0.7.

Tokens are mapped to integer ids once, when a text enters the index.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass

from rapidfuzz.distance import LCSseq

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer (no stemming): non-ASCII text yields no tokens."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def f_measure(lcs: int, len_a: int, len_b: int) -> float:
    """ROUGE-L F exactly as rouge_score computes it (order of floating-point operations included)."""
    if lcs == 0 or len_a == 0 or len_b == 0:
        return 0.0
    precision = lcs / len_b
    recall = lcs / len_a
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Match:
    score: float
    index: int  # position of the pool entry in insertion order
    text: str


class NoveltyIndex:
    """A growing pool of texts that answers "what is the most similar entry, and how similar"."""

    def __init__(self, threshold: float = 0.7) -> None:
        self.threshold = threshold
        self._vocab: dict[str, int] = {}
        self._texts: list[str] = []
        self._seqs: list[list[int]] = []

    def __len__(self) -> int:
        return len(self._texts)

    def _encode(self, text: str, grow: bool) -> list[int]:
        ids = []
        for tok in rouge_tokens(text):
            tid = self._vocab.get(tok)
            if tid is None:
                if not grow:
                    tid = -1 - len(ids)  # unseen token: matches nothing in the pool, keeps the length right
                else:
                    tid = len(self._vocab)
                    self._vocab[tok] = tid
            ids.append(tid)
        return ids

    def add(self, text: str) -> int:
        self._texts.append(text)
        self._seqs.append(self._encode(text, grow=True))
        return len(self._texts) - 1

    def _scores(self, text: str):
        seq = self._encode(text, grow=False)
        n = len(seq)
        for i, other in enumerate(self._seqs):
            if n and other:
                yield f_measure(LCSseq.similarity(seq, other), n, len(other)), i
            else:
                yield 0.0, i

    def top_k(self, text: str, k: int) -> list[Match]:
        """The k most similar pool entries, best first (ties: earlier entry first)."""
        best = heapq.nsmallest(k, self._scores(text), key=lambda si: (-si[0], si[1]))
        return [Match(score, i, self._texts[i]) for score, i in best]

    def best(self, text: str) -> Match | None:
        top = self.top_k(text, 1)
        return top[0] if top else None

    def is_novel(self, text: str) -> tuple[bool, Match | None]:
        """(keep, most similar entry): keep means every pool entry scores <= threshold."""
        match = self.best(text)
        return (match is None or match.score <= self.threshold), match
