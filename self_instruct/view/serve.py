"""Serving the database with Datasette's own server, in a subprocess of the current interpreter.

Datasette gets the database and a metadata file written next to it (metadata.py); each run's
analysis report, when its directory holds one, is mounted read-only and linked from the home page.
Ctrl-C or SIGTERM stops Datasette with the command.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..store import Unread, write_json_atomic
from .database import Run, build_database, find_runs, read_unread
from .metadata import metadata

HOST = "127.0.0.1"
READY_SECONDS = 60.0


def default_db_path(runs: list[Run]) -> Path:
    """Outside every run directory (viewing never writes there): a folder of the user's cache per set
    of runs, the file named after the run (Datasette names the database after the file)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256("\n".join(str(r.root) for r in runs).encode()).hexdigest()[:12]
    name = (
        "".join(c if c.isalnum() or c in "-_" else "-" for c in runs[0].label) if len(runs) == 1 else "runs"
    )
    return cache / "self-instruct" / "view" / key / f"{name}.db"


def check_db_path(db_path: Path, runs: list[Run]) -> Path:
    db_path = db_path.resolve()
    for run in runs:
        if db_path.is_relative_to(run.root):
            raise UserError(
                f"--db {db_path}: inside the run directory {run.root} (viewing never writes there)"
            )
    return db_path


def metadata_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.stem + ".metadata.json")


def datasette_args(db_path: Path, runs: list[Run], port: int) -> list[str]:
    args = [str(db_path), "-m", str(metadata_path(db_path)), "-h", HOST, "-p", str(port)]
    for run in runs:
        if run.report:
            args += ["--static", f"{run.report_mount}:{run.report}"]
    return [*args, "--setting", "sql_time_limit_ms", "5000"]


def check_port(port: int) -> int:
    """The port to serve on (0: a free one), refused at once when something already listens there."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a port number")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise UserError(f"--port {port}: cannot listen on {HOST}:{port} ({e.strerror or e})") from None
        return s.getsockname()[1]


@dataclass
class Prepared:
    db: Path
    built: bool
    runs: list[Run]
    unread: list[Unread]  # lines of the run files that are in no table but unread

    @property
    def database_name(self) -> str:
        return self.db.stem


def prepare(paths: list[str], db: str | None) -> Prepared:
    """Check the input, (re)build the database if a run changed, and write Datasette's metadata."""
    runs = find_runs(paths)
    db_path = check_db_path(Path(db) if db else default_db_path(runs), runs)
    built = build_database(runs, db_path)
    unread = read_unread(db_path, runs)
    links = {r.label: url for r in runs if (url := r.report_url)}
    meta = metadata(db_path.stem, [r.label for r in runs], links, len(unread))
    write_json_atomic(metadata_path(db_path), meta)
    return Prepared(db_path, built, runs, unread)


def serve(prepared: Prepared, port: int, announce: Callable[[str], None]) -> int:
    """Run Datasette on 127.0.0.1:``port`` (checked with check_port) until it stops or Ctrl-C / SIGTERM;
    returns its exit status."""
    command = [sys.executable, "-m", "datasette", "serve", *datasette_args(prepared.db, prepared.runs, port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            _wait_ready(proc, port, log)
            announce(f"http://{HOST}:{port}/{prepared.database_name}")
            return proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
            _stop(proc)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _wait_ready(proc: subprocess.Popen, port: int, log) -> None:
    """Poll Datasette's own version page until it answers, it exits, or the deadline passes."""
    url = f"http://{HOST}:{port}/-/versions.json"
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            lines = log.read().decode("utf-8", "replace").strip().splitlines() or ["no output"]
            raise UserError(f"datasette stopped at start (status {proc.returncode}): {lines[-1]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise UserError(f"datasette did not answer on {HOST}:{port} within {READY_SECONDS:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_command(prepared: Prepared) -> str:
    """How to serve a database written with --no-serve (Datasette's own command line)."""
    args = datasette_args(prepared.db, prepared.runs, 8001)
    return "datasette " + " ".join(shlex.quote(a) for a in args)
