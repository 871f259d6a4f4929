"""Stage 1: grow the task pool from the seeds until ``target`` machine instructions are accepted.

The loop works in rounds of ``requests_per_round`` requests. Request ``i`` belongs to round
``i // requests_per_round``; its prompt is built from the pool as it stood at the start of its round,
with its own random stream seeded by (seed, i). Responses are applied in request order: parse,
filter, novelty check against seeds + every accepted instruction (earlier ones in the same round
included), append. So the result depends only on the config, the seed and the model's responses,
not on concurrency or on the order responses arrive in.

Crash safety: a request's accepted and rejected records are written first, then its line in
``bootstrap_requests.jsonl``. On start, records of requests without that line are discarded, and the
loop resumes at the first request not applied.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..filters import check_instruction
from ..llm.base import Request
from ..novelty import NoveltyIndex
from ..parsing import parse_instructions
from ..prompts import render_bootstrap, render_bootstrap_json, template
from ..store import write_jsonl_atomic
from ..structured import parse_list_json, schema_text
from ..tasks import Task
from .common import StageContext, drop_uncommitted, failure_record, live_stats, progress

STAGE = "bootstrap"


@dataclass
class BootstrapResult:
    accepted: int
    rejected: int
    requests: int
    stopped: str  # "target" or "max_requests"


def sample_prompt_instructions(
    rng: random.Random, seeds: list[str], machine: list[str], n_total: int, n_machine: int
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
    drop_uncommitted(f.rejected, STAGE, "request", applied)
    return kept, applied


def shown_instructions(ctx: StageContext, i: int, seeds: list[str], machine: list[str]) -> list[str]:
    """The in-context instructions of request ``i``: its own random stream, seeded by (seed, i)."""
    b = ctx.cfg.bootstrap
    rng = random.Random(f"{ctx.cfg.seed}:{STAGE}:{i}")
    return sample_prompt_instructions(
        rng, seeds, machine, b.num_prompt_instructions, b.num_machine_instructions
    )


def build_request(ctx: StageContext, i: int, shown: list[str]) -> Request:
    b = ctx.cfg.bootstrap
    stop_at = len(shown) + b.max_new_per_request + 1
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


async def run_bootstrap(ctx: StageContext, seed_tasks: list[Task]) -> BootstrapResult:
    cfg, b, f = ctx.cfg, ctx.cfg.bootstrap, ctx.files
    assert ctx.engine is not None
    seeds = [t.instruction for t in seed_tasks]
    accepted, applied = _recover(ctx)
    index = NoveltyIndex(b.similarity_threshold, b.tokenizer)
    for text in seeds:
        index.add(text)
    for r in accepted:
        index.add(r["instruction"])
    machine = [r["instruction"] for r in accepted]
    n_rejected = sum(1 for r in f.rejected.read() if r.get("stage") == STAGE)
    max_requests = b.max_requests or 20 * cfg.target + 50
    next_req = max(applied) + 1 if applied else 0
    stopped = "target"
    bar = progress(cfg, total=cfg.target, initial=min(len(machine), cfg.target), desc=STAGE, unit="instr")
    try:
        while len(machine) < cfg.target:
            if next_req >= max_requests:
                stopped = "max_requests"
                break
            round_no = next_req // b.requests_per_round
            round_start = round_no * b.requests_per_round
            # The pool as it stood when this round began (earlier rounds' acceptances only).
            snapshot = [r["instruction"] for r in accepted if r["request"] < round_start]
            # Send only about as many of the round's requests as the target still needs (judged by
            # the yield so far); the rest of the round follows with the same snapshot, so this
            # changes how many requests are wasted at the end, never what is generated.
            per_request = max(len(machine) / max(next_req, 1), 0.5)
            want = max(1, math.ceil((cfg.target - len(machine)) / per_request))
            end = min(round_start + b.requests_per_round, max_requests, next_req + want)
            slots = list(range(next_req, end))
            shown = [shown_instructions(ctx, i, seeds, snapshot) for i in slots]
            requests = [build_request(ctx, i, prompt) for i, prompt in zip(slots, shown, strict=True)]
            responses = await ctx.engine.run(requests, stage=STAGE)
            # Apply in request order; write the whole batch at once: records first, then the log
            # lines that commit them (a crash in between leaves records that _recover discards).
            new_acc, new_rej, failed, log = [], [], [], []
            for i, req, resp, prompt in zip(slots, requests, responses, shown, strict=True):
                if len(machine) >= cfg.target:
                    break
                acc, rej = _apply(ctx, i, prompt, resp, index, len(machine))
                if not resp.ok:
                    failed.append(failure_record(STAGE, i, req, resp))
                log.append(
                    {
                        "request": i,
                        "finish_reason": resp.finish_reason,
                        "accepted": len(acc),
                        "rejected": len(rej),
                        "prompt_tokens": resp.prompt_tokens,
                        "completion_tokens": resp.completion_tokens,
                        "error": resp.error,
                        "text": resp.text,
                    }
                )
                new_acc += acc
                new_rej += rej
                machine.extend(r["instruction"] for r in acc)
                next_req = i + 1
            _record_similar(index, new_acc, b.record_similar)
            f.instructions.append(new_acc)
            f.rejected.append(new_rej)
            f.failures.append(failed)
            f.bootstrap_log.append(log)
            accepted.extend(new_acc)
            n_rejected += len(new_rej)
            bar.update(min(len(new_acc), cfg.target - bar.n))
            bar.set_postfix(live_stats(ctx.engine, STAGE, rejected=n_rejected, requests=next_req))
    finally:
        bar.close()
    return BootstrapResult(len(machine), n_rejected, next_req, stopped)


def _apply(ctx: StageContext, i: int, shown: list[str], resp, index: NoveltyIndex, n_machine: int):
    """Parse one response and sort its instructions into accepted and rejected records."""
    b = ctx.cfg.bootstrap
    accepted: list[dict] = []
    rejected: list[dict] = []
    if not resp.ok:
        return accepted, rejected
    parsed = None
    if ctx.structured:
        parsed = parse_list_json(
            resp.text, STAGE, finish_reason=resp.finish_reason, max_items=b.max_new_per_request, shown=shown
        )
    if parsed is None:
        parsed = parse_instructions(
            resp.text,
            first_number=b.num_prompt_instructions + 1,
            finish_reason=resp.finish_reason,
            continuation=ctx.api_is_completions,
            max_items=b.max_new_per_request,
            header=template("bootstrap"),
            shown=shown,
        )
    rejected += [
        {"stage": STAGE, "request": i, "reason": reason, "instruction": text}
        for reason, text in parsed.rejected
    ]
    items = parsed.kept
    if resp.finish_reason == "length" and not b.keep_truncated:
        rejected += [{"stage": STAGE, "request": i, "reason": "truncated", "instruction": t} for t in items]
        items = []
    for text in items:
        # Past the target, items are still recorded, not silently dropped.
        reason = "over_target" if n_machine + len(accepted) >= ctx.cfg.target else check_instruction(text)
        if reason:
            rejected.append({"stage": STAGE, "request": i, "reason": reason, "instruction": text})
            continue
        blocker, entry = index.admit(text)
        if blocker is not None:
            rejected.append(
                {
                    "stage": STAGE,
                    "request": i,
                    "reason": "too_similar",
                    "instruction": text,
                    "most_similar": {"instruction": blocker.text, "score": blocker.score},
                }
            )
            continue
        accepted.append(
            {
                "id": f"machine_{n_machine + len(accepted)}",
                "instruction": text,
                "request": i,
                "_entry": entry,  # replaced by most_similar once the round is applied
            }
        )
    return accepted, rejected


def _record_similar(index: NoveltyIndex, records: list[dict], k: int) -> None:
    """Give each accepted record its k most similar pool entries as they were when it was accepted
    (seeds and earlier acceptances, those of the same round included), in one pass for the round."""
    entries = [r.pop("_entry") for r in records]
    tops = index.top_k_before(entries, k) if k > 0 else [[] for _ in entries]
    for record, top in zip(records, tops, strict=True):
        record["most_similar"] = [{"instruction": m.text, "score": m.score} for m in top]
