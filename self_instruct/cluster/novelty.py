"""The exact novelty index, sharded across Ray actors.

The pool is split across K shards (entry ``g`` of the pool lives in shard ``g mod K``), each a Ray
actor holding a ``NoveltyIndex`` of its entries and their places in the whole pool. Decisions and
records are exactly those of one local ``NoveltyIndex`` (tests/test_cluster.py checks it on random
and adversarial text):

- ``admit_many``: the candidates go to every shard at once; each answers, for each candidate, its
  entry that blocks it (the highest ROUGE-L F above the threshold, the earlier on a tie). The driver
  keeps the best over the shards (highest score, then the earliest place in the pool), then checks
  the candidates against each other in order, on a small local index of the batch's own
  admissions. Admitted candidates are added to their shards before it returns.
- ``top_k_before``: each shard answers the k most similar of its entries that came before the given
  one; the driver merges them by (score, place), as the local index orders a top-k.

Scores are exact floats computed the same way everywhere (token ids differ between shards, but an
LCS depends only on which tokens are equal), so merging by value is exact.
"""

from __future__ import annotations

import bisect
import time
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from ..novelty import Match, NoveltyIndex, f_measures, rouge_tokens, unicode_tokens

Best = tuple[float, int] | None  # (score, place in the pool)
# Below this many entries the local index wins on a machine of a few cores (bench/scale.py: the
# crossover lay between 50,000 and 100,000 on 2 cores); a run's note says so.
SMALL_POOL = 50_000


def _better(a: Best, b: Best) -> Best:
    """The blocking match to keep: the higher score, then the earlier entry (as NoveltyIndex)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if (a[0], -a[1]) >= (b[0], -b[1]) else b


class Shard:
    """One part of the pool (a Ray actor): its entries' places in the whole pool, ascending."""

    def __init__(self, threshold: float, tokenizer: str) -> None:
        self.reset(threshold, tokenizer)

    def reset(self, threshold: float, tokenizer: str) -> None:
        self.index = NoveltyIndex(threshold, tokenizer)
        self.places: list[int] = []
        self.cpu = 0.0

    def add(self, items: list[tuple[int, str]]) -> int:
        t0 = time.process_time()
        for place, text in items:
            self.index.add(text)
            self.places.append(place)
        self.cpu += time.process_time() - t0
        return len(self.places)

    def blockers(self, texts: list[str]) -> list[Best]:
        t0 = time.process_time()
        out: list[Best] = []
        for text in texts:
            match = self.index.blocker(text)
            out.append(None if match is None else (match.score, self.places[match.index]))
        self.cpu += time.process_time() - t0
        return out

    def top_k(self, queries: list[tuple[str, int]], k: int) -> list[list[tuple[float, int]]]:
        t0 = time.process_time()
        seqs = [self.index.query_seq(text) for text, _ in queries]
        limits = [bisect.bisect_left(self.places, place) for _, place in queries]
        tops = self.index.scan_top_k(seqs, limits, k, workers=1)
        self.cpu += time.process_time() - t0
        return [[(score, self.places[i]) for score, i in top] for top in tops]

    def cpu_seconds(self) -> float:
        return self.cpu


class ShardedNoveltyIndex:
    """The NoveltyIndex interface bootstrap uses (add_many, admit, admit_many, top_k_before, len),
    over ``shards`` Ray actors of ``cpus`` CPUs each (Ray starts no more actors than the cluster has
    CPUs for: the others would wait)."""

    def __init__(
        self, ray: Any, shards: int, threshold: float = 0.7, tokenizer: str = "rouge", cpus: float = 1.0
    ) -> None:
        self.ray, self.threshold, self.tokenizer = ray, threshold, tokenizer
        actor = ray.remote(num_cpus=cpus)(Shard)
        self.shards = [actor.remote(threshold, tokenizer) for _ in range(shards)]
        self._texts: list[str] = []
        self.startup_seconds = 0.0  # starting the actors (set by cluster.pool_index)
        self.wait_seconds = 0.0  # the driver waiting for the shards' answers: their work and the transfers

    def __len__(self) -> int:
        return len(self._texts)

    def describe(self) -> str:
        """One line on what the cluster did: shards, start-up, their CPU time against the driver's."""
        cpu = self.cpu_seconds()
        line = (
            f"executor = ray: the novelty index in {len(self.shards)} shards holding {len(self)} entries; "
            f"they started in {self.startup_seconds:.1f} s and worked {sum(cpu):.1f} CPU s (the busiest "
            f"{max(cpu, default=0):.1f} s); the driver waited {self.wait_seconds:.1f} s for their answers"
        )
        if len(self) < SMALL_POOL:
            line += (
                f"; below about {SMALL_POOL:,} entries the local executor is faster (the shards' gain "
                "does not pay for the transfers: README, Running on a cluster)"
            )
        return line

    def _get(self, refs: list) -> list:
        """The shards' answers, the time waited for them counted."""
        t0 = time.perf_counter()
        try:
            return self.ray.get(refs)
        finally:
            self.wait_seconds += time.perf_counter() - t0

    def _add(self, texts: list[str]) -> list[int]:
        """Put texts at the end of the pool, each in its shard; returns their places."""
        first = len(self._texts)
        places = list(range(first, first + len(texts)))
        self._texts.extend(texts)
        k = len(self.shards)
        parts: list[list[tuple[int, str]]] = [[] for _ in range(k)]
        for place, text in zip(places, texts, strict=True):
            parts[place % k].append((place, text))
        self._get([s.add.remote(part) for s, part in zip(self.shards, parts, strict=True)])
        return places

    def add_many(self, texts: list[str]) -> list[int]:
        return self._add(list(texts))

    def admit(self, text: str) -> tuple[Match | None, int | None]:
        return self.admit_many([text])[0]

    def admit_many(self, texts: list[str]) -> list[tuple[Match | None, int | None]]:
        """Each candidate against the pool and the admissions before it in this batch, in order."""
        if not texts:
            return []
        answers = self._get([s.blockers.remote(texts) for s in self.shards]) if self._texts else []
        # The batch's own admissions, in order, as token-id strings of a vocabulary of this batch
        # (an LCS depends only on which tokens are equal): a candidate is scored against each of them
        # exactly, as NoveltyIndex.blocker scores the entries it cannot rule out.
        tokenize = rouge_tokens if self.tokenizer == "rouge" else unicode_tokens
        vocab: dict[str, int] = {}
        seqs = ["".join(chr(vocab.setdefault(t, len(vocab))) for t in tokenize(text)) for text in texts]
        lengths = np.array([len(seq) for seq in seqs], dtype=np.int32)
        # scores[j, i]: candidate j (the query) against candidate i (the entry), all pairs at once.
        lcs = process.cdist(seqs, seqs, scorer=LCSseq.similarity, dtype=np.int32)
        scores = f_measures(lcs, lengths[:, None], lengths[None, :])
        taken: list[int] = []  # the candidates admitted so far, in order
        admitted: list[str] = []
        out: list[tuple[Match | None, int | None]] = []
        first = len(self._texts)  # the place of the batch's first admission
        for j, text in enumerate(texts):
            best: Best = None
            for answer in answers:
                best = _better(best, answer[j])
            if taken:
                row = scores[j, taken]
                i = int(np.argmax(row))  # the first of the highest: the earliest admission
                if row[i] > self.threshold:
                    best = _better(best, (float(row[i]), first + i))
            if best is None:
                place = first + len(admitted)
                taken.append(j)
                admitted.append(text)
                out.append((None, place))
            else:
                score, place = best
                out.append((Match(score, place, self._text(place, admitted)), None))
        if admitted:
            self._add(admitted)
        return out

    def _text(self, place: int, admitted: list[str]) -> str:
        n = len(self._texts)
        return self._texts[place] if place < n else admitted[place - n]

    def top_k_before(self, entries: list[int], k: int) -> list[list[Match]]:
        """For each entry, its k most similar among the entries before it, as NoveltyIndex answers."""
        if not entries:
            return []
        queries = [(self._texts[e], e) for e in entries]
        answers = self._get([s.top_k.remote(queries, k) for s in self.shards])
        out: list[list[Match]] = []
        for j, entry in enumerate(entries):
            merged = sorted((m for answer in answers for m in answer[j]), key=lambda m: (-m[0], m[1]))
            out.append([Match(score, place, self._texts[place]) for score, place in merged[: min(k, entry)]])
        return out

    def reset(self, threshold: float = 0.7, tokenizer: str = "rouge") -> None:
        """Empty the pool (the actors stay: starting one takes seconds)."""
        self.threshold, self.tokenizer = threshold, tokenizer
        self.ray.get([s.reset.remote(threshold, tokenizer) for s in self.shards])
        self._texts = []

    def cpu_seconds(self) -> list[float]:
        """Each shard's CPU seconds so far (its process: every thread)."""
        return list(self.ray.get([s.cpu_seconds.remote() for s in self.shards]))

    def close(self) -> None:
        for s in self.shards:
            self.ray.kill(s)
        self.shards = []
