"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server) through the official SDK.

The SDK's own retries are off: the request engine owns retries, so every attempt is counted.
Errors are sorted into TransientError (retry) and FatalError (stop the run).
"""

from __future__ import annotations

import openai

from .base import Api, FatalError, Request, Response, TransientError


def _retry_after(err: openai.APIStatusError) -> float | None:
    value = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api: Api = "chat",
        timeout: float = 120.0,
        max_concurrency: int = 64,
    ) -> None:
        self.model = model
        self.api = api
        self.max_concurrency = max_concurrency
        # A local server needs no key, but the SDK insists on one.
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "not-needed", max_retries=0, timeout=timeout
        )
        self.base_url = str(self._client.base_url)

    async def check(self) -> None:
        """Fail fast, with a clear message, when the endpoint cannot be reached or refuses the key."""
        try:
            await self._client.models.list()
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            raise FatalError(
                f"llm.base_url: cannot reach {self.base_url} ({e.__class__.__name__}: {e})"
            ) from None
        except openai.AuthenticationError as e:
            raise FatalError(
                f"OPENAI_API_KEY: the server at {self.base_url} refused the key ({e.status_code})"
            ) from None
        except openai.APIStatusError:
            pass  # some compatible servers have no /models; generation requests will tell

    async def complete(self, request: Request) -> Response:
        kwargs = dict(
            model=self.model,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
        )
        if request.stop:
            kwargs["stop"] = list(request.stop)[:4]  # the API takes at most four
        if request.seed is not None:
            kwargs["seed"] = request.seed
        try:
            if self.api == "chat":
                out = await self._client.chat.completions.create(
                    messages=[{"role": "user", "content": request.prompt}], **kwargs
                )
            else:
                out = await self._client.completions.create(prompt=request.prompt, **kwargs)
        except openai.RateLimitError as e:
            raise TransientError(f"429 rate limited: {e.message}", retry_after=_retry_after(e)) from None
        except openai.InternalServerError as e:
            raise TransientError(
                f"{e.status_code} server error: {e.message}", retry_after=_retry_after(e)
            ) from None
        except openai.APITimeoutError:
            raise TransientError("timeout") from None
        except openai.APIConnectionError as e:
            raise TransientError(f"connection error: {e}") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise FatalError(f"OPENAI_API_KEY: {e.status_code} {e.message}") from None
        except openai.NotFoundError as e:
            raise FatalError(f"llm.model / llm.base_url: 404 {e.message}") from None
        except openai.BadRequestError as e:
            raise FatalError(f"400 bad request: {e.message}") from None
        except openai.APIStatusError as e:
            if e.status_code in (408, 409) or e.status_code >= 500:
                raise TransientError(f"{e.status_code}: {e.message}", retry_after=_retry_after(e)) from None
            raise FatalError(f"{e.status_code}: {e.message}") from None
        except (openai.APIResponseValidationError, ValueError, TypeError) as e:
            raise TransientError(f"malformed response: {e}") from None
        choices = getattr(out, "choices", None)
        if not isinstance(choices, list):
            raise TransientError("malformed response: no 'choices' list")
        if not choices:
            raise TransientError("malformed response: empty 'choices'")
        choice = choices[0]
        text = choice.message.content if self.api == "chat" else choice.text
        usage = getattr(out, "usage", None)
        return Response(
            text=text or "",
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        )

    async def close(self) -> None:
        await self._client.close()
