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
import random
from collections import deque
from collections.abc import Callable, Sequence

from ..config import Config
from ..filters import check_instruction
from ..llm.base import Request, Response
from ..novelty import NoveltyIndex, PoolIndex
from ..parsing import Reading, parse_answer
from ..prompts import render_bootstrap, render_bootstrap_json, template
from ..step import Applied, Report, Step, Work
from ..store import rejection
from ..structured import schema_text
from ..tasks import Task
from .common import StageContext

STAGE = "bootstrap"
RECENT = 128  # requests the recent yield is measured over


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


class BootstrapStep(Step):
    """Grow the pool to the target through the sliding window (see the module docstring)."""

    name = STAGE
    unit = "instr"
    output = "instructions"
    log = "bootstrap_log"  # one line per applied request commits its accepted and rejected records
    key = "request"
    batchable = False  # each request's prompt waits on the answers W requests before it

    def __init__(
        self, ctx: StageContext, seed_tasks: list[Task], index: Callable[[], PoolIndex] | None = None
    ) -> None:
        """``index``: makes the pool index (default: a NoveltyIndex in this process)."""
        self.ctx, self.cfg = ctx, ctx.cfg
        self.seeds = [t.instruction for t in seed_tasks]
        b = self.cfg.bootstrap
        self.make_index = index or (lambda: NoveltyIndex(b.similarity_threshold, b.tokenizer))

    async def start(self, concurrency: int) -> None:
        files = self.ctx.files
        accepted = files.instructions.read()
        applied = [r["request"] for r in files.bootstrap_log.read()]
        self.index = self.make_index()
        self.index.add_many(self.seeds + [r["instruction"] for r in accepted])
        self.machine = [r["instruction"] for r in accepted]
        self.made_by = [r["request"] for r in accepted]  # the request that made each, ascending
        self.n_rejected = sum(1 for r in files.rejected.read() if r.get("stage") == STAGE)
        self.max_requests = max_bootstrap_requests(self.cfg)
        self.next_apply = max(applied) + 1 if applied else 0
        self.next_send = self.next_apply
        self.recent: deque[int] = deque(maxlen=RECENT)  # accepted per applied request, lately

    def next(self, in_flight: int, limit: int) -> list[Work] | None:
        b = self.cfg.bootstrap
        remaining = self.cfg.target - len(self.machine)
        if remaining <= 0:
            return None  # the answers still in flight are not needed
        wanted = in_flight_wanted(remaining, self.recent, min(limit, b.window), b.max_new_per_request)
        out: list[Work] = []
        # Request i may go once requests 0..i-W are applied; its prompt sees exactly those.
        last = min(self.max_requests, self.next_apply + b.window)
        while self.next_send < last and in_flight + len(out) < wanted:
            i = self.next_send
            pool = _Prefix(self.machine, bisect.bisect_right(self.made_by, i - b.window))
            shown = shown_instructions(self.ctx, i, self.seeds, pool)
            out.append(Work(i, build_request(self.ctx, i, shown), shown))
            self.next_send += 1
        return out

    def apply(self, work: Work, response: Response) -> Applied:
        i = self.next_apply
        assert work.key == i
        acc, rej = _apply(self.ctx, i, work.data, response, self.index, len(self.machine))
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
        self.machine.extend(r["instruction"] for r in acc)
        self.made_by.extend(i for _ in acc)
        self.recent.append(len(acc))
        self.n_rejected += len(rej)
        self.next_apply = i + 1
        return Applied(acc, rej, log)

    def before_write(self, applied: list[Applied]) -> None:
        _record_similar(
            self.index, [r for a in applied for r in a.records], self.cfg.bootstrap.record_similar
        )

    def progress(self) -> tuple[int, int, dict]:
        extra = {"rejected": self.n_rejected, "requests": self.next_apply}
        return min(len(self.machine), self.cfg.target), self.cfg.target, extra

    def close(self) -> None:
        close = getattr(getattr(self, "index", None), "close", None)  # the sharded index stops its actors
        if close is not None:
            close()

    def finish(self) -> Report:
        notes = []
        describe = getattr(self.index, "describe", None)  # the sharded index tells what it cost
        if describe is not None:
            notes.append(describe())
        if len(self.machine) < self.cfg.target:
            more = "; see rejected.jsonl for why" if self.ctx.files.rejected.path.exists() else ""
            notes.append(
                f"bootstrap stopped after {self.next_apply} requests with {len(self.machine)} of "
                f"{self.cfg.target} instructions (bootstrap.max_requests){more}"
            )
        return Report(notes)


def _apply(ctx: StageContext, i: int, shown: list[str], resp, index: PoolIndex, n_machine: int):
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
        hit = ctx.contaminated([text])[0]  # before the pool: never shown in a prompt
        if hit is not None:
            rejected.append(rejection(STAGE, i, "contaminated", text, **hit))
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


def _record_similar(index: PoolIndex, records: list[dict], k: int) -> None:
    """Give each accepted record its k most similar pool entries as they were when it was accepted
    (seeds and every earlier acceptance), in one pass for all the records given."""
    entries = [r.pop("_entry") for r in records]
    tops = index.top_k_before(entries, k) if k > 0 else [[] for _ in entries]
    for record, top in zip(records, tops, strict=True):
        record["most_similar"] = [{"instruction": m.text, "score": m.score} for m in top]
