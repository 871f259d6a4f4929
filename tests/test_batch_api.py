"""--llm-batch-api: classification and instances through /v1/files and /v1/batches on the test server."""

import json
import signal
import subprocess

from helpers import check_run_dir, cli, cli_command, cli_env
from openai_server import FakeOpenAIServer
from scripted import respond as responder
from test_engine import DATA_FILES, generate_args


def test_batch_api_gives_the_same_dataset_as_live_requests(tmp_path):
    with FakeOpenAIServer(responder) as server:
        assert cli(*generate_args(server, "live", "--target", "10"), cwd=tmp_path).returncode == 0
        args = generate_args(
            server, "batched", "--target", "10", "--llm-batch-api", "--llm-batch-poll-seconds", "0.01"
        )
        proc = cli(*args, "--model", "gpt-4o-mini", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert server.batches.created == 2  # one for classify, one for instances
        assert server.counts["batch_completions"] == 20
    live, batched = tmp_path / "outputs" / "live", tmp_path / "outputs" / "batched"
    m = check_run_dir(batched)
    for name in DATA_FILES:
        assert (live / name).read_bytes() == (batched / name).read_bytes(), name
    assert m["requests"]["classify"]["batches"] == 1 and m["requests"]["instances"]["batches"] == 1
    assert m["requests"]["classify"]["cost_usd"] > 0
    assert not list(batched.glob("batch_*.json"))  # state removed once applied


def test_failed_batch_lines_are_recorded_and_retried(tmp_path):
    with FakeOpenAIServer(responder) as server:
        server.batches.fail_ids = {"machine_1", "machine_3"}
        args = generate_args(
            server, "b", "--target", "6", "--llm-batch-api", "--llm-batch-poll-seconds", "0.01"
        )
        assert cli(*args, cwd=tmp_path).returncode == 3  # failures outstanding
        failures = [json.loads(line) for line in (tmp_path / "outputs" / "b" / "failures.jsonl").open()]
        assert {f["key"] for f in failures} == {"machine_1", "machine_3"}
        assert all("injected batch line failure" in f["error"] for f in failures)
        server.batches.fail_ids = set()
        assert cli(*args, cwd=tmp_path).returncode == 0
    m = check_run_dir(tmp_path / "outputs" / "b")
    assert m["counts"]["classified"] == 6 and m["counts"]["instance_records"] == 6


def test_a_restart_polls_the_batch_in_flight_instead_of_creating_another(tmp_path):
    with FakeOpenAIServer(responder) as server:
        args = generate_args(
            server, "r", "--target", "6", "--llm-batch-api", "--llm-batch-poll-seconds", "30"
        )
        proc = subprocess.Popen(
            [*cli_command(), *args],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # The client saves the batch's id before it polls: once it polls, a restart can resume it.
        assert server.batches.retrieved.wait(120), "the classify batch was never polled"
        assert (tmp_path / "outputs" / "r" / "batch_classify.json").exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert server.batches.created == 1
        args[args.index("30")] = "0.01"
        assert cli(*args, cwd=tmp_path).returncode == 0
        assert server.batches.created == 2  # the classify batch was resumed; only instances made a new one
    m = check_run_dir(tmp_path / "outputs" / "r")
    assert m["counts"]["classified"] == 6


def test_batch_api_needs_the_openai_backend(tmp_path):
    proc = cli("generate", "--backend", "local", "--llm-batch-api", cwd=tmp_path)
    assert proc.returncode == 2 and "llm.batch_api" in proc.stderr
