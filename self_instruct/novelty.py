"""ROUGE-L novelty index: the method's "keep only if ROUGE-L F <= 0.7 against every pool entry" rule.

Scores are identical to ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)``:
- tokenizer: lower-case, every run of characters outside ``[a-z0-9]`` becomes a space, split;
- LCS over the token sequences, exact (rapidfuzz's bit-parallel LCSseq over integer token ids);
- F computed the way rouge_score computes it: precision and recall first, then 2PR/(P+R). The
  algebraically equal 2*LCS/(m+n) can differ in the last bit and flips decisions at exactly 0.7.

Why it is fast without approximating: the LCS of two token sequences is at most the size of their
token multiset intersection (the overlap), so F <= 2*overlap/(m+n). An inverted index (token id ->
entries holding it, with counts) gives every entry's overlap with a query in one vectorised pass;
exact LCS is then computed only for the few entries whose bound could reach the answer:
- the novelty decision needs entries whose bound exceeds the threshold;
- the top-k needs entries in decreasing bound order until the next bound falls below the k-th exact
  score found so far.

Tokens are mapped to integer ids once, when a text enters the index. An opt-in ``unicode``
tokenizer keeps letters and digits of every script (each CJK character is one token), for
non-English data where the reference tokenizer sees no tokens at all and never filters anything.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
# Scripts written without spaces: one token per character.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_UNICODE_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")

TOKENIZERS = ("rouge", "unicode")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer (no stemming): non-ASCII text yields no tokens."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def unicode_tokens(text: str) -> list[str]:
    """Letters and digits of any script; each CJK character is a token of its own."""
    return _UNICODE_TOKEN.findall(text.lower())


def f_measure(lcs: int, len_a: int, len_b: int) -> float:
    """ROUGE-L F exactly as rouge_score computes it (order of floating-point operations included)."""
    if lcs == 0 or len_a == 0 or len_b == 0:
        return 0.0
    precision = lcs / len_b
    recall = lcs / len_a
    return 2 * precision * recall / (precision + recall)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F of two texts, identical to rouge_score's (no stemming): ``b`` is the prediction
    (one pair, for analysis; the index scores a text against the whole pool at once)."""
    ta, tb = rouge_tokens(a), rouge_tokens(b)
    if not ta or not tb:
        return 0.0
    vocab: dict[str, int] = {}
    sa = "".join(chr(vocab.setdefault(t, len(vocab))) for t in ta)
    sb = "".join(chr(vocab.setdefault(t, len(vocab))) for t in tb)
    return f_measure(LCSseq.similarity(sa, sb), len(ta), len(tb))


@dataclass(frozen=True)
class Match:
    score: float
    index: int  # position of the pool entry in insertion order
    text: str


# A bound within this distance of a cut-off is treated as reaching it: the bound and the exact
# score are computed by different float expressions, and a skipped entry must never matter.
_EPS = 1e-9


def f_measures(lcs: np.ndarray, len_query: int | np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """f_measure over arrays: the same IEEE operations in the same order, so the same bits."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / lengths
        recall = lcs / len_query
        f = 2 * precision * recall / (precision + recall)
    return np.where(lcs > 0, f, 0.0)


class _Column:
    """A growable numpy column (amortised doubling) that hands out views of its filled part."""

    def __init__(self, dtype) -> None:
        self._data = np.zeros(1024, dtype=dtype)
        self.size = 0

    def append(self, value) -> None:
        if self.size == len(self._data):
            self._data = np.concatenate([self._data, np.zeros_like(self._data)])
        self._data[self.size] = value
        self.size += 1

    @property
    def view(self) -> np.ndarray:
        return self._data[: self.size]


class PoolIndex(Protocol):
    """What bootstrap needs of a pool index: this module's NoveltyIndex, or the sharded one on Ray
    (``cluster/novelty.py``), which decides and records exactly the same."""

    def __len__(self) -> int: ...

    def add_many(self, texts: list[str]) -> list[int]: ...

    def admit(self, text: str) -> tuple[Match | None, int | None]: ...

    def top_k_before(self, entries: list[int], k: int) -> list[list[Match]]: ...


class NoveltyIndex:
    """A growing pool of texts that answers "what is the most similar entry, and how similar".

    Each entry is kept as a string whose characters are its token ids (so rapidfuzz compares token
    sequences at C++ speed, in batches), its length, and its place in the inverted index. The most
    frequent tokens ("the", "a", "of", ...) would make posting lists as long as the pool; each of
    them gets a bit in a per-entry 64-bit mask instead, and their share of every entry's overlap is
    one popcount.
    """

    MAX_VOCAB = 0x110000  # token ids are stored as code points
    MASK_BITS = 64
    MIN_COMMON = 64  # a token needs at least this many entries to earn a mask bit

    def __init__(self, threshold: float = 0.7, tokenizer: str = "rouge") -> None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}")
        self.threshold = threshold
        self._tokenize = rouge_tokens if tokenizer == "rouge" else unicode_tokens
        self._vocab: dict[str, int] = {}
        self._texts: list[str] = []
        self._seqs: list[str] = []
        self._lengths = _Column(np.int32)
        self._masks = _Column(np.uint64)
        self._post_ids: list[array] = []  # token id -> entries holding it (tokens without a bit)
        self._post_counts: list[array] = []  # token id -> how often, aligned with _post_ids
        self._bit: dict[int, int] = {}  # token id -> its mask bit

    def __len__(self) -> int:
        return len(self._texts)

    def add(self, text: str) -> int:
        """Add a text to the pool; returns its index."""
        entry = len(self._texts)
        ids = []
        for tok in self._tokenize(text):
            tid = self._vocab.get(tok)
            if tid is None:
                tid = len(self._vocab)
                if tid >= self.MAX_VOCAB:
                    raise OverflowError("novelty index vocabulary is full (1,114,112 distinct tokens)")
                self._vocab[tok] = tid
                self._post_ids.append(array("i"))
                self._post_counts.append(array("i"))
            ids.append(tid)
        mask = 0
        for tid, count in Counter(ids).items():
            bit = self._bit.get(tid)
            if bit is not None:
                mask |= 1 << bit
            self._post_ids[tid].append(entry)
            self._post_counts[tid].append(count)
            if (
                bit is None
                and len(self._bit) < self.MASK_BITS
                and len(self._post_ids[tid]) >= self.MIN_COMMON
            ):
                self._promote(tid)
                mask |= 1 << self._bit[tid]
        self._texts.append(text)
        self._seqs.append("".join(map(chr, ids)))
        self._lengths.append(len(ids))
        self._masks.append(mask)
        return entry

    def _promote(self, tid: int) -> None:
        """Give a frequent token a mask bit, and set it in the masks of the entries already holding it."""
        bit = self._bit[tid] = len(self._bit)
        entries = np.frombuffer(self._post_ids[tid], dtype=np.int32)
        entries = entries[entries < self._masks.size]  # the entry being added is not stored yet
        self._masks.view[entries] |= np.uint64(1 << bit)

    def _query(self, text: str) -> tuple[str, np.ndarray | None]:
        """The query as a token-id string and every entry's token overlap with it (None: nothing to
        compare). Tokens the pool has never seen get ids past the vocabulary: they match no entry."""
        tokens = self._tokenize(text)
        n = len(self._texts)
        if not tokens or n == 0:
            return "", None
        seq, ids = self._query_ids(tokens)
        masks = self._masks.view
        qmask = 0
        # (token, count); singles: tokens the query holds once, each entry in their posting lists gains 1
        singles: list[tuple[int, int]] = []
        repeated: list[tuple[int, int]] = []
        for tid, count in Counter(t for t in ids if t >= 0).items():
            bit = self._bit.get(tid)
            if bit is None:
                (singles if count == 1 else repeated).append((tid, count))
            elif count == 1:
                qmask |= 1 << bit  # min(entry count, 1) is 1 for every entry holding it: one popcount
            else:
                repeated.append((tid, count))
        if singles:
            postings = np.frombuffer(b"".join(self._post_ids[tid] for tid, _ in singles), dtype=np.int32)
            overlap = np.bincount(postings, minlength=n).astype(np.int32)
        else:
            overlap = np.zeros(n, dtype=np.int32)
        if qmask:
            overlap += np.bitwise_count(masks & np.uint64(qmask)).astype(np.int32)
        for tid, count in repeated:
            bit = self._bit.get(tid)
            if bit is None:
                entries = np.frombuffer(self._post_ids[tid], dtype=np.int32)
                counts = np.frombuffer(self._post_counts[tid], dtype=np.int32)
                overlap[entries] += np.minimum(counts, count)  # an entry appears once per posting list
            else:
                # min(entry count, query count) <= query count: still an upper bound on the overlap.
                overlap += (count * ((masks >> np.uint64(bit)) & np.uint64(1))).astype(np.int32)
        return seq, overlap

    def _bound(self, seq: str, overlap: np.ndarray, entries: np.ndarray | None = None) -> np.ndarray:
        """Upper bounds on F from the overlap: LCS <= overlap, so F <= 2*overlap/(m+n)."""
        lengths = self._lengths.view if entries is None else self._lengths.view[entries]
        return 2.0 * overlap / (len(seq) + lengths)

    def _exact(self, seq: str, entries: np.ndarray) -> np.ndarray:
        """Exact ROUGE-L F of the query against the given entries."""
        if len(entries) == 0:
            return np.empty(0)
        choices = [self._seqs[i] for i in entries.tolist()]
        lcs = process.cdist([seq], choices, scorer=LCSseq.similarity, dtype=np.int32)[0]
        return f_measures(lcs, len(seq), self._lengths.view[entries])

    def top_k(self, text: str, k: int) -> list[Match]:
        """The k most similar pool entries, best first (equal scores: earlier entry first).

        A text with no tokens scores 0 against everything.
        """
        n = len(self._texts)
        k = min(k, n)
        if k <= 0:
            return []
        seq, overlap = self._query(text)
        if overlap is None:
            return [Match(0.0, i, self._texts[i]) for i in range(k)]
        bound = self._bound(seq, overlap)
        # Score the entries with the highest bounds, then in one batch every other entry whose bound
        # reaches the k-th best exact score found: bounds are true upper limits, so no entry left
        # out could enter the top k.
        first = min(n, max(16 * k, 256))
        cand = np.argpartition(-bound, first - 1)[:first] if first < n else np.arange(n)
        scores = self._exact(seq, cand)
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        reach = bound >= kth - _EPS
        reach[cand] = False
        rest = np.flatnonzero(reach)
        if len(rest):
            cand = np.concatenate([cand, rest])
            scores = np.concatenate([scores, self._exact(seq, rest)])
        order = np.lexsort((cand, -scores))[:k]
        return [Match(float(scores[i]), int(cand[i]), self._texts[int(cand[i])]) for i in order]

    def top_k_before(self, entries: list[int], k: int) -> list[list[Match]]:
        """For each given pool entry, its k most similar entries among those added before it (best
        first, equal scores: earlier entry first), exactly as top_k would have answered just before
        the entry was added.

        This is what bootstrap records for the instructions it accepted, in one full-scan,
        multi-threaded C++ pass for all those given: for the low scores of a top 10 the overlap bound
        prunes little, and one batched scan is several times faster than pruned scans one by one.
        """
        tops = self.scan_top_k([self._seqs[e] for e in entries], entries, k)
        return [[Match(score, i, self._texts[i]) for score, i in top] for top in tops]

    def query_seq(self, text: str) -> str:
        """A text as this pool's token-id string (tokens it has never seen match no entry)."""
        return self._query_ids(self._tokenize(text))[0]

    def _query_ids(self, tokens: list[str]) -> tuple[str, list[int]]:
        unseen = len(self._vocab)
        ids = [self._vocab.get(tok, -1) for tok in tokens]
        seq = "".join(chr(t if t >= 0 else min(unseen + k, self.MAX_VOCAB - 1)) for k, t in enumerate(ids))
        return seq, ids

    def scan_top_k(
        self, seqs: list[str], limits: list[int], k: int, workers: int = -1
    ) -> list[list[tuple[float, int]]]:
        """For each query (a token-id string of this pool), its k best (score, entry) among the pool's
        first ``limits[j]`` entries, best first, equal scores: earlier entry first. One full scan per
        block of 64 queries (``workers``: rapidfuzz's threads, -1 for all cores)."""
        out: list[list[tuple[float, int]]] = []
        if not seqs:
            return out
        choices = self._seqs[: max(limits)]
        lengths = self._lengths.view
        for start in range(0, len(seqs), 64):
            block, ends = seqs[start : start + 64], limits[start : start + 64]
            lcs = process.cdist(block, choices, scorer=LCSseq.similarity, dtype=np.int32, workers=workers)
            for row, seq, end in zip(lcs, block, ends, strict=True):
                kk = min(k, end)
                if kk <= 0:
                    out.append([])
                    continue
                m = len(seq)
                f = f_measures(row[:end], m, lengths[:end]) if m else np.zeros(end)
                cut = np.partition(f, end - kk)[end - kk]  # the k-th largest score
                above = np.flatnonzero(f > cut)
                ties = np.flatnonzero(f == cut)[: kk - len(above)]  # earlier entries win ties
                chosen = np.concatenate([above, ties])
                chosen = chosen[np.lexsort((chosen, -f[chosen]))]
                out.append([(float(f[i]), int(i)) for i in chosen])
        return out

    def best(self, text: str) -> Match | None:
        top = self.top_k(text, 1)
        return top[0] if top else None

    def is_novel(self, text: str) -> tuple[bool, Match | None]:
        """(keep, the most similar entry that blocks it): keep when every entry scores <= threshold."""
        match = self.blocker(text)
        return match is None, match

    def blocker(self, text: str) -> Match | None:
        """The most similar entry scoring above the threshold (equal scores: the earlier), or None.

        Only entries whose bound exceeds the threshold are scored exactly: this is the fast path.
        """
        seq, overlap = self._query(text)
        if overlap is None:
            return None
        # n >= overlap, so F <= 2o/(m+o): an entry needs o > t*m/(2-t) to pass; the full bound
        # is then computed only for those few entries.
        t = self.threshold - _EPS
        cand = np.flatnonzero(overlap > t * len(seq) / (2 - t) - _EPS)
        cand = cand[self._bound(seq, overlap[cand], cand) > t]
        if len(cand) == 0:
            return None
        scores = self._exact(seq, cand)
        best = int(np.lexsort((cand, -scores))[0])
        if scores[best] <= self.threshold:
            return None
        return Match(float(scores[best]), int(cand[best]), self._texts[int(cand[best])])

    def add_many(self, texts: list[str]) -> list[int]:
        """Add texts in order; returns their indexes."""
        return [self.add(text) for text in texts]

    def admit_many(self, texts: list[str]) -> list[tuple[Match | None, int | None]]:
        """``admit`` for each text in order (each compared with the admissions before it too)."""
        return [self.admit(text) for text in texts]

    def admit(self, text: str) -> tuple[Match | None, int | None]:
        """The method's rule for one candidate: compared with the whole pool (earlier admissions of
        the same batch included) and added when novel. Returns (the blocking match, None) or
        (None, the new entry's index). Bootstrap decides every candidate through here."""
        keep, match = self.is_novel(text)
        return (None, self.add(text)) if keep else (match, None)
