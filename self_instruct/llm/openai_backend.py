"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server) through the official SDK.

The SDK's own retries are off: the request engine owns retries, so every attempt is counted.
Errors are sorted into TransientError (retry) and FatalError (stop the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import openai

from ..errors import is_throttled
from ..redact import redact_url
from .base import Api, BackendBase, FatalError, Request, Response, TransientError
from .ratelimit import Gate, Ticket, limits, retry_after


def _waited(message: str, err: openai.APIStatusError) -> TransientError:
    """A retryable error with the wait the server asks for (retry-after-ms, or retry-after in
    seconds or as an HTTP date) and the answer's headers (its rate-limit budgets)."""
    headers = err.response.headers if err.response is not None else None
    return TransientError(message, retry_after=retry_after(headers) if headers else None, headers=headers)


def openai_error(e: Exception) -> TransientError | FatalError:
    """The one mapping of the SDK's errors: worth retrying (rate limits, 5xx, timeouts, dropped
    connections, malformed bodies) or not (bad key, unknown model, bad request)."""
    if isinstance(e, openai.RateLimitError):
        return _waited(f"429 rate limited: {e.message}", e)
    if isinstance(e, openai.InternalServerError):
        if e.status_code == 503 and "overload" in str(e.message).lower():  # slowing us down
            return _waited(f"503 overloaded: {e.message}", e)
        return _waited(f"{e.status_code} server error: {e.message}", e)
    if isinstance(e, openai.APITimeoutError):
        return TransientError("timeout: no answer within llm.timeout")
    if isinstance(e, openai.APIConnectionError):
        return TransientError(f"connection error: {e}")
    if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
        return FatalError(f"OPENAI_API_KEY: {e.status_code} {e.message}")
    if isinstance(e, openai.NotFoundError):
        return FatalError(f"llm.model / llm.base_url: 404 {e.message}")
    if isinstance(e, openai.BadRequestError):
        return FatalError(f"400 bad request: {e.message}")
    if isinstance(e, openai.APIStatusError):
        if e.status_code in (408, 409) or e.status_code >= 500:
            return _waited(f"{e.status_code}: {e.message}", e)
        return FatalError(f"{e.status_code}: {e.message}")
    return TransientError(f"malformed response: {e}")  # validation errors, bad JSON


JSON_FORMS = ("json_schema", "json_object")


def response_format(schema: str, form: str = "json_schema") -> dict:
    """A schema as ``response_format``: the ``json_schema`` form of OpenAI, vLLM, SGLang, Ollama and
    llama.cpp's own server, or the ``json_object`` + ``schema`` form of llama-cpp-python's server.

    Strict mode takes a subset of JSON Schema that leaves out length limits on some servers, so the
    ``json_schema`` form drops ``minItems`` / ``maxItems`` (the prompt asks for at most that many and
    the parser records any more as ``over_cap``)."""
    if form == "json_object":
        return {"type": "json_object", "schema": json.loads(schema)}
    strict = _without_lengths(json.loads(schema))
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": strict, "strict": True}}


def _without_lengths(node):
    if isinstance(node, dict):
        return {k: _without_lengths(v) for k, v in node.items() if k not in ("minItems", "maxItems")}
    if isinstance(node, list):
        return [_without_lengths(v) for v in node]
    return node


def first_token_logprobs(logprobs) -> dict[str, float] | None:
    """The first generated token's top alternatives from a choice's ``logprobs``, in either API's form.

    chat: ``{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}, ...]}``;
    completions: ``{"tokens": [...], "top_logprobs": [{token: logprob, ...}, ...]}``."""
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if isinstance(content, list) and content:
        first = content[0] or {}
        out = {t["token"]: t["logprob"] for t in first.get("top_logprobs") or [] if "token" in t}
        if "token" in first and "logprob" in first:
            out.setdefault(first["token"], first["logprob"])
        return out or None
    top = logprobs.get("top_logprobs")
    if isinstance(top, list) and top and isinstance(top[0], dict):
        return {str(k): float(v) for k, v in top[0].items()} or None
    return None


@dataclass
class Endpoint:
    """One server of a fleet, with what the backend needs to spread load, pace it and rest it when
    it fails."""

    client: openai.AsyncOpenAI
    url: str
    gate: Gate
    consecutive_failures: int = 0
    rested_until: float = 0.0
    requests: int = 0
    failures: int = 0

    @property
    def in_flight(self) -> int:
        return self.gate.in_flight


def tokens_estimate(request: Request) -> int:
    """What a request may count against a tokens-per-minute budget: its prompt (about four
    characters a token for English) and all of max_tokens, as servers count it on arrival."""
    return len(request.prompt) // 4 + request.max_tokens


class OpenAIBackend(BackendBase):
    """One model behind one or more OpenAI-compatible endpoints.

    Each endpoint has a ``Gate``: a concurrency window that a 429 halves and successes widen, and
    the request and token budgets its ``x-ratelimit-*`` headers state. A request goes to the
    endpoint that can take it now (the one with the most room in its window); when none can, it
    waits for the first that will. So work goes to endpoints in proportion to what each grants,
    and a limited endpoint slows only its own share. An endpoint that fails ``rest_after`` times in
    a row is rested for ``rest_seconds`` (the engine's retry then lands on another one) and tried
    again afterwards, so one run can drive a fleet where servers come and go.
    """

    name = "openai"
    batch_api = True

    def __init__(
        self,
        model: str,
        *,
        base_urls: list[str] | None = None,
        api_key: str | None = None,
        api: Api = "chat",
        timeout: float = 120.0,
        max_concurrency: int = 64,
        rest_after: int = 3,
        rest_seconds: float = 30.0,
    ) -> None:
        self.model = model
        self.api = api
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.json_form = "json_schema"  # how response_format carries a schema (see probe_structured)
        self.rest_after = rest_after
        self.rest_seconds = rest_seconds
        self.endpoints = []
        urls: list[str | None] = list(base_urls) if base_urls else [None]
        share = max(1, max_concurrency // len(urls))
        for url in urls:
            # A local server needs no key, but the SDK insists on one.
            client = openai.AsyncOpenAI(
                base_url=url, api_key=api_key or "not-needed", max_retries=0, timeout=timeout
            )
            # The URL as shown in messages and the manifest: without credentials.
            self.endpoints.append(
                Endpoint(client, redact_url(str(client.base_url)), Gate(share, max_concurrency))
            )
        self._changed: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    async def check(self) -> None:
        """Fail fast, with a clear message, when no endpoint can be reached or the key is refused.

        Endpoints that cannot be reached while others can are rested, not fatal."""
        unreachable = []
        timed_out = 0
        for ep in self.endpoints:
            try:
                await ep.client.models.list()
            except openai.APITimeoutError:
                unreachable.append(f"{ep.url} (no answer within llm.timeout = {self.timeout:g} s)")
                timed_out += 1
                ep.rested_until = time.monotonic() + self.rest_seconds
            except openai.APIConnectionError as e:
                unreachable.append(f"{ep.url} ({e.__class__.__name__}: {e})")
                ep.rested_until = time.monotonic() + self.rest_seconds
            except openai.AuthenticationError as e:
                raise FatalError(
                    f"OPENAI_API_KEY: the server at {ep.url} refused the key ({e.status_code})"
                ) from None
            except openai.APIStatusError:
                pass  # some compatible servers have no /models; generation requests will tell
        if len(unreachable) == len(self.endpoints):
            setting = "llm.timeout" if timed_out == len(unreachable) else "llm.base_url"
            raise FatalError(f"{setting}: cannot reach {'; '.join(unreachable)}")

    def _event(self) -> asyncio.Event:
        """Set when a request to any endpoint ends (room in a window), for requests waiting."""
        loop = asyncio.get_running_loop()
        if self._changed is None or self._changed[0] is not loop:
            self._changed = (loop, asyncio.Event())
        return self._changed[1]

    def _ended(self) -> None:
        if self._changed is not None:
            self._changed[1].set()
            self._changed = (self._changed[0], asyncio.Event())

    async def _pick(self, tokens: int) -> tuple[Endpoint, Ticket]:
        """The endpoint to send a request of ``tokens`` to, once one can take it."""
        waited = False
        while True:
            now = time.monotonic()
            live = [e for e in self.endpoints if e.rested_until <= now]
            if not live:  # everything is resting: use the one that comes back first
                live = [min(self.endpoints, key=lambda e: e.rested_until)]
            soonest, best = math.inf, None
            for e in live:
                wait = e.gate.delay(tokens)
                if wait == 0 and (
                    best is None or e.gate.in_flight / e.gate.window < best.gate.in_flight / best.gate.window
                ):
                    best = e
                soonest = min(soonest, wait)
            if best is not None:
                best.gate.paced += waited
                return best, best.gate.take(tokens)
            waited = True
            event = self._event()
            with contextlib.suppress(TimeoutError):  # the pace allows one now
                await asyncio.wait_for(event.wait(), None if soonest == math.inf else soonest)

    async def complete(self, request: Request) -> Response:
        ep, ticket = await self._pick(tokens_estimate(request))
        ep.requests += 1
        try:
            response, headers = await self._call(ep.client, request)
        except TransientError as e:
            throttled = is_throttled(str(e))
            stated = limits(e.headers) if e.headers else None
            ep.gate.done(ticket, stated, throttled=throttled, failed=not throttled, retry_after=e.retry_after)
            self._ended()
            ep.failures += 1
            if throttled:  # slowed down, not failing: the retry waits as asked
                raise
            ep.consecutive_failures += 1
            if ep.consecutive_failures >= self.rest_after and len(self.endpoints) > 1:
                ep.rested_until = time.monotonic() + self.rest_seconds
                ep.consecutive_failures = 0
            raise
        except BaseException:
            ep.gate.release(ticket)
            self._ended()
            raise
        ep.gate.done(ticket, limits(headers))
        self._ended()
        ep.consecutive_failures = 0
        response.meta["endpoint"] = ep.url
        return response

    async def probe_structured(self, request: Request) -> tuple[str | None, str]:
        """Which ``response_format`` form the endpoint follows for a schema-bound request, if any.

        One attempt per form, no retries: a server that does not know a form answers 400 or 500
        (llama-cpp-python), or ignores it and writes free text. Returns (form or None, why)."""
        why = []
        for form in JSON_FORMS:
            self.json_form = form
            try:
                response = await self.complete(request)
            except (TransientError, FatalError) as e:
                why.append(f"{form}: {str(e)[:120]}")
                continue
            if response.text.lstrip().startswith(("{", "```")):
                return form, f"the server follows response_format ({form})"
            why.append(f"{form}: ignored")
        self.json_form = JSON_FORMS[0]
        return None, "; ".join(why)

    def describe(self) -> dict:
        endpoints = [
            {"url": e.url, "requests": e.requests, "failures": e.failures, **e.gate.describe()}
            for e in self.endpoints
        ]
        return {**super().describe(), "endpoints": endpoints}

    def share_budgets(self, fraction: float) -> None:
        """Use only ``fraction`` of what each endpoint states it grants: one of several processes
        sending to the same endpoints (a Ray worker with that share of the concurrency)."""
        for e in self.endpoints:
            e.gate.requests.share = e.gate.tokens.share = fraction

    def window(self) -> str | None:
        now = sum(int(e.gate.window) for e in self.endpoints)
        return f"{min(now, self.max_concurrency)}/{self.max_concurrency}"

    @property
    def batch_client(self) -> openai.AsyncOpenAI:
        """The client the Batch API goes through (the first endpoint: a batch lives on one server)."""
        return self.endpoints[0].client

    @property
    def endpoint_path(self) -> Literal["/v1/chat/completions", "/v1/completions"]:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"

    def body(self, request: Request) -> dict:
        """The JSON body of a request, the same for a live call and a Batch API line."""
        body: dict = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
        }
        if request.stop:
            body["stop"] = list(request.stop)[:4]  # the API takes at most four
        if request.seed is not None:
            body["seed"] = request.seed
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        if request.schema:
            body["response_format"] = response_format(request.schema, self.json_form)
        if request.logprobs:
            if self.api == "chat":
                body["logprobs"], body["top_logprobs"] = True, request.logprobs
            else:
                body["logprobs"] = request.logprobs
        return body

    def parse(self, out: dict) -> Response:
        """A completion (as a dict) into a Response; TransientError when it has no usable choice."""
        choices = out.get("choices") if isinstance(out, dict) else None
        if not isinstance(choices, list):
            raise TransientError("malformed response: no 'choices' list")
        if not choices:
            raise TransientError("malformed response: empty 'choices'")
        choice = choices[0] or {}
        text = (choice.get("message") or {}).get("content") if self.api == "chat" else choice.get("text")
        usage = out.get("usage") or {}
        return Response(
            text=text or "",
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            top_logprobs=first_token_logprobs(choice.get("logprobs")),
        )

    async def _call(self, client: openai.AsyncOpenAI, request: Request) -> tuple[Response, Mapping[str, str]]:
        """One request: its answer, and the answer's headers (the endpoint's rate-limit budgets).

        The body is read as plain JSON: ``parse`` checks what it uses, and the SDK's typed models
        would cost more CPU than the rest of the request."""
        body = self.body(request)
        if self.api == "completions" and "response_format" in body:
            # Not a parameter of OpenAI's completions API; servers that take it (vLLM, llama.cpp)
            # read it from the body.
            body["extra_body"] = {"response_format": body.pop("response_format")}
        try:
            if self.api == "chat":
                raw = await client.chat.completions.with_raw_response.create(**body)
            else:
                raw = await client.completions.with_raw_response.create(**body)
        except (openai.OpenAIError, ValueError, TypeError) as e:
            raise openai_error(e) from None
        try:
            data = json.loads(raw.content)
        except ValueError as e:
            raise TransientError(f"malformed response: {e}") from None
        return self.parse(data), raw.headers

    async def close(self) -> None:
        for ep in self.endpoints:
            await ep.client.close()
