"""The database of one or more run directories, built with sqlite-utils from the run files alone.

Every table has a ``run`` column (the run directory's name). The database is rebuilt when a run
changed: the size and modification time of every file it is built from are kept in its ``_meta``
table, and a build whose record differs is replaced. A new build is written to a temporary file and
renamed into place, so a reader never sees half a database. Run directories are only read.

A line of a run file that cannot be read (a torn last line, a line that is not a JSON object) is left
out of the tables and recorded in the ``unread`` table, so that a database that is up to date still
reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..store import (
    RUN_FILE_NAMES,
    LenientReader,
    RunDir,
    Unread,
    as_rejection,
    rejected_instruction,
    request_totals,
)
from .metadata import FTS, INDEXES, primary_key, schema


@dataclass(frozen=True)
class Run:
    label: str  # the run column of every row: the directory's name, with parents where names clash
    root: Path
    report: Path | None  # the folder holding this run's analysis report.html, if one exists

    @property
    def files(self) -> RunDir:
        return RunDir(self.root)

    @property
    def report_mount(self) -> str:
        """Where Datasette serves the report's folder (a URL path part)."""
        return "report-" + "".join(c if c.isalnum() else "-" for c in self.label)

    @property
    def report_url(self) -> str | None:
        return f"/{self.report_mount}/report.html" if self.report else None


# ---------------------------------------------------------------------------------------- runs


def find_runs(paths: list[str]) -> list[Run]:
    """The run directories named on the command line, with a unique label each."""
    roots = [RunDir.open(p).root.resolve() for p in paths]
    if len(set(roots)) < len(roots):
        raise UserError("the same run directory is named twice")
    labels = _labels(roots)
    return [Run(label, root, _find_report(root)) for label, root in zip(labels, roots, strict=True)]


def _labels(roots: list[Path]) -> list[str]:
    """Each root's last path part, or as many trailing parts as make every label unique."""
    for depth in range(1, max(len(r.parts) for r in roots) + 1):
        labels = ["/".join(r.parts[-depth:]).lstrip("/") for r in roots]
        if len(set(labels)) == len(labels):
            return labels
    return [str(r) for r in roots]


def _find_report(root: Path) -> Path | None:
    """Where ``self-instruct analyze RUN --out DIR`` left report.html: the run directory or a folder in it."""
    if (root / "report.html").is_file():
        return root
    found = sorted(p.parent for p in root.glob("*/report.html") if p.is_file())
    return found[0] if found else None


def _code_hash() -> str:
    """The code that shapes the tables: a database built by other code is rebuilt, never served."""
    here = Path(__file__).parent
    code = b"".join((here / name).read_bytes() for name in ("database.py", "metadata.py"))
    return hashlib.sha256(code).hexdigest()[:16]


def fingerprint(runs: list[Run]) -> str:
    """What the database is built from: each run's files by size and modification time, and the code."""
    described = []
    for run in runs:
        files = {}
        for name in RUN_FILE_NAMES:  # a change to any of them makes the database stale
            path = run.root / name
            if path.is_file():
                st = path.stat()
                files[name] = [st.st_size, st.st_mtime_ns]
        report = str(run.report) if run.report else None
        described.append({"label": run.label, "root": str(run.root), "files": files, "report": report})
    return json.dumps({"code": _code_hash(), "runs": described}, sort_keys=True)


# ---------------------------------------------------------------------------------------- rows


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def run_row(run: Run) -> dict:
    """The runs table: what the manifest says about a run (a merged batch directory has less)."""
    m = run.files.read_manifest(strict=True)
    backend = m.get("backend") or {}
    counts = m.get("counts") or {}
    totals = request_totals(m.get("requests"))
    return {
        "run": run.label,
        "path": str(run.root),
        "kind": "merged" if "merged_from" in m else "run",
        "run_name": m.get("run_name"),
        "model": backend.get("model"),
        "backend": backend.get("name"),
        "api": backend.get("api"),
        "classify_method": (m.get("classify") or {}).get("method"),
        "structured": (m.get("structured") or {}).get("on"),
        "random_seed": m.get("random_seed"),
        "target": (m.get("config") or {}).get("target"),
        "created": m.get("created"),
        "updated": m.get("updated"),
        "machine_instructions": counts.get("machine_instructions"),
        "dataset_tasks": counts.get("dataset_tasks"),
        "dataset_rows": counts.get("dataset_rows"),
        "rejected": counts.get("rejected"),
        "failures_outstanding": counts.get("failures"),
        "tokens": totals.tokens or None,
        "cost_usd": totals.cost_usd or None,
        "wall_seconds": m.get("wall_seconds"),
        "merged_from": _json(m.get("merged_from")),
        "report": run.report_url,
    }


def instruction_rows(run: Run, read: LenientReader) -> Iterator[dict]:
    """Accepted machine instructions with their classification and their 10 most similar entries."""
    classes = {r["id"]: r for r in read(run.files.classifications.path)}
    for r in read(run.files.instructions.path):
        similar = r.get("most_similar") or []
        c = classes.get(r["id"], {})
        yield {
            "run": run.label,
            "id": r["id"],
            "instruction": r["instruction"],
            "request": r.get("request"),
            "is_classification": c.get("is_classification"),
            "classify_answer": c.get("answer"),
            "classify_method": c.get("method"),
            "margin": c.get("margin"),
            "nearest": similar[0]["instruction"] if similar else None,
            "nearest_score": similar[0]["score"] if similar else None,
            "most_similar": _json(similar),
        }


def task_rows(run: Run, read: LenientReader) -> Iterator[dict]:
    for t in run.files.task_records(read):
        yield {
            "run": run.label,
            "id": t["id"],
            "instruction": t["instruction"],
            "is_classification": t.get("is_classification"),
            "n_instances": len(t.get("instances") or []),
            "instances": _json(t.get("instances") or []),
        }


def instance_rows(run: Run, read: LenientReader) -> Iterator[dict]:
    """One row per dataset row: the instances of tasks.jsonl, which dataset.jsonl flattens (a run that
    has only dataset.jsonl: its rows, grouped by instruction)."""
    methods = {r["id"]: r.get("method") for r in read(run.files.instances.path)}
    for t in run.files.task_records(read):
        # A merged directory's task ids are "source run/id": its answers are in that run.
        source_run, _, source_id = t["id"].rpartition("/")
        for n, inst in enumerate(t.get("instances") or [], start=1):
            yield {
                "run": run.label,
                "task_id": t["id"],
                "n": n,
                "instruction": t["instruction"],
                "input": inst.get("input", ""),
                "output": inst.get("output", ""),
                "is_classification": t.get("is_classification"),
                "method": methods.get(t["id"]),
                "source_run": source_run or run.label,
                "source_id": source_id,
                "rating": inst.get("rating"),
            }


def rejected_rows(run: Run, read: LenientReader) -> Iterator[dict]:
    """Every rejection: an instruction, a part of an answer, an instance, or a task without instances
    (any version's records, read in the one shape)."""
    for r in map(as_rejection, read(run.files.rejected.path)):
        details = dict(r["details"])
        near = details.pop("most_similar", None) or {}
        instruction = rejected_instruction(r)
        details.pop("instruction", None)
        bootstrap = r["stage"] == "bootstrap"
        yield {
            "run": run.label,
            "stage": r["stage"],
            "reason": r["reason"],
            "id": None if bootstrap or r["key"] is None else str(r["key"]),
            "request": r["key"] if bootstrap else None,
            "instruction": instruction,
            "input": details.pop("input", None),
            "output": details.pop("output", None),
            "text": None if r["text"] == instruction else r["text"],
            "attempt": details.pop("attempt", None),
            "blocked_by": near.get("instruction"),
            "score": near.get("score"),
            "source_run": details.pop("run", None),  # a merged batch: the run the dropped task came from
            "detail": _json(details) if details else None,
        }


def failure_rows(run: Run, read: LenientReader) -> Iterator[dict]:
    for r in read(run.files.failures.path):
        yield {
            "run": run.label,
            "stage": r.get("stage"),
            "key": None if r.get("key") is None else str(r["key"]),
            "error": r.get("error"),
            "attempts": r.get("attempts"),
            "prompt_sha256": r.get("prompt_sha256"),
        }


def response_rows(run: Run, read: LenientReader) -> Iterator[dict]:
    """The model's answers as the stages kept them: bootstrap requests, classifications, instances."""
    f = run.files
    for r in read(f.bootstrap_log.path):
        yield _response(run, "bootstrap", str(r["request"]), r.get("text"), r, None, None)
    for r in read(f.classifications.path):
        yield _response(run, "classify", r["id"], r.get("answer"), r, r.get("instruction"), r.get("method"))
    for r in read(f.instances.path):
        yield _response(run, "instances", r["id"], r.get("raw"), r, r.get("instruction"), r.get("method"))


def _response(run: Run, stage: str, key: str, text, r: dict, instruction, method) -> dict:
    return {
        "run": run.label,
        "stage": stage,
        "key": key,
        "instruction": instruction,
        "method": method,
        "finish_reason": r.get("finish_reason"),
        "text": text,
        "kept": len(r["instances"]) if "instances" in r else r.get("accepted"),
        "error": r.get("error"),
    }


def unread_rows(run: Run, read: LenientReader) -> Iterator[dict]:
    """The lines of the run's files that the other tables left out (so it is filled after them)."""
    for name in RUN_FILE_NAMES:
        for u in read.unread_by_file.get(run.root / name, []):
            yield {"run": run.label, "file": name, "line": u.line, "why": u.why}


def read_unread(db_path: Path, runs: list[Run]) -> list[Unread]:
    """The run files' lines that a database (built or up to date) left out, named by their paths."""
    import sqlite_utils

    roots = {run.label: run.root for run in runs}
    db = sqlite_utils.Database(db_path)
    try:
        return [Unread(roots[r["run"]] / r["file"], r["line"], r["why"]) for r in db["unread"].rows]
    finally:
        db.close()


ROWS: dict[str, Callable[[Run, LenientReader], Iterator[dict]]] = {
    "runs": lambda run, read: iter([run_row(run)]),
    "instructions": instruction_rows,
    "tasks": task_rows,
    "instances": instance_rows,
    "rejected": rejected_rows,
    "failures": failure_rows,
    "responses": response_rows,
    "unread": unread_rows,  # last: it lists what the tables above could not read
}


# ---------------------------------------------------------------------------------------- build


def built_fingerprint(db_path: Path) -> str | None:
    """The fingerprint a database was built with; None when there is no file. A file that is not a
    database of ours is refused rather than replaced (a mistyped --db must not cost a file)."""
    import sqlite_utils

    if not db_path.exists() or db_path.is_dir():
        return None
    try:
        db = sqlite_utils.Database(db_path)
        try:
            meta = {r["key"]: r["value"] for r in db["_meta"].rows} if db["_meta"].exists() else {}
        finally:
            db.close()
    except sqlite3.DatabaseError:
        meta = {}
    if "fingerprint" not in meta:
        raise UserError(f"{db_path}: exists and is not a database written by self-instruct view")
    return meta["fingerprint"]


def build_database(runs: list[Run], db_path: Path) -> bool:
    """Write the database unless it is current; True when it was (re)built."""
    state = fingerprint(runs)
    if built_fingerprint(db_path) == state:
        return False
    tmp = db_path.with_name(db_path.name + ".tmp")
    _writable(db_path, tmp)
    try:
        _fill(runs, tmp, state)
        os.replace(tmp, db_path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _writable(db_path: Path, tmp: Path) -> None:
    if db_path.is_dir():
        raise UserError(f"{db_path}: cannot write the database (it is a directory)")
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        tmp.touch()
    except OSError as e:
        raise UserError(f"{db_path}: cannot write the database ({e.strerror or e})") from None


def _fill(runs: list[Run], path: Path, state: str) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(path)
    read = LenientReader()
    try:
        for name, rows in ROWS.items():
            pk = primary_key(name)
            table = db.table(name).create(schema(name), pk=tuple(pk) if pk else None)
            table.insert_all((row for run in runs for row in rows(run, read)), batch_size=1000)
        for name, columns in FTS.items():
            db.table(name).enable_fts(columns, create_triggers=False)
        for name, columns in INDEXES:
            db.table(name).create_index(columns)
        db.table("_meta").insert_all(
            [{"key": "fingerprint", "value": state}, {"key": "built", "value": _now()}], pk="key"
        )
    finally:
        db.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
