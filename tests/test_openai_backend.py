"""`self-instruct generate` with the openai backend against a real HTTP server on 127.0.0.1."""

import json
import signal
import subprocess

import pytest
from helpers import SEEDS, check_run_dir, cli, cli_command, cli_env, sigint_default
from openai_server import FakeOpenAIServer, Fault
from scripted import respond

from self_instruct.store import read_jsonl


@pytest.mark.parametrize("structured", ["auto", "off"])
@pytest.mark.parametrize("api", ["completions", "chat"])
def test_generate_over_http(tmp_path, api, structured):
    with FakeOpenAIServer(respond, api_key="sk-test-secret") as server:
        proc = cli(
            "generate",
            *("--base-url", server.base_url, "--api", api, "--model", "test-model"),
            *("--seed-file", str(SEEDS), "--target", "10", "--run-name", "http", "--no-progress"),
            *("--concurrency", "4", "--llm-structured", structured),
            cwd=tmp_path,
            env={"OPENAI_API_KEY": "sk-test-secret"},
        )
        assert proc.returncode == 0, proc.stderr
        kinds = {r["kind"] for r in server.requests if r["path"] != "/v1/models"}
        assert kinds == {api}
        first = next(r for r in server.requests if r["kind"] == api)["body"]
        assert first["model"] == "test-model"
        # auto probes the server once; it follows the schema, so every stage request carries one
        formats = [r["body"].get("response_format") for r in server.requests if r["kind"] == api]
        if structured == "auto" and api == "chat":
            assert all(f and f["type"] == "json_schema" for f in formats)
            assert {f["json_schema"]["schema"]["required"][0] for f in formats[1:]} == {
                "instructions",
                "answer",
                "examples",
            }
        else:
            assert not any(formats)
    run_dir = tmp_path / "outputs" / "http"
    check_run_dir(run_dir)
    assert len(read_jsonl(run_dir / "machine_instructions.jsonl")) == 10
    rows = read_jsonl(run_dir / "dataset.jsonl")
    assert rows
    manifest_text = (run_dir / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert manifest["backend"]["name"] == "openai" and manifest["backend"]["api"] == api
    assert manifest["structured"]["on"] is (structured == "auto" and api == "chat")
    assert manifest["counts"]["dataset_rows"] == len(rows)
    assert manifest["requests"]["bootstrap"]["prompt_tokens"] > 0
    for path in run_dir.iterdir():
        assert b"sk-test-secret" not in path.read_bytes(), path
    assert "run directory:" in proc.stdout


def test_transient_faults_are_retried_and_counted(tmp_path):
    with FakeOpenAIServer(respond) as server:
        server.add_faults(Fault(status=429, retry_after=0.01), Fault(status=503), Fault(malformed=True))
        proc = cli(
            "generate",
            *("--base-url", server.base_url, "--api", "completions", "--seed-file", str(SEEDS)),
            *("--target", "4", "--run-name", "f", "--no-progress", "--concurrency", "1"),
            *("--llm-retry-initial", "0.01", "--llm-structured", "off"),
            cwd=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "outputs" / "f" / "manifest.json").read_text())
    assert m["requests"]["bootstrap"]["retries"] == 3
    assert m["counts"]["failures"] == 0


def test_bad_key_stops_at_once_with_a_clear_message(tmp_path):
    with FakeOpenAIServer(respond, api_key="right") as server:
        proc = cli(
            "generate",
            *("--base-url", server.base_url, "--seed-file", str(SEEDS), "--no-progress"),
            cwd=tmp_path,
            env={"OPENAI_API_KEY": "wrong"},
        )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("self-instruct: error: OPENAI_API_KEY")
    assert "wrong" not in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path):
    import threading

    held, release = threading.Event(), threading.Event()
    seen = []

    def hold_the_fifth(n, body):
        # The fifth generation request of the run waits in the server until the test has sent
        # Ctrl-C, so the signal always lands mid-run (no race with a run that finishes first).
        seen.append(n)
        if len(seen) == 5:
            held.set()
            release.wait(60)
        return None

    with FakeOpenAIServer(respond) as server:
        args = [
            *("generate", "--base-url", server.base_url, "--api", "completions", "--seed-file", str(SEEDS)),
            *("--target", "40", "--no-progress", "--concurrency", "1", "--llm-structured", "off"),
        ]
        assert cli(*args, "--run-name", "whole", cwd=tmp_path).returncode == 0
        server.set_fault_rule(hold_the_fifth)
        proc = subprocess.Popen(
            [*cli_command(), *args, "--run-name", "cut"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=sigint_default,
        )
        assert held.wait(60), "the run never reached the held request"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        release.set()
        server.set_fault_rule(None)
        assert proc.returncode == 130, err
        assert "run the same command again to resume" in err and "Traceback" not in err
        assert cli(*args, "--run-name", "cut", cwd=tmp_path).returncode == 0
    whole, cut = tmp_path / "outputs" / "whole", tmp_path / "outputs" / "cut"
    check_run_dir(cut)
    for name in ("machine_instructions.jsonl", "rejected.jsonl", "instances.jsonl", "dataset.jsonl"):
        assert (cut / name).read_bytes() == (whole / name).read_bytes(), name


def test_urls_lose_their_credentials_before_they_are_written():
    from self_instruct.redact import redact_url

    assert redact_url("http://user:secret@gpu-7:8000/v1") == "http://gpu-7:8000/v1"
    assert redact_url("https://api.example.test/v1?x=1") == "https://api.example.test/v1?x=1"
    assert redact_url("https://a.test/v1?api-key=k1&x=1&access_token=t") == (
        "https://a.test/v1?api-key=REDACTED&x=1&access_token=REDACTED"
    )
    assert redact_url("") == ""


def test_an_unreachable_endpoint_is_named_without_its_password(tmp_path):
    proc = cli(
        "generate",
        *("--base-url", "http://user:pw-canary@127.0.0.1:1/v1?api-key=key-canary", "--seed-file", str(SEEDS)),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "cannot reach http://127.0.0.1:1/v1" in proc.stderr
    assert "canary" not in proc.stderr + proc.stdout


def test_response_format_forms():
    from self_instruct.llm.openai_backend import response_format
    from self_instruct.structured import schema_text

    schema = schema_text("bootstrap", 7)
    strict = response_format(schema)
    assert strict["type"] == "json_schema" and strict["json_schema"]["strict"] is True
    # the strict subset some servers take: no length limits (the parser caps the items itself)
    assert "maxItems" not in json.dumps(strict)
    loose = response_format(schema, "json_object")
    assert loose == {"type": "json_object", "schema": json.loads(schema)}
    assert loose["schema"]["properties"]["instructions"]["maxItems"] == 7


def test_a_changed_seed_or_model_is_refused_without_force(tmp_path):
    with FakeOpenAIServer(respond) as server:
        base = [
            *("generate", "--base-url", server.base_url, "--api", "completions", "--seed-file", str(SEEDS)),
            *("--target", "3", "--run-name", "p", "--no-progress", "--llm-structured", "off"),
        ]
        assert cli(*base, "--seed", "1", cwd=tmp_path).returncode == 0
        before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "outputs" / "p").glob("*.jsonl"))
        for extra, setting in (
            (("--seed", "2"), "seed"),
            (("--seed", "1", "--model", "other"), "backend.model"),
        ):
            proc = cli(*base, *extra, cwd=tmp_path)
            assert proc.returncode == 2, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1 and f"setting '{setting}'" in proc.stderr
            assert "--force" in proc.stderr
        after = sorted((p.name, p.read_bytes()) for p in (tmp_path / "outputs" / "p").glob("*.jsonl"))
        assert after == before  # nothing written
        # Settings that do not change the output may change.
        assert cli(*base, "--seed", "1", "--concurrency", "3", "--target", "4", cwd=tmp_path).returncode == 0
        assert cli(*base, "--seed", "2", "--target", "4", "--force", cwd=tmp_path).returncode == 0
    m = json.loads((tmp_path / "outputs" / "p" / "manifest.json").read_text())
    assert m["sessions"][-1]["forced"] == [{"setting": "seed", "was": 1, "now": 2}]


def test_secrets_never_reach_a_file_or_a_message(tmp_path):
    """A key and a URL password set to canary strings, through the paths that fail and the one that
    works: neither appears in any file of the run directory (cache included) nor in any output."""
    key = {"OPENAI_API_KEY": "sk-key-canary"}

    def url(server) -> str:
        return server.base_url.replace("http://", "http://user:pw-canary@")

    def generate(base_url: str, name: str, *extra: str):
        return cli(
            *("generate", "--base-url", base_url, "--seed-file", str(SEEDS), "--target", "3"),
            *("--run-name", name, "--no-progress", "--llm-retry-initial", "0.01", "--llm-retry-max", "0.02"),
            *extra,
            cwd=tmp_path,
            env=key,
        )

    outputs = []
    outputs.append(generate("http://user:pw-canary@127.0.0.1:1/v1?api-key=query-canary", "unreachable"))
    with FakeOpenAIServer(respond, api_key="another-key") as server:
        outputs.append(generate(url(server), "unauthorized"))
    with FakeOpenAIServer(respond) as server:
        server.set_fault_rule(lambda n, body: Fault(status=500))
        outputs.append(generate(url(server), "error500"))
    with FakeOpenAIServer(respond, latency=1.0) as server:
        outputs.append(generate(url(server), "timeout", "--llm-timeout", "0.1"))
    with FakeOpenAIServer(respond) as server:
        outputs.append(generate(url(server), "works"))
    assert [p.returncode for p in outputs] == [2, 2, 3, 3, 0]
    for proc in outputs:
        assert "canary" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "cache.sqlite" for p in files) and any(p.name == "manifest.json" for p in files)
    for path in files:
        assert b"canary" not in path.read_bytes(), path


def test_generate_works_from_any_directory_with_the_packaged_seeds(tmp_path):
    with FakeOpenAIServer(respond) as server:
        proc = cli(
            *("generate", "--base-url", server.base_url, "--target", "3", "--no-progress"),
            *("--llm-structured", "off"),
            cwd=tmp_path,  # no seeds/ here: the package's own seed tasks are used
        )
    assert proc.returncode == 0, proc.stderr
    m = check_run_dir(tmp_path / "outputs" / "run")
    assert m["seed_file"]["tasks"] == 175 and m["seed_file"]["path"].endswith("seed_tasks.jsonl")
