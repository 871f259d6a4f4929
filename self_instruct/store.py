"""A run directory on disk: what makes a directory a run (``RunDir``, the one rule every reader
uses), its files and what they add up to, append-only JSONL stores that survive a crash, atomic
whole-file writes, lenient reading for readers, and the lock that keeps one writer per run directory.

Each append writes whole lines, then flushes and fsyncs, so after a kill the file holds every record
that was reported written, plus at most one torn last line. Opening a store for append detects that
torn line (no trailing newline) and cuts it off, so the next record starts on a clean line. An
append that fails (a full disk) takes back what it wrote: all of its records or none.
"""

from __future__ import annotations

import errno
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jsonlines

try:
    import fcntl
except ImportError:  # Windows: no flock; a second writer is not detected there
    fcntl = None  # type: ignore[assignment]

from .errors import UserError


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def repair_torn_tail(path: Path) -> bool:
    """Cut an unterminated last line (a write cut short by a crash). True if something was cut."""
    if not path.exists():
        return False
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        # Walk back to the previous newline; everything after it is the torn record.
        pos = size
        chunk = 4096
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step)
            nl = buf.rfind(b"\n")
            if nl >= 0:
                f.truncate(pos + nl + 1)
                break
        else:
            f.truncate(0)
        f.flush()
        os.fsync(f.fileno())
    return True


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a store; a torn last line is ignored, any other bad line is an error."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    records = []
    with jsonlines.Reader(data.decode("utf-8").splitlines()) as reader:
        try:
            for obj in reader.iter(type=dict):
                records.append(obj)
        except jsonlines.InvalidLineError as e:
            raise UserError(f"{path}:{e.lineno}: corrupt record ({e})") from None
    return records


@dataclass(frozen=True)
class Unread:
    """A line a reader could not use: torn (a write cut short) or not a JSON object."""

    path: Path
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.why}; the line was not read"


def first_unread(unread: list[Unread]) -> str:
    """For an error that ends a reader before it could report the unread lines: the first of them."""
    return f" ({len(unread)} unread lines; the first: {unread[0]})" if unread else ""


def scan_jsonl(path: str | Path) -> tuple[list[dict], list[Unread]]:
    """Every readable record of a JSONL file, and each line that could not be read (for readers:
    export, view and analyze report those lines instead of dropping them silently or stopping).

    A last line without its newline is a torn write: reported, never parsed, even if it happens to
    be valid JSON, since the writer that resumes the run cuts it off."""
    numbered, unread = scan_jsonl_lines(path)
    return [obj for _, obj in numbered], unread


def scan_jsonl_lines(path: str | Path) -> tuple[list[tuple[int, dict]], list[Unread]]:
    """``scan_jsonl`` with each record's line number (for errors about a record's content)."""
    path = Path(path)
    if not path.exists():
        return [], []
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records: list[tuple[int, dict]] = []
    unread: list[Unread] = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            unread.append(Unread(path, number, f"unreadable line ({e.__class__.__name__}: {e})"))
            continue
        if isinstance(obj, dict):
            records.append((number, obj))
        else:
            unread.append(Unread(path, number, f"not a JSON object ({type(obj).__name__})"))
    if tail:
        unread.append(Unread(path, len(lines) + 1, "torn last line (no newline: a write cut short)"))
    return records, unread


class LenientReader:
    """What export, view and analyze read run files with: ``scan_jsonl``, keeping each file's unread
    lines (once, however often the file is read) for the reader to name."""

    def __init__(self) -> None:
        self.unread_by_file: dict[Path, list[Unread]] = {}

    def __call__(self, path: str | Path) -> list[dict]:
        records, self.unread_by_file[Path(path)] = scan_jsonl(path)
        return records

    @property
    def unread(self) -> list[Unread]:
        return [u for lines in self.unread_by_file.values() for u in lines]


# --- the one rejection record ------------------------------------------------------------------

# The stages whose rejected item is itself an instruction (its text); the others reject a part of
# an answer about a task, whose instruction is in the details.
_INSTRUCTION_ITEMS = ("bootstrap", "dataset", "merge")


def rejection(stage: str, key: str | int | None, reason: str, text: str, **details) -> dict:
    """The one shape of a line of rejected.jsonl, for every stage and the merge: the stage, the key
    of the unit of work it belongs to (a bootstrap request's number, a task's id, a merged task's
    ``run/id``), the reason, the rejected text itself, and whatever else the stage knows under
    ``details`` (the task's instruction, the attempt, the instance's fields, the blocking neighbour)."""
    return {"stage": stage, "key": key, "reason": reason, "text": text, "details": details}


def as_rejection(r: dict) -> dict:
    """A line of rejected.jsonl in the one shape, whichever version wrote it (before it, each stage
    wrote its own keys: ``request``/``id``, ``instruction``, ``text``, ``attempt``, ``input``/``output``,
    ``most_similar``, ``run``)."""
    if "key" in r and "details" in r:
        return r
    stage = str(r.get("stage", "?"))
    if stage == "bootstrap":
        key = r.get("request")
    elif stage == "merge" and r.get("run") is not None:
        key = f"{r['run']}/{r.get('id')}"
    else:
        key = r.get("id")
    if "text" in r:
        text = r["text"]
    elif "output" in r:
        text = f"{r.get('input', '')} => {r['output']}"
    else:
        text = r.get("instruction", "")
    details = {k: v for k, v in r.items() if k not in ("stage", "reason", "request", "id", "text")}
    if stage in _INSTRUCTION_ITEMS and details.get("instruction") == text:
        details.pop("instruction")
    return rejection(stage, key, str(r.get("reason", "?")), text, **details)


def rejected_instruction(r: dict) -> str:
    """The instruction a rejection is about (``r`` in the one shape): the rejected text itself for an
    instruction, else the task's instruction from the details."""
    if r["stage"] in _INSTRUCTION_ITEMS:
        return str(r["text"])
    return str(r["details"].get("instruction", ""))


class JsonlStore:
    """One append-only JSONL file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict]:
        return read_jsonl(self.path)

    def append(self, records: Iterable[dict], *, sync: bool = True) -> int:
        """Append whole lines. ``sync``: fsync too (a power loss keeps them); without it the lines
        are in the kernel once this returns, which a killed process cannot undo."""
        lines = "".join(_dumps(r) + "\n" for r in records)
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        created = not self.path.exists()
        data = lines.encode("utf-8")
        # Unbuffered: a buffered file would try the failed bytes again when it closes.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            except OSError as e:
                # A full disk took part of the lines: take them all back, so an append writes all
                # of its records or none (truncating frees space, so it works on a full disk too).
                os.ftruncate(fd, before)
                raise named(e, self.path) from None
        finally:
            os.close(fd)
        if created:  # the new file's name must survive a power loss too
            fsync_dir(self.path.parent)
        return lines.count("\n")


def named(e: OSError, path: Path) -> OSError:
    """The error naming the file it happened to: a failed write of an open file names none."""
    return e if e.filename else OSError(e.errno, e.strerror, str(path))


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a file created or renamed into it) durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, obj) -> None:
    """Write a whole JSON file through a temporary name, so readers never see half of it."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """The one atomic writer: a temporary file, fsynced, renamed into place, the directory fsynced;
    a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of this writer's own: two writers never share a temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # a full disk, a kill by Ctrl-C: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise named(e, path) from None
        raise
    fsync_dir(path.parent)


def write_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> int:
    lines = [_dumps(r) + "\n" for r in records]
    write_text_atomic(path, "".join(lines))
    return len(lines)


def drop_uncommitted(store: JsonlStore, stage: str, committed: set) -> list[dict]:
    """Remove a stage's rejections whose unit of work (their key) is not in ``committed``: a crash came
    between a unit's rejections and the line that commits it (the executor's recovery), or a derived
    stage replaces its rejections (``committed`` empty). Returns the records kept."""
    records = store.read()
    kept = [r for r in records if r.get("stage") != stage or as_rejection(r)["key"] in committed]
    if len(kept) != len(records):
        write_jsonl_atomic(store.path, kept)
    return kept


# --- the run directory: the one definition of what a run is, its files, and what they add up to.
#
# Every command that reads a run (export, view, analyze, batch) opens it through ``RunDir.open``, so
# a directory is a run for all of them or for none: a directory that holds a manifest or any of the
# run's data files. A merged batch directory (manifest.json, tasks.jsonl, dataset.jsonl,
# rejected.jsonl) is one; a copied dataset.jsonl alone is one too, a run whose other files are gone.

# The files that make a directory a run: the manifest, or any file the run's data lives in.
RUN_MARKERS = ("manifest.json", "tasks.jsonl", "dataset.jsonl", "machine_instructions.jsonl")

# Every file a run directory may hold that readers read (the view's database is built from these).
RUN_FILE_NAMES = (
    "manifest.json",
    "machine_instructions.jsonl",
    "bootstrap_requests.jsonl",
    "classifications.jsonl",
    "instances.jsonl",
    "judgments.jsonl",
    "rejected.jsonl",
    "failures.jsonl",
    "tasks.jsonl",
    "dataset.jsonl",
)


@dataclass(frozen=True)
class Totals:
    """What a run's requests came to, over every stage and session (the manifest's ``requests``)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _number(value) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def request_totals(requests) -> Totals:
    """The one sum over a manifest's per-stage ``requests`` (cli's summary, batch, view, analysis).

    Lenient: a manifest written by hand or by an older version may lack a stage's keys, or the whole
    table, and counts as zero there rather than failing a reader."""
    stages = [c for c in requests.values() if isinstance(c, dict)] if isinstance(requests, dict) else []

    def total(key: str) -> float:
        return sum(_number(c.get(key, 0)) for c in stages)

    return Totals(
        requests=int(total("requests")),
        prompt_tokens=int(total("prompt_tokens")),
        completion_tokens=int(total("completion_tokens")),
        cost_usd=round(total("cost_usd"), 6),
    )


def _lines(path: Path) -> int:
    return len(read_jsonl(path)) if path.exists() else 0


@dataclass(frozen=True)
class RunDir:
    """A run directory: its files by name, and what they say (counts, totals, the dataset).

    Writers (the pipeline, batch) build one on the directory they create; readers get one from
    ``RunDir.open``, which refuses a directory that is not a run."""

    root: Path

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """The run directory at ``path`` for a reader; a UserError (exit 2), one line naming the
        path, when it is none. The same answer for every command that reads runs."""
        root = Path(path)
        if not root.is_dir():
            raise UserError(f"{root}: not a run directory (it does not exist or is not a directory)")
        if not cls.is_run(root):
            raise UserError(f"{root}: not a run directory (no {', '.join(RUN_MARKERS)})")
        return cls(root)

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """The one rule: a directory holding a manifest or any of a run's data files."""
        root = Path(path)
        return root.is_dir() and any((root / name).is_file() for name in RUN_MARKERS)

    @property
    def instructions(self) -> JsonlStore:  # accepted machine instructions
        return JsonlStore(self.root / "machine_instructions.jsonl")

    @property
    def bootstrap_log(self) -> JsonlStore:  # one line per applied bootstrap request: the commit marker
        return JsonlStore(self.root / "bootstrap_requests.jsonl")

    @property
    def classifications(self) -> JsonlStore:
        return JsonlStore(self.root / "classifications.jsonl")

    @property
    def instances(self) -> JsonlStore:
        return JsonlStore(self.root / "instances.jsonl")

    @property
    def judgments(self) -> JsonlStore:  # quality.judge: one rating per instance
        return JsonlStore(self.root / "judgments.jsonl")

    @property
    def rejected(self) -> JsonlStore:
        return JsonlStore(self.root / "rejected.jsonl")

    @property
    def failures(self) -> JsonlStore:
        return JsonlStore(self.root / "failures.jsonl")

    @property
    def tasks(self) -> Path:
        return self.root / "tasks.jsonl"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset.jsonl"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def usage(self) -> JsonlStore:  # one line per request: tokens, cost, endpoint, session
        return JsonlStore(self.root / "usage.jsonl")

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    # ---- what the files say

    def dataset_file(self) -> Path | None:
        """The file the run's dataset is read from: tasks.jsonl (it also knows which tasks are
        classification tasks), else dataset.jsonl (the same rows, flat: all a copied dataset has);
        None when neither has rows yet."""
        return next((p for p in (self.tasks, self.dataset) if p.is_file() and p.stat().st_size > 0), None)

    def require_dataset(self) -> Path:
        """``dataset_file`` for a reader that needs one (export, analyze): a UserError when none."""
        source = self.dataset_file()
        if source is None:
            raise UserError(
                f"{self.root}: run directory without a dataset yet (no tasks.jsonl or dataset.jsonl "
                "with rows; run `self-instruct dataset` first)"
            )
        return source

    def task_records(self, read: Callable[[Path], list[dict]]) -> list[dict]:
        """The dataset as tasks of the seed schema (``id``, ``instruction``, ``instances``,
        ``is_classification``), read with ``read`` (readers pass one that keeps unread lines): the
        records of tasks.jsonl, or dataset.jsonl's rows grouped by instruction in order of first
        appearance (``is_classification`` unknown, ids ``task_N``); [] when there is no dataset yet."""
        source = self.dataset_file()
        if source is None:
            return []
        records = read(source)
        return records if source == self.tasks else group_rows(records)

    def read_manifest(self, *, strict: bool = False) -> dict:
        """The one reader of a run's manifest.json: {} when there is none (yet).

        ``strict`` (export, batch, analysis, view): a manifest that is not a JSON object is a
        UserError naming the file and line; otherwise (a run resuming) it counts as none, since it
        is rewritten anyway."""
        path = self.manifest
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

    def totals(self) -> Totals:
        """Requests, tokens and cost over the whole run, as its manifest records them."""
        return request_totals(self.read_manifest(strict=True).get("requests"))

    def outstanding_failures(self, target: int) -> list[dict]:
        """The failed requests whose work is still undone; failures.jsonl keeps the whole history.

        A classification or instance request is resolved once its instruction got an answer (a later
        run retries it). A failed bootstrap request is never retried, the next one takes its place:
        its failure is resolved once the target is reached."""
        answered = {
            "classify": {r["id"] for r in self.classifications.read()}
            | {as_rejection(r)["key"] for r in self.rejected.read() if r.get("stage") == "classify"},
            "instances": {r["id"] for r in self.instances.read()},
            "judge": {r["key"] for r in self.judgments.read()}
            | {as_rejection(r)["key"] for r in self.rejected.read() if r.get("stage") == "judge"},
        }
        bootstrap_done = len(self.instructions.read()) >= target
        out, seen = [], set()
        for r in self.failures.read():
            stage, key = r.get("stage"), r.get("key")
            if (stage, key) in seen:
                continue
            resolved = bootstrap_done if stage == "bootstrap" else key in answered.get(str(stage), set())
            if not resolved:
                seen.add((stage, key))
                out.append(r)
        return out

    def counts(self, target: int) -> dict:
        """The manifest's ``counts``: recomputed from the files, so they always equal the lines."""
        rejected = self.rejected.read()
        by_stage: dict[str, Counter] = {}
        for r in rejected:
            by_stage.setdefault(r.get("stage", "?"), Counter())[r.get("reason", "?")] += 1
        classes = self.classifications.read()
        inst = self.instances.read()
        history = self.failures.read()
        outstanding = self.outstanding_failures(target)
        failures = Counter(r.get("stage", "?") for r in outstanding)
        return {
            "machine_instructions": len(self.instructions.read()),
            "bootstrap_requests": len(self.bootstrap_log.read()),
            "classified": len(classes),
            "classification_tasks": sum(1 for r in classes if r["is_classification"]),
            "instance_records": len(inst),
            "instances_kept": sum(len(r["instances"]) for r in inst),
            "dataset_tasks": _lines(self.tasks),
            "dataset_rows": _lines(self.dataset),
            "rejected": len(rejected),
            "rejected_by_stage": {s: dict(sorted(c.items())) for s, c in sorted(by_stage.items())},
            "failures": len(outstanding),  # outstanding: requests whose work is still undone
            "failures_by_stage": dict(sorted(failures.items())),
            "failures_history": len(history),  # every failed request ever recorded (failures.jsonl)
            "failures_history_by_stage": dict(sorted(Counter(r.get("stage", "?") for r in history).items())),
        }


def group_rows(rows: list[dict]) -> list[dict]:
    """Flat ``{"instruction", "input", "output"}`` rows as seed-schema tasks, one per instruction.

    A row that is no such row is passed through as it is, so the reader that checks records names
    it rather than this function dropping it."""
    tasks: dict[str, dict] = {}
    out: list[dict] = []
    for row in rows:
        instruction = row.get("instruction")
        if not isinstance(instruction, str) or "output" not in row:
            out.append(row)
            continue
        task = tasks.get(instruction)
        if task is None:
            task = tasks[instruction] = {
                "id": f"task_{len(tasks)}",
                "instruction": instruction,
                "instances": [],
                "is_classification": None,
            }
            out.append(task)
        task["instances"].append({"input": row.get("input") or "", "output": row["output"]})
    return out


# --- one writer per run directory: an exclusive lock that every command writing a run holds.
#
# Two processes appending to one run directory would each grow the pool from its own view of it, and
# the files would hold both (duplicated ids, twice the rows). So a writer takes ``flock`` on the
# directory's ``.lock`` file before it reads anything it will build on, and holds it until it ends.
# The lock belongs to the open file, so the kernel releases it when the process ends in any way,
# SIGKILL included: a stale lock of a dead process is simply taken by the next writer. The file
# itself stays, holding the last holder's PID, start time and command line, which is what a refused
# second writer prints.
#
# Readers (export, view, analyze) take no lock: every file is appended in whole lines or replaced
# through a rename, so they never see half-written state.

LOCK_NAME = ".lock"


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the file (it writes just after taking
    it, so a moment's wait covers a holder that has not written yet)."""
    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace")
        try:
            info = json.loads(text)
        except ValueError:
            time.sleep(0.025)
            continue
        command = f", {info['command']}" if info.get("command") else ""
        return f"process {info.get('pid')} (started {info.get('started')}{command})"
    return "another process"


@contextmanager
def writer_lock(root: Path, command: str = "") -> Iterator[None]:
    """Hold ``root``'s writer lock for the duration (``root`` is created if missing).

    A UserError (exit status 2) names the holder when another live process writes ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise UserError(
                    f"{root}: another self-instruct is writing this run directory: {_holder(fd)}; "
                    "wait for it to end, or stop it, then run the command again"
                ) from None
        info = {
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command,
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as e:
            raise named(e, root / LOCK_NAME) from None
        yield
    finally:
        os.close(fd)  # releases the lock
