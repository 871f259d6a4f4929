"""``analyze``'s per-instruction work on Ray Data (``analyze --executor ray``).

Parsing verb-noun pairs with spaCy (about 550 instructions/s on one core) and scoring each
instruction's ROUGE-L to its most similar seed are independent per instruction: both go through
``map_batches`` over a pool of actors (each loads the spaCy pipeline, or indexes the seeds, once).
Rows carry their place, and the driver puts the answers back in order, so the statistics are those
of the local analysis exactly (tests/test_cluster.py compares the stats.json of both).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from ..analysis.verbnoun import BATCH_SIZE, Pair, clip

ROWS_PER_BATCH = 256


class _Parse:
    """A map_batches actor: the verb-noun pair of each text ("" where absent)."""

    def __init__(self) -> None:
        from ..analysis.verbnoun import shared_pipeline

        self.nlp = shared_pipeline()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..analysis.verbnoun import pair_of

        pairs = [pair_of(doc) for doc in self.nlp.pipe(list(batch["text"]), batch_size=BATCH_SIZE)]
        return {
            "i": batch["i"],
            "verb": np.array([v or "" for v, _ in pairs], dtype=object),
            "noun": np.array([n or "" for _, n in pairs], dtype=object),
        }


class _SeedScore:
    """A map_batches actor: each text's ROUGE-L F to its most similar seed."""

    def __init__(self, seeds: list[str]) -> None:
        from ..analysis.stats import seed_similarity

        self.score = lambda texts: seed_similarity(texts, seeds)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"i": batch["i"], "score": np.array(self.score(list(batch["text"])), dtype=float)}


class RayDataMap:
    """The analysis's map work on a Ray cluster: one actor per CPU of the cluster."""

    def __init__(self, address: str, progress: bool = False) -> None:
        from . import connect

        self.ray = connect(address)
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        context.print_on_execution_start = False
        self.actors = max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def _map(self, texts: list[str], fn: Any, args: tuple = ()) -> list[dict]:
        """``fn`` over the texts, its rows back in the texts' order."""
        import ray.data

        from . import cpu_share

        actors = max(1, min(self.actors, -(-len(texts) // ROWS_PER_BATCH)))
        ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
        with warnings.catch_warnings():
            # max_restarts has no named parameter, and Ray warns of the remote arguments that carry it.
            # Without it Ray logs an error line for each actor: it would restart an actor whose
            # constructor's arguments may be gone. A lost actor fails the analysis; run it again.
            warnings.simplefilter("ignore", DeprecationWarning)
            mapped = ds.map_batches(
                fn,
                fn_constructor_args=args,
                batch_size=ROWS_PER_BATCH,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=cpu_share(self.ray, actors),
                max_restarts=0,
            )
        rows = mapped.take_all()
        return sorted(rows, key=lambda r: r["i"])

    def pairs(self, texts: list[str], progress: bool = False) -> list[Pair]:
        """As ``verbnoun.extract_pairs``: each distinct (clipped) text parsed once."""
        unique = list(dict.fromkeys(clip(t) for t in texts))
        if not unique:
            return [(None, None) for _ in texts]
        rows = self._map(unique, _Parse)
        found = {text: (r["verb"] or None, r["noun"] or None) for text, r in zip(unique, rows, strict=True)}
        return [found[clip(t)] for t in texts]

    def seed_scores(self, texts: list[str], seeds: list[str]) -> list[float]:
        """As ``stats.seed_similarity``."""
        if not texts:
            return []
        return [float(r["score"]) for r in self._map(texts, _SeedScore, (seeds,))]
