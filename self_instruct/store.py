"""Append-only JSONL stores that survive a crash.

Each append writes whole lines, then flushes and fsyncs, so after a kill the file holds every record
that was reported written, plus at most one torn last line. Opening a store for append detects that
torn line (no trailing newline) and cuts it off, so the next record starts on a clean line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jsonlines

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
        with self.path.open("a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        if created:  # the new file's name must survive a power loss too
            fsync_dir(self.path.parent)
        return lines.count("\n")


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
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
