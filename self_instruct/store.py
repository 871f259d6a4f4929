"""A run directory on disk: append-only JSONL stores that survive a crash, atomic whole-file
writes, lenient reading for readers, and the lock that keeps one writer per run directory.

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
from collections.abc import Iterable, Iterator
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


@dataclass(frozen=True)
class RunFiles:
    root: Path

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
