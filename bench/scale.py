"""The exact novelty index in one process against the same index sharded on Ray, in the same run.

Both grow a pool from the seed tasks to ``--pool`` accepted instructions on the novelty bench's
synthetic corpus (one candidate in five a near-duplicate of an accepted one), deciding batches of
``--batch`` candidates, each candidate against the pool and the batch's earlier admissions, and
recording every accepted instruction's 10 most similar earlier entries (rounds of 100, as bootstrap
writes them). The script checks that both accept the same instructions with the same records, then
prints the wall time of each, each shard's CPU seconds and the driver's, and projects the sharded
wall time on larger clusters from them (the formula is in the README, "Running on a cluster"):

    .venv/bin/python bench/scale.py --pool 50000              # a local Ray with 2 CPUs, 2 shards
    .venv/bin/python bench/scale.py --pool 50000 --no-records
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from textgen import TextGen

from self_instruct.cluster import connect
from self_instruct.cluster.novelty import ShardedNoveltyIndex
from self_instruct.novelty import NoveltyIndex
from self_instruct.tasks import load_tasks

SEEDS = Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"
ROUND = 100  # acceptances per round of top-10 records


def grow(index, target: int, batch: int, records: bool, checkpoints: list[int]) -> dict:
    """Grow ``index`` to ``target`` accepted; returns the wall and driver CPU seconds spent inside the
    index (candidate generation excluded), a digest of the decisions and records, and the seconds at
    each checkpoint pool size."""
    seeds = [t.instruction for t in load_tasks(SEEDS)]
    index.add_many(seeds)
    gen, rng = TextGen(seed=12345), random.Random(1)
    accepted: list[str] = []
    pending: list[int] = []
    digest = hashlib.sha256()
    wall = cpu = 0.0
    tried = 0
    at: dict[int, float] = {}
    marks = sorted(checkpoints)
    while len(accepted) < target:
        cands = []
        for _ in range(batch):
            if accepted and rng.random() < 0.2:
                words = rng.choice(accepted).split()
                words[rng.randrange(len(words))] = "changed"
                cands.append(" ".join(words))
            else:
                cands.append(gen.sentence())
        t0, c0 = time.perf_counter(), time.process_time()
        decided = index.admit_many(cands)
        for text, (blocker, entry) in zip(cands, decided, strict=True):
            tried += 1
            if entry is None:
                digest.update(f"x{blocker.index}:{blocker.score!r}".encode())
                continue
            if len(accepted) >= target:
                break
            accepted.append(text)
            pending.append(entry)
            digest.update(f"+{entry}".encode())
            if records and (len(pending) == ROUND or len(accepted) == target):
                for top in index.top_k_before(pending, 10):
                    digest.update(repr([(m.index, m.score) for m in top]).encode())
                pending = []
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        while marks and len(accepted) >= marks[0]:
            at[marks.pop(0)] = wall
    return {"wall": wall, "driver_cpu": cpu, "tried": tried, "digest": digest.hexdigest(), "at": at}


def project(
    driver: float, shard_cpu: list[float], fixed: float, nodes: int, cores: int, scale: float
) -> float:
    """Sharded wall time on ``nodes`` x ``cores`` shards: the driver's time, plus the shards' work
    split evenly, plus what every shard pays whatever its share (``fixed``: per-candidate set-up).
    ``scale``: the pool grown, as a multiple of the one measured. Each candidate is checked against
    the whole pool, and each acceptance's records against the entries before it, so the scans grow
    with the square of the pool; the driver's work and the fixed part grow with the candidates."""
    shards = nodes * cores
    scan = max(0.0, sum(shard_cpu) - len(shard_cpu) * fixed)
    return (driver + fixed) * scale + scan * scale**2 / shards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=50_000, help="accepted instructions to grow to")
    ap.add_argument("--batch", type=int, default=256, help="candidates decided per batch")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--no-records", dest="records", action="store_false", help="skip the top-10 records")
    ap.add_argument(
        "--project", type=int, default=1_000_000, help="the pool size to project the wall time to"
    )
    args = ap.parse_args()
    checkpoints = [p for p in (10_000, 50_000, 100_000, 200_000, 500_000, 1_000_000) if p < args.pool]
    checkpoints.append(args.pool)

    t0 = time.perf_counter()
    ray = connect("", num_cpus=args.shards)
    sharded = ShardedNoveltyIndex(ray, args.shards)
    sharded.add_many([])
    startup = time.perf_counter() - t0
    # What each shard pays per candidate whatever its share of the pool (tokenising, the round trip):
    # one batch against shards that hold one entry each.
    probe = ShardedNoveltyIndex(ray, args.shards, cpus=0)
    probe.add_many(["one", "two"][: args.shards])
    gen = TextGen(seed=9)
    probe.admit_many([gen.sentence() for _ in range(args.batch)])  # warm: the first call pays imports
    probe.reset()
    probe.add_many(["one", "two"][: args.shards])
    cands = [gen.sentence() for _ in range(args.batch)]
    before = probe.cpu_seconds()
    t1 = time.perf_counter()
    probe.admit_many(cands)
    round_trip = time.perf_counter() - t1
    fixed_per_candidate = max(b - a for a, b in zip(before, probe.cpu_seconds(), strict=True)) / args.batch
    probe.close()

    what = "with" if args.records else "without"
    print(f"growth from the seeds to {args.pool} accepted, {what} top-10 records, batches of {args.batch}")
    local = grow(NoveltyIndex(), args.pool, args.batch, args.records, checkpoints)
    print(f"  local index:   {local['wall']:8.1f} s  ({local['tried']} candidates)")
    ray_run = grow(sharded, args.pool, args.batch, args.records, checkpoints)
    shard_cpu = sharded.cpu_seconds()
    print(
        f"  ray, {args.shards} shards: {ray_run['wall']:8.1f} s  (Ray start-up {startup:.1f} s, "
        f"not included; a batch's round trip {round_trip * 1000:.0f} ms)"
    )
    assert ray_run["digest"] == local["digest"], "the sharded index decided or recorded differently"
    print("  same decisions and records: yes")
    print(f"{'pool':>9} {'local s':>9} {'ray s':>9} {'ratio':>7}")
    for p in checkpoints:
        lw, rw = local["at"][p], ray_run["at"][p]
        print(f"{p:>9} {lw:>9.1f} {rw:>9.1f} {lw / rw:>6.2f}x")
    print(
        f"CPU seconds: driver {ray_run['driver_cpu']:.1f}; shards "
        + ", ".join(f"{c:.1f}" for c in shard_cpu)
        + f"; per candidate per shard, whatever its share: {fixed_per_candidate * 1e6:.0f} us"
    )
    fixed = fixed_per_candidate * ray_run["tried"]
    target = max(args.project, args.pool)
    print(f"projected wall time on nodes of 8 cores (one shard per core), to {args.pool} and to {target}:")
    for nodes in (4, 16, 64):
        now, then = (
            project(ray_run["driver_cpu"], shard_cpu, fixed, nodes, 8, scale)
            for scale in (1.0, target / args.pool)
        )
        print(f"  {nodes:>3} nodes: {now:8.1f} s  {then / 60:8.1f} min")
    sharded.close()


if __name__ == "__main__":
    main()
