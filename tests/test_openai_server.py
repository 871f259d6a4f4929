"""Checks that the fake OpenAI server behaves like the real API as seen through the official SDK.

Other tests lean on this server to exercise retry and error handling, so each fault must surface as the
exact exception the SDK raises in production.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import pytest
from openai.types import Completion

try:
    from tests.openai_server import DEFAULT_TEXT, FakeOpenAIServer, Fault, apply_limits
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from openai_server import DEFAULT_TEXT, FakeOpenAIServer, Fault, apply_limits  # type: ignore[no-redef]

MODEL = "test-model"


def make_client(server: FakeOpenAIServer, *, api_key: str = "test", max_retries: int = 0) -> openai.OpenAI:
    """A real SDK client; verify=False skips loading the CA bundle (~50 ms) that plain HTTP never uses."""
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=api_key,
        max_retries=max_retries,
        http_client=openai.DefaultHttpxClient(verify=False),
    )


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with make_client(server) as c:
        yield c


def complete(client: openai.OpenAI, prompt: str = "Hello there", **kwargs: object) -> Completion:
    return client.completions.create(model=MODEL, prompt=prompt, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("text", "stop", "max_tokens", "expected"),
    [
        ("a b c", None, None, ("a b c", "stop")),
        ("a b END c", "END", None, ("a b ", "stop")),
        ("a ## b END c", ["END", "##"], None, ("a ", "stop")),
        ("a b c", ["", "zzz"], None, ("a b c", "stop")),
        ("one  two\tthree four", None, 3, ("one  two\tthree", "length")),
        ("one two three", None, 3, ("one two three", "stop")),
        ("one two three END four five", "END", 3, ("one two three ", "stop")),
        ("one two three four END five", "END", 3, ("one two three", "length")),
        ("one two", None, 0, ("", "length")),
    ],
)
def test_apply_limits(
    text: str, stop: str | list[str] | None, max_tokens: int | None, expected: tuple[str, str]
) -> None:
    assert apply_limits(text, stop, max_tokens) == expected


def test_completion_round_trip_reaches_responder() -> None:
    seen: list[tuple[str, dict]] = []

    def responder(kind: str, body: dict) -> str:
        seen.append((kind, body))
        return f"You said: {body['prompt']}"

    with (
        FakeOpenAIServer(responder) as server,
        make_client(server) as client,
    ):
        result = complete(client, "two words", max_tokens=50, temperature=0.7, top_p=0.9)

    assert isinstance(result, Completion)
    assert result.object == "text_completion"
    assert result.model == MODEL
    assert [c.text for c in result.choices] == ["You said: two words"]
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        2,
        4,
        6,
    )
    assert seen[0][0] == "completions"
    assert seen[0][1]["prompt"] == "two words"
    assert seen[0][1]["temperature"] == 0.7
    request = server.requests[0]
    assert request["path"] == "/v1/completions"
    assert request["kind"] == "completions"
    assert request["body"]["max_tokens"] == 50
    assert request["headers"]["authorization"] == "Bearer test"


def test_completion_prompt_list_and_n() -> None:
    calls: list[str] = []

    def responder(kind: str, body: dict) -> str:
        calls.append(body["prompt"])
        return f"reply {len(calls)}"

    with (
        FakeOpenAIServer(responder) as server,
        make_client(server) as client,
    ):
        result = client.completions.create(model=MODEL, prompt=["first prompt", "second"], n=3)

    assert calls == ["first prompt"] * 3
    assert [(c.index, c.text) for c in result.choices] == [(0, "reply 1"), (1, "reply 2"), (2, "reply 3")]
    assert result.usage is not None
    assert result.usage.prompt_tokens == 2
    assert result.usage.completion_tokens == 6
    assert server.requests[0]["body"]["prompt"] == ["first prompt", "second"]  # recorded as sent


def test_chat_round_trip_reaches_responder() -> None:
    seen: list[dict] = []

    def responder(kind: str, body: dict) -> str:
        assert kind == "chat"
        seen.append(body)
        return "Paris is the capital."

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    with (
        FakeOpenAIServer(responder) as server,
        make_client(server) as client,
    ):
        result = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]

    assert result.object == "chat.completion"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == "Paris is the capital."
    assert result.choices[0].finish_reason == "stop"
    assert seen[0]["messages"] == messages
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (5, 4)
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.counts["chat"] == 1


def test_stop_sequences_cut_text() -> None:
    with (
        FakeOpenAIServer(lambda kind, body: "Instruction: sort\nInput: x\n\nInstruction: next") as server,
        make_client(server) as client,
    ):
        result = complete(client, stop=["\n\n", "Input:"])
        chat = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "go"}], stop="\n\n"
        )

    assert result.choices[0].text == "Instruction: sort\n"
    assert result.choices[0].finish_reason == "stop"
    assert chat.choices[0].message.content == "Instruction: sort\nInput: x"
    assert chat.choices[0].finish_reason == "stop"


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    result = complete(client, max_tokens=3)
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "go"}], max_tokens=2
    )

    assert result.choices[0].text == " ".join(DEFAULT_TEXT.split()[:3])
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert result.usage.completion_tokens == 3
    assert chat.choices[0].message.content == " ".join(DEFAULT_TEXT.split()[:2])
    assert chat.choices[0].finish_reason == "length"


def test_rate_limit_with_retry_after(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.add_faults(Fault(status=429, retry_after=2))

    with pytest.raises(openai.RateLimitError) as info:
        complete(client)

    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.code == "rate_limit_exceeded"
    assert complete(client).choices[0].text == DEFAULT_TEXT  # the queue is drained
    assert server.counts["fault:429"] == 1


def test_sdk_retries_honour_retry_after(server: FakeOpenAIServer) -> None:
    server.add_faults(Fault(status=429, retry_after=0.01), Fault(status=503, retry_after=0.01))
    with make_client(server, max_retries=2) as client:
        assert complete(client).choices[0].text == DEFAULT_TEXT
    assert server.counts["completions"] == 3


def test_server_error(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.add_faults(Fault(status=500))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 500
    assert info.value.type == "server_error"


def test_drop_is_connection_error(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.add_faults(Fault(drop=True))
    with pytest.raises(openai.APIConnectionError) as info:
        complete(client)
    assert not isinstance(info.value, openai.APITimeoutError)
    assert complete(client).choices[0].text == DEFAULT_TEXT  # a fresh connection works
    assert server.counts["fault:drop"] == 1


def test_truncated_body_is_connection_error(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.add_faults(Fault(truncate=True))
    with pytest.raises(openai.APIConnectionError):
        complete(client)
    assert complete(client).choices[0].text == DEFAULT_TEXT
    assert server.counts["fault:truncate"] == 1


def test_delay_beyond_timeout(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    # The server would answer after a minute: only the client's timeout can end the call this way,
    # and the delayed handler is woken when the fixture stops the server.
    server.add_faults(Fault(delay=60.0))
    with pytest.raises(openai.APITimeoutError):
        complete(client.with_options(timeout=0.3))
    assert server.counts["fault:delay"] == 1 and server.counts["answered"] == 0


def test_malformed_body_is_not_a_completion(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.add_faults(Fault(malformed=True))
    # The SDK reads a body that is no JSON as what it is; the engine maps this to a retry
    # (openai_backend.openai_error: "malformed response").
    with pytest.raises(json.JSONDecodeError):
        complete(client)


def test_empty_choices_and_finish_reason(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.add_faults(Fault(empty_choices=True), Fault(finish_reason="length"))
    assert complete(client).choices == []
    result = complete(client)
    assert result.choices[0].text == DEFAULT_TEXT
    assert result.choices[0].finish_reason == "length"


def test_responder_error_becomes_500_and_is_kept() -> None:
    def responder(kind: str, body: dict) -> str:
        raise KeyError("boom")

    with FakeOpenAIServer(responder) as server, make_client(server) as client:
        with pytest.raises(openai.InternalServerError) as info:
            complete(client)
        assert "boom" in info.value.message
        assert [type(e) for e in server.errors] == [KeyError]


def test_api_key_mismatch() -> None:
    with FakeOpenAIServer(api_key="secret") as server:
        with (
            make_client(server, api_key="wrong") as bad,
            pytest.raises(openai.AuthenticationError) as info,
        ):
            complete(bad)
        assert info.value.code == "invalid_api_key"
        assert info.value.type == "invalid_request_error"
        with make_client(server, api_key="secret") as good:
            assert complete(good).choices[0].text == DEFAULT_TEXT
        assert server.counts["unauthorized"] == 1
        assert server.counts["completions"] == 1


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["test-model"]
    assert models.data[0].owned_by == "tests"


def test_unknown_route_and_bad_request(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    request = urllib.request.Request(f"{server.base_url}/engines", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 404
    assert json.loads(info.value.read())["error"]["type"] == "invalid_request_error"

    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", stream=True)
    assert server.counts["not_found"] == 1
    assert server.counts["bad_request"] == 1


def test_fault_rule(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    seen: list[int] = []

    def every_third(number: int, body: dict) -> Fault | None:
        seen.append(number)
        assert body["prompt"] == "Hello there"
        return Fault(status=503) if number % 3 == 0 else None

    server.set_fault_rule(every_third)
    outcomes = []
    for _ in range(6):
        try:
            complete(client)
            outcomes.append("ok")
        except openai.InternalServerError:
            outcomes.append("503")
    assert outcomes == ["ok", "ok", "503", "ok", "ok", "503"]
    assert seen == [1, 2, 3, 4, 5, 6]

    server.set_fault_rule(lambda number, body: Fault(drop=True) if number > 7 else None)
    complete(client)
    with pytest.raises(openai.APIConnectionError):
        complete(client)

    server.set_fault_rule(None)
    complete(client)
    assert server.counts["fault:503"] == 2
    assert server.counts["fault:drop"] == 1


def test_queued_faults_are_fifo_and_beat_the_rule(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_fault_rule(lambda number, body: Fault(status=500))
    server.add_faults(Fault(status=429), Fault(status=401))
    with pytest.raises(openai.RateLimitError):
        complete(client)
    with pytest.raises(openai.AuthenticationError):
        complete(client)
    with pytest.raises(openai.InternalServerError):
        complete(client)


def test_counts_and_keep_alive(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    complete(client)
    complete(client)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    client.models.list()

    assert server.counts["completions"] == 2
    assert server.counts["chat"] == 1
    assert server.counts["models"] == 1
    assert server.counts["connections"] == 1  # every request reused one keep-alive connection
    assert [r["kind"] for r in server.requests] == ["completions", "completions", "chat", "models"]
    assert server.errors == []


def test_latency_applies_to_generation() -> None:
    with (
        FakeOpenAIServer(latency=0.2) as server,
        make_client(server) as client,
    ):
        started = time.monotonic()
        complete(client)
        assert time.monotonic() - started >= 0.2


def test_stop_is_prompt_with_pending_and_idle_connections() -> None:
    server = FakeOpenAIServer().start()
    with make_client(server) as client:
        complete(client)  # leaves an idle keep-alive connection
        server.add_faults(Fault(delay=30))
        with pytest.raises(openai.APITimeoutError):
            complete(client.with_options(timeout=0.2))  # leaves a handler sleeping

        # A handler sleeps for 30 s: stop() wakes it instead of waiting (a generous liveness
        # bound, not a speed claim: a stop that waited would take the whole 30 s).
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join(timeout=20)
        assert not stopper.is_alive()
        with pytest.raises(openai.APIConnectionError):
            complete(client)
