"""What makes a run's output what it is, and the guard that keeps one run directory from mixing two.

A run directory is resumed by running the same command again. Run it again with a different seed
file, seed, model or decoding parameter, and the pool would grow from two different processes while
the manifest described only the last one. So the manifest keeps a *fingerprint* of everything that
changes the output, and a later session whose fingerprint differs is refused, naming the setting
and both values, unless ``--force`` is given (the session list then records what changed).

Settings that change only how the work is done (concurrency, rate limits, retries, timeouts, the
cache, the endpoint URLs, prices, the target, progress bars) are free to change between sessions.
"""

from __future__ import annotations

from .config import Config, get_value, settings
from .errors import UserError

# Settings that do not change what a run produces.
FREE = {
    "run_name",
    "output_dir",
    "seed_file",  # the file's content counts (seed_file.sha256), not where it lies
    "target",
    "progress",
    "executor",  # the sharded index decides exactly as the local one
    "ray.address",
    "ray.shards",
    "ray.max_shards",
    "ray.workers",
    "llm.max_cost",  # a budget says when to stop, not what the run makes: a larger one resumes
    "llm.max_tokens_total",
    "quality.decontaminate",  # the files' content counts (quality.decontaminate.sha256), not their place
    # Judging filters the dataset, which every session rebuilds: turned on for a run made without it,
    # the run ends with the files of one judged from the start (the judge's prompt is on record).
    "quality.judge",
    "bootstrap.max_requests",
    "classify.max_attempts",
    # the model itself is compared as the backend reports it (backend.*), not as configured
    "llm.backend",
    "llm.model",
    "llm.model_path",
    "llm.api",
    "llm.base_url",
    "llm.concurrency",
    "llm.timeout",
    "llm.max_retries",
    "llm.retry_initial",
    "llm.retry_max",
    "llm.n_ctx",
    "llm.cache",
    "llm.cache_dir",
    "llm.rpm",
    "llm.tpm",
    "llm.price_prompt",
    "llm.price_completion",
    "llm.prices",
    "llm.batch_api",
    "llm.batch_poll_seconds",
    "llm.breaker_window",
    "llm.breaker_failure_rate",
}


def fingerprint(cfg: Config, seed_sha256: str, templates: dict, backend: dict | None) -> dict:
    """Every setting that changes the output, by name, with the seed file's and templates' hashes
    and the backend as it describes itself."""
    fp = {name: get_value(cfg, name) for name in settings() if name not in FREE}
    fp["seed_file.sha256"] = seed_sha256
    fp["templates.sha256"] = templates
    if backend:
        fp.update({f"backend.{k}": backend.get(k) for k in ("name", "model", "api")})
    return fp


def changes(old: dict, new: dict) -> list[dict]:
    """The settings whose values differ, as {"setting", "was", "now"}; backend keys only when both
    sessions used a model (a stage without one, such as ``dataset``, says nothing about it)."""
    out = []
    for name, value in new.items():
        if name not in old or old[name] == value:
            continue
        out.append({"setting": name, "was": old[name], "now": value})
    return out


def guard(run_dir, old: dict | None, new: dict, force: bool) -> list[dict]:
    """Refuse a session whose fingerprint differs from the run's (UserError), unless ``force``.
    Returns the changes (recorded in the session when forced)."""
    if not old:
        return []
    diff = changes(old, new)
    if diff and not force:
        first = diff[0]
        more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
        raise UserError(
            f"{run_dir}: setting '{first['setting']}' is {_show(first['was'])} in this run directory and "
            f"{_show(first['now'])} now{more}; a run directory holds one run: use another --run-name, or "
            "--force to continue with the new value on record"
        )
    return diff


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
