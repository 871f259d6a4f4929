"""A small but real OpenAI-compatible HTTP server for the test suite.

Client code is tested against an actual socket speaking HTTP/1.1 (keep-alive, status codes, headers,
timeouts, dropped and truncated connections) rather than against mocks, so the official ``openai`` SDK and
its retry/error handling run exactly as they would against the real API. Faults can be queued or computed
per request to drive the error paths deterministically.

Standard library only, so it works wherever the tests run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from openai_batch import BatchStore

MODEL_ID = "test-model"
DEFAULT_TEXT = "This is a canned reply from the fake OpenAI server."

# Body sent by a ``malformed`` fault: looks like JSON and is labelled as JSON, but does not parse.
MALFORMED_BODY = b'{"id": "cmpl-broken", "object": "text_completion", "choices": [{"text": "oops'

Responder = Callable[[str, dict], str]


@dataclass
class Fault:
    """One misbehaviour to inflict on a generation request; fields left at their defaults do nothing.

    Precedence when several are set: ``delay`` happens first, then ``drop`` wins over everything, then
    ``status`` over ``malformed`` over a normal (possibly ``empty_choices`` / ``finish_reason``) body;
    ``truncate`` cuts whichever body was chosen.
    """

    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    malformed: bool = False
    empty_choices: bool = False
    finish_reason: str | None = None
    truncate: bool = False


FaultRule = Callable[[int, dict], Fault | None]


class RateLimits:
    """Limits a server enforces, as OpenAI does: requests and tokens per minute, each a bucket that
    holds ``burst`` seconds' worth and refills continuously; a request counts its prompt and all of
    its max_tokens on arrival. An over-limit request is answered 429 at once with ``retry-after-ms``
    (when the bucket will hold it) and ``retry-after``; every answer carries the ``x-ratelimit-*``
    headers. 0 turns a limit off. ``log`` keeps (arrival time, admitted, tokens) of every request."""

    def __init__(self, rpm: float = 0, tpm: float = 0, burst: float = 10.0, clock=time.monotonic) -> None:
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self.capacity = {"requests": rpm * burst / 60, "tokens": tpm * burst / 60}
        self.level = dict(self.capacity)
        self.rate = {"requests": rpm / 60, "tokens": tpm / 60}
        self.at = clock()
        self.log: list[tuple[float, bool, int]] = []
        self._lock = threading.Lock()

    def admit(self, tokens: int) -> tuple[bool, dict[str, str]]:
        """(admitted, headers) for a request of ``tokens``."""
        with self._lock:
            now = self.clock()
            for k in self.level:
                self.level[k] = min(self.capacity[k], self.level[k] + self.rate[k] * (now - self.at))
            self.at = now
            need = {"requests": 1.0, "tokens": float(tokens)}
            on = [k for k in need if self.rate[k] > 0]
            ok = all(self.level[k] >= min(need[k], self.capacity[k]) for k in on)
            if ok:
                for k in on:
                    self.level[k] -= need[k]
            self.log.append((now, ok, tokens))
            headers = {}
            for k in on:
                limit = self.rpm if k == "requests" else self.tpm
                left = max(0.0, self.level[k])
                headers[f"x-ratelimit-limit-{k}"] = f"{limit:.0f}"
                headers[f"x-ratelimit-remaining-{k}"] = f"{int(left)}"
                headers[f"x-ratelimit-reset-{k}"] = f"{(self.capacity[k] - left) / self.rate[k]:.3f}s"
            if not ok:
                wait = max(
                    (min(need[k], self.capacity[k]) - self.level[k]) / self.rate[k]
                    for k in on
                    if self.level[k] < min(need[k], self.capacity[k])
                )
                headers["retry-after-ms"] = f"{max(1, round(wait * 1000))}"
                headers["retry-after"] = f"{max(1, round(wait))}"
            return ok, headers


class RequestError(Exception):
    """A request the real API would reject with 400; carries the message sent back to the client."""


def default_responder(kind: str, body: dict) -> str:
    """Return the same short text for every request, so tests that don't care about content need no setup."""
    return DEFAULT_TEXT


def count_tokens(text: str) -> int:
    """Whitespace word count: a deterministic stand-in for a tokenizer that tests can compute by hand."""
    return len(text.split())


def apply_limits(text: str, stop: str | list[str] | None, max_tokens: int | None) -> tuple[str, str]:
    """Cut ``text`` the way a real server does and return ``(text, finish_reason)``.

    Generation halts at the earliest stop string (which is not included), and otherwise after
    ``max_tokens`` words; hitting the word limit is reported as ``"length"``, everything else as ``"stop"``.
    """
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cuts = [index for s in stops if s and (index := text.find(s)) != -1]
    if cuts:
        text = text[: min(cuts)]
    if max_tokens is not None:
        words = list(re.finditer(r"\S+", text))
        if len(words) > max_tokens:
            return (text[: words[max_tokens - 1].end()] if max_tokens > 0 else ""), "length"
    return text, "stop"


def error_body(status: int, message: str, code: str | None = None) -> dict:
    """Build the ``{"error": {...}}`` envelope the SDK parses into ``e.message`` / ``e.type`` / ``e.code``."""
    if status == 429:
        err_type, default_code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        err_type, default_code = "server_error", None
    elif status == 401:
        err_type, default_code = "invalid_request_error", "invalid_api_key"
    else:
        err_type, default_code = "invalid_request_error", None
    return {"error": {"message": message, "type": err_type, "param": None, "code": code or default_code}}


def _prompt_text(prompt: Any) -> str:
    """Reduce a completions ``prompt`` (str or list) to the single string this server answers."""
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    if isinstance(prompt, list):  # token ids
        return " ".join(str(token) for token in prompt)
    return prompt if isinstance(prompt, str) else str(prompt)


def _message_text(content: Any) -> str:
    """Extract the text of a chat message whose content is a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _validate(kind: str, body: Any) -> None:
    """Reject requests the real API would reject, so client bugs surface as 400s instead of odd output."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    if not body.get("model"):
        raise RequestError("You must provide a model parameter.")
    if kind == "completions" and not isinstance(body.get("prompt"), str | list):
        raise RequestError("'prompt' is a required property and must be a string or an array.")
    if kind == "chat" and not isinstance(body.get("messages"), list):
        raise RequestError("'messages' is a required property and must be an array.")
    if body.get("stream"):
        raise RequestError("This fake server does not support stream=true.")
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise RequestError("'n' must be an integer >= 1.")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise RequestError("'max_tokens' must be a non-negative integer.")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise RequestError("'stop' must be a string or an array of strings.")


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeOpenAIServer and keeps client disconnects off stderr."""

    daemon_threads = True
    request_queue_size = 1024  # the default listen backlog (5) refuses bursts of concurrent clients
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow clients hanging up (expected in fault tests); keep anything else for inspection."""
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, OSError) or any(exc is seen for seen in self.fake.errors):
            return
        self.fake.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    """Routes one connection's requests; HTTP/1.1 with Content-Length on every response for keep-alive."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        """Register the connection so stop() can hang up on idle keep-alive clients."""
        super().setup()
        self.server.fake._track_connection(self.connection, open_=True)

    def finish(self) -> None:
        """Unregister the connection once the client or the server closes it."""
        try:
            super().finish()
        finally:
            self.server.fake._track_connection(self.connection, open_=False)

    def log_message(self, *args: Any) -> None:
        """Stay quiet: request logs would drown pytest output."""

    def version_string(self) -> str:
        return "FakeOpenAI/1.0"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        """Record the request, check auth, and route it; a client hanging up mid-reply is not an error."""
        fake = self.server.fake
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            route = self.path.split("?", 1)[0].rstrip("/")
            kind = {
                ("POST", "/v1/completions"): "completions",
                ("POST", "/v1/chat/completions"): "chat",
                ("GET", "/v1/models"): "models",
            }.get((self.command, route), "unknown")
            try:
                body: Any = json.loads(raw) if raw else {}
            except ValueError:
                body = raw.decode("utf-8", "replace")
            fake._record(
                {
                    "path": self.path,
                    "kind": kind,
                    "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
            )
            if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                fake._count("unauthorized")
                message = "Incorrect API key provided. You can find your API key in the test fixture."
                self._send_json(401, error_body(401, message))
            elif kind == "models":
                fake._count("models")
                model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "tests"}
                self._send_json(200, {"object": "list", "data": [model]})
            elif kind in ("completions", "chat"):
                self._generate(kind, body)
            elif route.startswith(("/v1/files", "/v1/batches")):
                fake._count("batch_api")
                status, result = fake.batches.handle(self.command, route, raw, self.headers)
                self._send(status, result if isinstance(result, bytes) else _encode(result), {})
            else:
                fake._count("not_found")
                self._send_json(404, error_body(404, f"Invalid URL ({self.command} {route})"))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _generate(self, kind: str, body: Any) -> None:
        """Answer a completions/chat request, applying latency and the fault chosen for it."""
        fake = self.server.fake
        try:
            _validate(kind, body)
        except RequestError as exc:
            fake._count("bad_request")
            self._send_json(400, error_body(400, str(exc)))
            return
        headers: dict[str, str] = {}
        if fake.limits is not None:
            if kind == "completions":
                text = _prompt_text(body.get("prompt"))
            else:
                text = " ".join(
                    _message_text(m.get("content")) for m in body["messages"] if isinstance(m, dict)
                )
            asked = body.get("max_completion_tokens", body.get("max_tokens")) or 0
            admitted, headers = fake.limits.admit(count_tokens(text) + int(asked))
            if not admitted:  # refused on arrival, as a real server does: no latency, no fault
                fake._count("rate_limited")
                message = "Rate limit reached for requests or tokens per minute. Please try again later."
                self._send(429, _encode(error_body(429, message, "rate_limit_exceeded")), headers)
                return
        try:
            fault = fake._take_fault(kind, body) or Fault()
        except Exception as exc:
            fake.errors.append(exc)  # before replying, so a test sees it as soon as the 500 arrives
            self._send_json(500, error_body(500, f"fault rule raised {exc!r}"))
            raise  # also close the connection; handle_error won't record it twice

        wait = fake.latency + fault.delay
        if fault.delay > 0:
            fake._count("fault:delay")
        if wait > 0 and fake._stopping.wait(wait):
            self.close_connection = True  # server is stopping: hang up rather than answer late
            return
        if fault.drop:
            fake._count("fault:drop")
            self.close_connection = True
            return

        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.status is not None:
            fake._count(f"fault:{fault.status}")
            status = fault.status
            payload = _encode(error_body(status, f"Injected fault: HTTP {status} from the fake server."))
        elif fault.malformed:
            fake._count("fault:malformed")
            status, payload = 200, MALFORMED_BODY
        else:
            try:
                payload = _encode(fake._build_response(kind, body, fault))
            except Exception as exc:
                fake.errors.append(exc)  # before replying, so a test sees it as soon as the 500 arrives
                self._send_json(500, error_body(500, f"responder raised {exc!r}"))
                raise  # also close the connection; handle_error won't record it twice
            status = 200

        if fault.truncate:
            fake._count("fault:truncate")
            self._send(status, payload[: len(payload) // 2], headers, declared_length=len(payload))
            self.close_connection = True
        else:
            self._send(status, payload, headers)

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, _encode(obj), {})

    def _send(
        self, status: int, payload: bytes, headers: dict[str, str], declared_length: int | None = None
    ) -> None:
        """Always send Content-Length so keep-alive works; ``declared_length`` lets truncate lie."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload) if declared_length is None else declared_length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _encode(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


class FakeOpenAIServer:
    """OpenAI-compatible server on 127.0.0.1 with an OS-chosen port, for use as a context manager.

    ``responder(kind, body)`` supplies the completion text; for completions, ``body["prompt"]`` is always
    the single prompt string being answered. Queued faults (``add_faults``) are consumed first, one per
    generation request; the fault rule is consulted for every generation request and is used when the
    queue is empty.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        logprober: Callable[[str, dict], dict[str, float] | None] | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.responder: Responder = responder or default_responder
        # ``logprober(kind, body)``: the first token's top alternatives, sent when a request asks for
        # logprobs (None: the server sends none, like one that does not support them).
        self.logprober = logprober
        self.api_key = api_key
        self.latency = latency
        self.limits = limits
        self.requests: list[dict] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.served: list[tuple[float, int]] = []  # (monotonic time, tokens) of each answered request
        self.errors: list[BaseException] = []  # exceptions raised by the responder, the rule or the handler
        self._lock = threading.Lock()
        self._faults: collections.deque[Fault] = collections.deque()
        self._fault_rule: FaultRule | None = None
        self._generation_number = 0
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.batches = BatchStore(self)  # /v1/files and /v1/batches

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, the value to pass as the SDK's ``base_url``."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def add_faults(self, *faults: Fault) -> None:
        """Queue faults; each generation request takes the oldest one until the queue is empty."""
        with self._lock:
            self._faults.extend(faults)

    def set_fault_rule(self, rule: FaultRule | None) -> None:
        """Install ``rule(request_number, body) -> Fault | None`` (numbers start at 1), or remove it."""
        with self._lock:
            self._fault_rule = rule

    def start(self) -> Self:
        """Bind a fresh port and serve from a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("FakeOpenAIServer is already running")
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake delayed handlers, and hang up on open connections so nothing lingers."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Internals used by the handler threads.

    def _record(self, request: dict) -> None:
        with self._lock:
            self.requests.append(request)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _track_connection(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self.counts["connections"] += 1
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _take_fault(self, kind: str, body: dict) -> Fault | None:
        """Count the request and pick its fault; the rule runs outside the lock so it may inspect us."""
        with self._lock:
            self.counts[kind] += 1
            self._generation_number += 1
            number = self._generation_number
            queued = self._faults.popleft() if self._faults else None
            rule = self._fault_rule
        ruled = rule(number, body) if rule is not None else None
        return queued if queued is not None else ruled

    def _build_response(self, kind: str, body: dict, fault: Fault) -> dict:
        """Call the responder ``n`` times and shape the result like the real API's JSON."""
        if kind == "completions":
            prompt = _prompt_text(body.get("prompt"))
            request = {**body, "prompt": prompt}
        else:
            prompt = " ".join(
                _message_text(m.get("content")) for m in body["messages"] if isinstance(m, dict)
            )
            request = body
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        choices: list[dict] = []
        completion_tokens = 0
        for index in range(body.get("n") or 1):
            text, finish_reason = apply_limits(self.responder(kind, request), body.get("stop"), limit)
            finish_reason = fault.finish_reason or finish_reason
            completion_tokens += count_tokens(text)
            top = self.logprober(kind, request) if self.logprober and body.get("logprobs") else None
            if kind == "completions":
                choice = {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}
                if top:
                    first = max(top, key=top.get)
                    choice["logprobs"] = {
                        "tokens": [first],
                        "token_logprobs": [top[first]],
                        "top_logprobs": [dict(list(top.items())[: int(body["logprobs"])])],
                        "text_offset": [0],
                    }
            else:
                message = {"role": "assistant", "content": text}
                choice = {
                    "index": index,
                    "message": message,
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
                if top:
                    first = max(top, key=top.get)
                    alternatives = list(top.items())[: int(body.get("top_logprobs") or 0)]
                    choice["logprobs"] = {
                        "content": [
                            {
                                "token": first,
                                "logprob": top[first],
                                "bytes": None,
                                "top_logprobs": [
                                    {"token": t, "logprob": lp, "bytes": None} for t, lp in alternatives
                                ],
                            }
                        ]
                    }
            choices.append(choice)
        if fault.empty_choices:
            self._count("fault:empty_choices")
            choices = []
        if fault.finish_reason is not None:
            self._count("fault:finish_reason")
        prompt_tokens = count_tokens(prompt)
        self._count("answered")  # generation requests answered with a body (after any latency)
        with self._lock:
            self.counts["tokens_served"] += prompt_tokens + completion_tokens
            self.served.append((time.monotonic(), prompt_tokens + completion_tokens))
        prefix, obj = (
            ("cmpl", "text_completion") if kind == "completions" else ("chatcmpl", "chat.completion")
        )
        return {
            "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model") or MODEL_ID,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
