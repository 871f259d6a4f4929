"""Files and Batch API routes for the test server: upload, create a batch, poll it, download results.

A batch moves one step each time it is retrieved: validating -> in_progress -> completed, so a client
has to poll. Lines whose custom_id is in ``fail_ids`` come back in the error file.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from typing import Any

_ids = itertools.count(1)


def _error(status: int, message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


class BatchStore:
    def __init__(self, fake) -> None:
        self.fake = fake
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.fail_ids: set[str] = set()
        self.created = 0
        self.retrieved = threading.Event()  # a client polled a batch (it saved the batch's id first)
        self._lock = threading.Lock()

    def _file(self, content: bytes, purpose: str, filename: str) -> dict:
        fid = f"file-{next(_ids)}"
        self.files[fid] = {"content": content, "purpose": purpose, "filename": filename}
        return self._file_object(fid)

    def _file_object(self, fid: str) -> dict:
        f = self.files[fid]
        return {
            "id": fid,
            "object": "file",
            "bytes": len(f["content"]),
            "created_at": int(time.time()),
            "filename": f["filename"],
            "purpose": f["purpose"],
            "status": "processed",
        }

    def handle(self, method: str, route: str, raw: bytes, headers) -> tuple[int, Any]:
        """(status, JSON object or raw bytes) for a /v1/files or /v1/batches request."""
        with self._lock:
            parts = route.strip("/").split("/")  # ["v1", "files", id?, "content"?]
            if method == "POST" and parts == ["v1", "files"]:
                return self._upload(raw, headers.get("Content-Type", ""))
            if method == "GET" and len(parts) == 4 and parts[1] == "files" and parts[3] == "content":
                f = self.files.get(parts[2])
                return (200, f["content"]) if f else (404, _error(404, "no such file"))
            if method == "POST" and parts == ["v1", "batches"]:
                return self._create(json.loads(raw or b"{}"))
            if method == "GET" and len(parts) == 3 and parts[1] == "batches":
                batch = self.batches.get(parts[2])
                if batch is None:
                    return 404, _error(404, "no such batch")
                self._advance(batch)
                self.retrieved.set()
                return 200, batch
            return 404, _error(404, f"Invalid URL ({method} {route})")

    def _upload(self, raw: bytes, content_type: str) -> tuple[int, Any]:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + raw
        )
        fields, content, filename = {}, None, "upload.jsonl"
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                content = part.get_payload(decode=True)
                filename = part.get_filename() or filename
            else:
                fields[name] = part.get_payload(decode=True).decode()
        if content is None:
            return 400, _error(400, "missing file")
        return 200, self._file(content, fields.get("purpose", "batch"), filename)

    def _create(self, body: dict) -> tuple[int, Any]:
        fid = body.get("input_file_id")
        if fid not in self.files:
            return 400, _error(400, "input_file_id not found")
        bid = f"batch_{next(_ids)}"
        n = sum(1 for line in self.files[fid]["content"].splitlines() if line.strip())
        self.created += 1
        self.batches[bid] = {
            "id": bid,
            "object": "batch",
            "endpoint": body.get("endpoint"),
            "errors": None,
            "input_file_id": fid,
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": n, "completed": 0, "failed": 0},
        }
        return 200, self.batches[bid]

    def _advance(self, batch: dict) -> None:
        from openai_server import Fault  # the server module imports this one

        if batch["status"] == "validating":
            batch["status"] = "in_progress"
        elif batch["status"] == "in_progress":
            out, err = [], []
            for line in self.files[batch["input_file_id"]]["content"].decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                kind = "chat" if item["url"].endswith("chat/completions") else "completions"
                cid = item["custom_id"]
                if cid in self.fail_ids:
                    err.append(
                        {
                            "id": f"req_{next(_ids)}",
                            "custom_id": cid,
                            "response": None,
                            "error": {"code": "server_error", "message": "injected batch line failure"},
                        }
                    )
                    continue
                self.fake._count(f"batch_{kind}")
                body = self.fake._build_response(kind, item["body"], Fault())
                out.append(
                    {
                        "id": f"req_{next(_ids)}",
                        "custom_id": cid,
                        "error": None,
                        "response": {"status_code": 200, "request_id": f"r{next(_ids)}", "body": body},
                    }
                )

            def enc(rows: list[dict]) -> bytes:
                return "".join(json.dumps(r) + "\n" for r in rows).encode()

            batch["output_file_id"] = self._file(enc(out), "batch_output", "output.jsonl")["id"]
            if err:
                batch["error_file_id"] = self._file(enc(err), "batch_output", "errors.jsonl")["id"]
            batch["request_counts"] = {
                "total": len(out) + len(err),
                "completed": len(out),
                "failed": len(err),
            }
            batch["status"] = "completed"
