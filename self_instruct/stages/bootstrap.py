"""Stage 1: grow the task pool from the seeds until ``target`` machine instructions are accepted.

Requests go out through a sliding window of ``bootstrap.window`` (W) requests. Request ``i``'s
prompt is built from the pool as it stood after requests ``0..i-W`` were applied, with its own
random stream seeded by (seed, i); it is sent as soon as request ``i-W`` has been applied, so one
slow answer holds back only the requests more than W after it. Responses are applied in request
order: parse, filter, novelty check against seeds + every accepted instruction, append. So the
result depends only on the config (W included), the seed and the model's responses, not on
concurrency or on the order responses arrive in.

At most W requests are in flight, and at most 8 per slot of concurrency (1 for a single slot, which
answers in order). Near the target, the number follows the recent yield (accepted instructions per
request over the last applied requests), so the fleet stays full until the target is near and few
requests are answered past it (``wasted_requests`` in the session). Which requests are sent depends
on the answers applied and the concurrency, never on timing, so a rerun from the cache sends the
same ones; what they contain depends on W, never on the concurrency.

The CPU-heavy bookkeeping, each accepted instruction's 10 most similar pool entries, and the
writes run in a worker thread while requests are in flight: they never delay the next request.

Crash safety: a request's accepted and rejected records are written first, then its line in
``bootstrap_requests.jsonl``. On start, records of requests without that line are discarded, and the
loop resumes at the first request not applied.
"""

from __future__ import annotations

import bisect
import math
import queue
import random
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Config
from ..filters import check_instruction
from ..llm.base import Request
from ..novelty import NoveltyIndex
from ..parsing import Reading, parse_answer
from ..prompts import render_bootstrap, render_bootstrap_json, template
from ..store import RunDir, rejection, write_jsonl_atomic
from ..structured import schema_text
from ..tasks import Task
from .common import StageContext, drop_uncommitted, failure_record, live_stats, progress

STAGE = "bootstrap"
RECENT = 128  # requests the recent yield is measured over


@dataclass
class BootstrapResult:
    accepted: int
    rejected: int
    requests: int
    stopped: str  # "target" or "max_requests"
    wasted: int = 0  # requests answered in this session but not applied (past the target)


def max_bootstrap_requests(cfg: Config) -> int:
    """The requests bootstrap may send in all (bootstrap.max_requests; 0: 20 x target + 50)."""
    return cfg.bootstrap.max_requests or 20 * cfg.target + 50


def sample_prompt_instructions(
    rng: random.Random, seeds: list[str], machine: Sequence[str], n_total: int, n_machine: int
) -> list[str]:
    """n_machine from the machine-generated pool (once it has that many), the rest from the seeds."""
    take_machine = n_machine if len(machine) >= n_machine else 0
    chosen = rng.sample(machine, take_machine) if take_machine else []
    chosen += rng.sample(seeds, min(n_total - take_machine, len(seeds)))
    rng.shuffle(chosen)
    return chosen


def _recover(ctx: StageContext) -> tuple[list[dict], set[int]]:
    """Accepted records of applied requests only; drop what a crash left half-applied."""
    f = ctx.files
    applied = {r["request"] for r in f.bootstrap_log.read()}
    accepted = f.instructions.read()
    kept = [r for r in accepted if r["request"] in applied]
    if len(kept) != len(accepted):
        write_jsonl_atomic(f.instructions.path, kept)
    drop_uncommitted(f.rejected, STAGE, applied)
    return kept, applied


def shown_instructions(ctx: StageContext, i: int, seeds: list[str], machine: Sequence[str]) -> list[str]:
    """The in-context instructions of request ``i``: its own random stream, seeded by (seed, i)."""
    b = ctx.cfg.bootstrap
    rng = random.Random(f"{ctx.cfg.seed}:{STAGE}:{i}")
    return sample_prompt_instructions(
        rng, seeds, machine, b.num_prompt_instructions, b.num_machine_instructions
    )


def build_request(ctx: StageContext, i: int, shown: list[str]) -> Request:
    b = ctx.cfg.bootstrap
    stop_at = len(shown) + b.max_new_per_request + 1
    stop: tuple[str, ...]
    if ctx.structured:
        prompt, stop = render_bootstrap_json(shown, b.max_new_per_request), ()
    elif ctx.api_is_completions:  # a blank line ends a continued list
        prompt, stop = render_bootstrap(shown), ("\n\n", f"\n{stop_at}.")
    else:  # a chat answer may space its items with blank lines
        prompt, stop = render_bootstrap(shown), (f"\n{stop_at}.",)
    return Request(
        prompt=prompt,
        max_tokens=b.max_tokens,
        temperature=b.temperature,
        top_p=b.top_p,
        presence_penalty=b.presence_penalty,
        frequency_penalty=b.frequency_penalty,
        stop=stop,
        seed=ctx.cfg.seed * 1_000_003 + i,
        schema=schema_text("bootstrap", b.max_new_per_request) if ctx.structured else None,
    )


class _Prefix(Sequence[str]):
    """The first ``n`` items of a list, without copying it (what a request's prompt may sample)."""

    def __init__(self, items: list[str], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # random.sample indexes with non-negative ints below len
        if isinstance(i, slice):
            return self.items[: self.n][i]
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.items[i]


def in_flight_wanted(remaining: int, recent: deque[int], cap: int, best: int) -> int:
    """How many requests to keep in flight: ``cap``, until the recent yield says fewer will reach the
    target. (Sending more than that near the end wastes requests and, measured with bench/fleet.py,
    saves no time: the run ends with its slowest answers either way.) The yield counts one request
    that brought its ``best`` besides the recent ones, so a small run starts small and one short
    first answer does not send a burst."""
    if recent and sum(recent) == 0:
        return cap
    per_request = (sum(recent) + best) / (len(recent) + 1)
    return max(1, min(cap, math.ceil(remaining / per_request)))


def in_flight_cap(window: int, concurrency: int) -> int:
    """The most requests worth having in flight: a single slot answers in order and needs no more
    than the one it works on; several slots answer out of order, and about 8 per slot keep them busy
    while the oldest request is still out (bench/fleet.py). Never more than the window."""
    return 1 if concurrency == 1 else min(window, 8 * concurrency)


class _Writer:
    """Writes applied requests in order from a worker thread, after computing their accepted
    instructions' most similar pool entries (CPU work the event loop never waits for)."""

    def __init__(self, files: RunDir, index: NoveltyIndex, k: int) -> None:
        self.files, self.index, self.k = files, index, k
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="bootstrap-writer", daemon=True)
        self.thread.start()

    def put(self, accepted: list[dict], rejected: list[dict], failed: list[dict], log: dict) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((accepted, rejected, failed, log))

    def _loop(self) -> None:
        done = False
        while not done:
            items = [self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get())
            if items[-1] is None:
                done = True
                items.pop()
            if self.error is not None or not items:
                continue
            try:
                self._write(items)
            except BaseException as e:  # re-raised on the event loop by put() or close()
                self.error = e

    def _write(self, items: list[tuple]) -> None:
        """Records first, then the log lines that commit them (a crash in between leaves records
        that _recover discards)."""
        accepted = [r for item in items for r in item[0]]
        _record_similar(self.index, accepted, self.k)
        self.files.instructions.append(accepted)
        self.files.rejected.append([r for item in items for r in item[1]])
        self.files.failures.append([r for item in items for r in item[2]])
        self.files.bootstrap_log.append([item[3] for item in items])

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


async def run_bootstrap(ctx: StageContext, seed_tasks: list[Task]) -> BootstrapResult:
    cfg, b = ctx.cfg, ctx.cfg.bootstrap
    assert ctx.engine is not None
    seeds = [t.instruction for t in seed_tasks]
    accepted, applied = _recover(ctx)
    index = NoveltyIndex(b.similarity_threshold, b.tokenizer)
    for text in seeds:
        index.add(text)
    for r in accepted:
        index.add(r["instruction"])
    machine = [r["instruction"] for r in accepted]
    made_by = [r["request"] for r in accepted]  # the request that made each, ascending
    n_rejected = sum(1 for r in ctx.files.rejected.read() if r.get("stage") == STAGE)
    max_requests = max_bootstrap_requests(cfg)
    next_apply = max(applied) + 1 if applied else 0
    next_send = next_apply
    sent: deque[tuple[Request, list[str]]] = deque()  # in flight: each request and its shown tasks
    recent: deque[int] = deque(maxlen=RECENT)  # accepted per applied request, lately
    stopped = "target"
    bar = progress(cfg, total=cfg.target, initial=min(len(machine), cfg.target), desc=STAGE, unit="instr")
    pipe = ctx.engine.pipe(STAGE)
    cap = in_flight_cap(b.window, ctx.engine.concurrency)
    writer = _Writer(ctx.files, index, b.record_similar)
    wasted, ok = 0, False
    try:
        while len(machine) < cfg.target:
            wanted = in_flight_wanted(cfg.target - len(machine), recent, cap, b.max_new_per_request)
            # Request i may go once requests 0..i-W are applied; its prompt sees exactly those.
            while next_send < min(max_requests, next_apply + b.window) and pipe.in_flight < wanted:
                pool = _Prefix(machine, bisect.bisect_right(made_by, next_send - b.window))
                shown = shown_instructions(ctx, next_send, seeds, pool)
                request = build_request(ctx, next_send, shown)
                pipe.send(request)
                sent.append((request, shown))
                next_send += 1
            if not pipe.in_flight:
                stopped = "max_requests"
                break
            response = await pipe.take()
            request, shown = sent.popleft()
            i = next_apply
            acc, rej = _apply(ctx, i, shown, response, index, len(machine))
            failed = [] if response.ok else [failure_record(STAGE, i, request, response)]
            log = {
                "request": i,
                "finish_reason": response.finish_reason,
                "accepted": len(acc),
                "rejected": len(rej),
                "prompt_tokens": response.prompt_tokens,
                "completion_tokens": response.completion_tokens,
                "error": response.error,
                "text": response.text,
            }
            writer.put(acc, rej, failed, log)
            machine.extend(r["instruction"] for r in acc)
            made_by.extend(i for _ in acc)
            recent.append(len(acc))
            n_rejected += len(rej)
            next_apply = i + 1
            bar.update(min(len(acc), cfg.target - bar.n))
            bar.set_postfix(live_stats(ctx.engine, STAGE, rejected=n_rejected, requests=next_apply))
        ok = True
    finally:
        wasted = await pipe.close(cancel=not ok)
        writer.close()
        bar.close()
    return BootstrapResult(len(machine), n_rejected, next_apply, stopped, wasted)


def _apply(ctx: StageContext, i: int, shown: list[str], resp, index: NoveltyIndex, n_machine: int):
    """Parse one response and sort its instructions into accepted and rejected records."""
    b = ctx.cfg.bootstrap
    accepted: list[dict] = []
    rejected: list[dict] = []
    if not resp.ok:
        return accepted, rejected
    how = Reading(
        continuation=ctx.api_is_completions,
        structured=ctx.structured,
        max_items=b.max_new_per_request,
        first_number=b.num_prompt_instructions + 1,
        header=template("bootstrap"),
        shown=tuple(shown),
    )
    parsed = parse_answer("bootstrap", resp.text, resp.finish_reason, how)
    rejected += [rejection(STAGE, i, reason, text) for reason, text in parsed.rejected]
    items = parsed.kept
    if resp.finish_reason == "length" and not b.keep_truncated:
        rejected += [rejection(STAGE, i, "truncated", t) for t in items]
        items = []
    for text in items:
        # Past the target, items are still recorded, not silently dropped.
        reason = "over_target" if n_machine + len(accepted) >= ctx.cfg.target else check_instruction(text)
        if reason:
            rejected.append(rejection(STAGE, i, reason, text))
            continue
        blocker, entry = index.admit(text)
        if blocker is not None:
            near = {"instruction": blocker.text, "score": blocker.score}
            rejected.append(rejection(STAGE, i, "too_similar", text, most_similar=near))
            continue
        accepted.append(
            {
                "id": f"machine_{n_machine + len(accepted)}",
                "instruction": text,
                "request": i,
                "_entry": entry,  # replaced by most_similar in the writer thread
            }
        )
    return accepted, rejected


def _record_similar(index: NoveltyIndex, records: list[dict], k: int) -> None:
    """Give each accepted record its k most similar pool entries as they were when it was accepted
    (seeds and every earlier acceptance), in one pass for all the records given."""
    entries = [r.pop("_entry") for r in records]
    tops = index.top_k_before(entries, k) if k > 0 else [[] for _ in entries]
    for record, top in zip(records, tops, strict=True):
        record["most_similar"] = [{"instruction": m.text, "score": m.score} for m in top]
