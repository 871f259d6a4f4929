"""SQLite response cache: re-running a finished or interrupted run replays answers without the model.

The key is a hash of everything that determines an answer: backend, model, API mode, the full prompt,
the sampling parameters and the request's seed (which tells apart several samples of one prompt).
The endpoint's URL and the API key are not part of it, so a cache can be shared between endpoints
serving the same model, and it never holds a secret. Only successful responses are stored.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .base import Request, Response


def cache_key(backend: str, model: str, api: str, request: Request) -> str:
    payload = {"backend": backend, "model": model, "api": api, "prompt": request.prompt, **request.sampling()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit with WAL: each put is committed on its own and readers never block writers, so
        # several runs (a batch) can share one cache file. synchronous=NORMAL: a put survives a crash
        # or kill of the process; a power loss may lose the last puts, which only means asking the
        # model again (the run's own files are fsynced).
        with self._os_errors():
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )

    @contextmanager
    def _os_errors(self) -> Iterator[None]:
        """SQLite's "database or disk is full" and "readonly database" as the OSError they stand
        for, naming the cache file, so the run ends with the same one line as any full disk."""
        try:
            yield
        except sqlite3.OperationalError as e:
            text = str(e)
            code = errno.ENOSPC if "full" in text else errno.EROFS if "readonly" in text else errno.EIO
            raise OSError(code, f"{os.strerror(code)} (SQLite: {text})", str(self.path)) from None

    def get(self, key: str) -> Response | None:
        row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        d = json.loads(row[0])
        return Response(
            text=d["text"],
            finish_reason=d["finish_reason"],
            prompt_tokens=d.get("prompt_tokens", 0),
            completion_tokens=d.get("completion_tokens", 0),
            top_logprobs=d.get("top_logprobs"),
        )

    def put(self, key: str, response: Response) -> None:
        value = {
            "text": response.text,
            "finish_reason": response.finish_reason,
            "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens,
        }
        if response.top_logprobs is not None:
            value["top_logprobs"] = response.top_logprobs
        with self._os_errors():
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                (key, json.dumps(value, ensure_ascii=False)),
            )

    def close(self) -> None:
        self._db.close()
