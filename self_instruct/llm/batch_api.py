"""The OpenAI Batch API (half price, answers within 24 hours) for stages that need no quick answer.

One batch: write the requests as JSONL (one line per request, ``custom_id`` = the caller's key),
upload it, create the batch, poll it, download the output (and error) file, and map the lines back
to Responses in the caller's order. The batch id is saved to ``state_path`` as soon as the batch
exists, so a restarted run polls the batch already in flight instead of paying for a second one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import openai

from ..store import write_json_atomic
from .base import FatalError, Request, Response, TransientError
from .openai_backend import OpenAIBackend, openai_error

FINAL = {"completed", "failed", "expired", "cancelled"}


def _load_state(path: Path, keys: list[str]) -> dict | None:
    if not path.exists():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    return state if state.get("keys") == keys else None


async def run_batch_job(
    backend: OpenAIBackend,
    requests: list[Request],
    keys: list[str],
    state_path: Path,
    *,
    poll_seconds: float = 30.0,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> list[Response]:
    client = backend.batch_client
    try:
        state = _load_state(state_path, keys)
        if state is None:
            lines = [
                {"custom_id": key, "method": "POST", "url": backend.endpoint_path, "body": backend.body(req)}
                for key, req in zip(keys, requests, strict=True)
            ]
            data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
            upload = await client.files.create(file=(state_path.stem + ".jsonl", data), purpose="batch")
            batch = await client.batches.create(
                input_file_id=upload.id, endpoint=backend.endpoint_path, completion_window="24h"
            )
            state = {"batch_id": batch.id, "input_file_id": upload.id, "keys": keys}
            write_json_atomic(state_path, state)
        while True:
            batch = await client.batches.retrieve(state["batch_id"])
            counts = batch.request_counts
            if on_progress and counts is not None:
                on_progress(counts.completed + counts.failed, counts.total, batch.status)
            if batch.status in FINAL:
                break
            await asyncio.sleep(poll_seconds)
        by_key: dict[str, Response] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await client.files.content(file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        item = json.loads(line)
                        by_key[item["custom_id"]] = _response(backend, item)
    except openai.OpenAIError as e:
        # No retry loop around a batch: whatever the kind of error, the run stops with it.
        error = openai_error(e)
        raise FatalError(str(error) if isinstance(error, FatalError) else f"batch API: {error}") from None
    missing = f"no answer in batch {state['batch_id']} (status {batch.status})"
    return [by_key.get(key) or Response(text="", finish_reason="error", error=missing) for key in keys]


def _response(backend: OpenAIBackend, item: dict) -> Response:
    response = item.get("response") or {}
    if item.get("error") or response.get("status_code") != 200:
        error = item.get("error") or (response.get("body") or {}).get("error") or response.get("status_code")
        return Response(text="", finish_reason="error", error=f"batch line failed: {error}")
    try:
        return backend.parse(response.get("body") or {})
    except TransientError as e:
        return Response(text="", finish_reason="error", error=str(e))
