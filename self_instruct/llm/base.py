"""The one small interface every model backend implements, and the records that cross it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

Api = Literal["completions", "chat"]


@dataclass(frozen=True)
class Request:
    """One generation request. ``prompt`` is sent as raw text (completions) or one user message (chat)."""

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # A JSON schema (compact JSON text) the answer must follow: structured outputs. None: free text.
    schema: str | None = None
    # Top log-probabilities wanted for the first generated token (0: none).
    logprobs: int = 0

    def sampling(self) -> dict:
        d = asdict(self)
        d.pop("prompt")
        d["stop"] = list(self.stop)
        for key in ("schema", "logprobs"):  # absent unless used, so older cache keys stay valid
            if not d[key]:
                d.pop(key)
        return d


@dataclass
class Response:
    text: str
    # "stop", "length", "error", or whatever else the server says (e.g. "content_filter"); only
    # "length" (cut off by max_tokens) changes how an answer is read
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # set when the request failed for good (after retries)
    attempts: int = 1
    meta: dict = field(default_factory=dict)
    # The first generated token's top alternatives, token -> log-probability (when asked for).
    top_logprobs: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class TransientError(Exception):
    """Worth retrying: rate limits, 5xx, timeouts, dropped connections, malformed bodies."""

    def __init__(
        self, message: str, retry_after: float | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers  # the answer's, when there was one (its rate-limit budgets)


class FatalError(Exception):
    """Retrying cannot help (bad key, unknown model, bad request): the run stops with this message."""


class EndpointDown(FatalError):
    """Most recent attempts failed (the circuit breaker): the endpoint is not serving, stop early."""


class Backend(Protocol):
    """A model that turns one Request into one Response, or raises TransientError / FatalError.

    Besides ``complete`` and ``close``, every backend states its optional abilities (``BackendBase``
    gives the defaults): a health check, what the manifest records about it, how it takes a JSON
    schema, and whether it serves the OpenAI Batch API."""

    name: str
    model: str
    api: Api
    max_concurrency: int  # the most requests this backend can usefully serve at once
    batch_api: bool  # serves the OpenAI Batch API (then it is an OpenAIBackend)

    async def complete(self, request: Request) -> Response: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    def describe(self) -> dict: ...

    async def probe_structured(self, request: Request) -> tuple[str | None, str] | None: ...

    def window(self) -> str | None: ...


class BackendBase:
    """The defaults of the optional abilities: no health check, described by name, model and API,
    constrains JSON itself (no probe), no Batch API."""

    name: str
    model: str
    api: Api
    batch_api = False

    async def check(self) -> None:
        """Fail fast (FatalError) when the model cannot serve; nothing to check by default."""

    def describe(self) -> dict:
        """What the manifest records about the backend (never a key)."""
        return {"name": self.name, "model": self.model, "api": self.api}

    def window(self) -> str | None:
        """The concurrency the endpoints grant now, for the progress bar ("40/64"); None when the
        backend does not adapt it."""
        return None

    async def probe_structured(self, request: Request) -> tuple[str | None, str] | None:
        """How the backend takes a schema-bound request: (form or None, why) after asking it, or
        None when it constrains decoding itself (grammars) and needs no probe."""
        return None
