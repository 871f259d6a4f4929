"""The request engine over real HTTP: faults, kills, determinism, scale-out, cache replay."""

import json
import random
import signal
import subprocess
import time

import pytest
from helpers import (
    SEEDS,
    check_run_dir,
    cli,
    cli_command,
    cli_env,
    sigint_default,
    sigkill_at_random_requests,
)
from openai_server import FakeOpenAIServer, Fault
from scripted import respond

DATA_FILES = (
    "machine_instructions.jsonl",
    "bootstrap_requests.jsonl",
    "classifications.jsonl",
    "instances.jsonl",
    "rejected.jsonl",
    "tasks.jsonl",
    "dataset.jsonl",
)


def generate_args(server, run_name: str, *extra: str) -> list[str]:
    return [
        *("generate", "--base-url", server.base_url, "--api", "completions", "--seed-file", str(SEEDS)),
        *("--run-name", run_name, "--no-progress", "--llm-retry-initial", "0.01", "--llm-retry-max", "0.05"),
        *("--llm-structured", "off"),  # text answers, so fault rules see only stage requests
        *extra,
    ]


def same_files(a, b) -> None:
    for name in DATA_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def manifest(tmp_path, run):
    return json.loads((tmp_path / "outputs" / run / "manifest.json").read_text())


def test_every_fault_is_retried_counted_and_nothing_is_lost(tmp_path):
    faults = [
        Fault(status=429, retry_after=0.01),
        Fault(status=500),
        Fault(status=503),
        Fault(drop=True),
        Fault(delay=1.5),
        Fault(malformed=True),
        Fault(empty_choices=True),
        Fault(truncate=True),
    ]
    with FakeOpenAIServer(respond) as server:
        assert (
            cli(*generate_args(server, "clean", "--target", "12", "--no-cache"), cwd=tmp_path).returncode == 0
        )
        server.add_faults(*faults)
        proc = cli(
            *generate_args(server, "faulty", "--target", "12", "--no-cache"),
            *("--concurrency", "1", "--llm-timeout", "0.5", "--llm-max-retries", "10"),
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
    m = check_run_dir(tmp_path / "outputs" / "faulty")
    boot = m["requests"]["bootstrap"]
    assert boot["retries"] == len(faults)
    assert m["counts"]["failures"] == 0
    errors = {k.removeprefix("error:"): v for k, v in boot.items() if k.startswith("error:")}
    assert errors["429 rate limited"] == 1
    assert errors["500 server error"] == 1 and errors["503 server error"] == 1
    assert errors["timeout"] == 1 and errors["malformed response"] == 2  # bad JSON, empty choices
    assert errors["connection error"] == 2  # dropped and truncated
    same_files(tmp_path / "outputs" / "clean", tmp_path / "outputs" / "faulty")


def test_length_cut_responses_keep_their_complete_items(tmp_path):
    with FakeOpenAIServer(respond) as server:
        server.set_fault_rule(lambda n, body: Fault(finish_reason="length") if "prompt" in body else None)
        proc = cli(*generate_args(server, "cut", "--target", "6", "--no-cache"), cwd=tmp_path)
        # Every answer is cut off, the one-word classifications too: " No" cut off might have been
        # "Not ...", so none counts, and the run says it is incomplete.
        assert proc.returncode == 3, proc.stderr
        assert "6 instructions got 3 unusable answers each" in proc.stderr and "truncated x6" in proc.stderr
        assert (
            "cut off at classify.max_tokens" in proc.stderr and "raise classify.max_attempts" in proc.stderr
        )
    m = check_run_dir(tmp_path / "outputs" / "cut")
    assert m["requests"]["bootstrap"]["finish_length"] >= 1
    assert m["counts"]["rejected_by_stage"]["bootstrap"]["truncated"] >= 1
    assert m["counts"]["rejected_by_stage"]["classify"]["truncated"] == 6 * 3  # three attempts each
    assert m["counts"]["machine_instructions"] == 6


def test_request_that_keeps_failing_is_recorded_not_dropped(tmp_path):
    with FakeOpenAIServer(respond) as server:
        # Every classification request fails: they end in failures.jsonl; bootstrap is unaffected.
        server.set_fault_rule(
            lambda n, body: Fault(status=500) if body["prompt"].endswith("Classification:") else None
        )
        proc = cli(*generate_args(server, "fail", "--target", "5", "--llm-max-retries", "2"), cwd=tmp_path)
        assert proc.returncode == 3, proc.stderr
        assert "5 accepted instructions have no instances yet" in proc.stdout
        assert "5 failed requests in failures.jsonl (500 server error x5)" in proc.stderr
        assert "failed requests: 5 outstanding (5 in failures.jsonl)" in proc.stdout
        server.set_fault_rule(None)
        proc = cli(*generate_args(server, "fail", "--target", "5"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "failed requests: 0 outstanding (5 in failures.jsonl)" in proc.stdout
    m = check_run_dir(tmp_path / "outputs" / "fail")
    # The re-run resolved them: none outstanding, the history kept.
    assert m["counts"]["failures_by_stage"] == {} and m["counts"]["failures"] == 0
    assert m["counts"]["failures_history_by_stage"] == {"classify": 5}
    assert m["counts"]["classified"] == 5 and m["counts"]["instance_records"] == 5


def test_an_endpoint_that_always_fails_stops_early_with_status_3(tmp_path):
    with FakeOpenAIServer(respond) as server:
        server.set_fault_rule(lambda n, body: Fault(status=500))
        proc = cli(*generate_args(server, "down", "--target", "50"), cwd=tmp_path)
        served = server.counts
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("self-instruct: incomplete: the endpoint is not serving: 20 of the last 20")
    assert "500 server error x20" in lines[0]
    # It stopped after the breaker's window, not after 20 x target + 50 requests with retries each.
    assert served["fault:500"] <= 20 + 8  # the window, plus the attempts already in flight
    m = json.loads((tmp_path / "outputs" / "down" / "manifest.json").read_text())
    assert m["sessions"][-1]["status"] == "stopped"


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(tmp_path):
    rng = random.Random(3)
    with FakeOpenAIServer(respond, latency=0.05) as server:
        args = generate_args(server, "whole", "--target", "60", "--concurrency", "8")
        assert cli(*args, cwd=tmp_path).returncode == 0
        args = generate_args(server, "killed", "--target", "60", "--concurrency", "8")
        usage = tmp_path / "outputs" / "killed" / "usage.jsonl"
        # Kill each session after it has sent a random number of new requests (1 to 20, so bootstrap,
        # classify and instances all see kills, with requests in flight) until 5 kills have landed.
        # Start-up kills are the lock's and the manifest's business (a process killed there has
        # written nothing yet).
        kills = sigkill_at_random_requests(args, tmp_path, usage, rng, kills=5, most=20, tries=30)
        assert kills >= 5
        final = cli(*args, cwd=tmp_path)
        assert final.returncode == 0, final.stderr
        served = dict(server.counts)
    check_run_dir(tmp_path / "outputs" / "killed")
    same_files(tmp_path / "outputs" / "whole", tmp_path / "outputs" / "killed")
    # Usage survives the kills: every session is listed, the killed ones as "killed", and the totals
    # count what every session was served. The whole run and the killed one asked the same server:
    # "whole" is counted in its own manifest, the rest is ours.
    whole = json.loads((tmp_path / "outputs" / "whole" / "manifest.json").read_text())
    m = json.loads((tmp_path / "outputs" / "killed" / "manifest.json").read_text())
    statuses = [s["status"] for s in m["sessions"]]
    assert statuses.count("killed") == kills and "running" not in statuses
    assert statuses[-1] == "finished"
    assert all(s.get("command", "").startswith("self-instruct generate") for s in m["sessions"])

    def total(manifest, *keys):
        return sum(r.get(k, 0) for r in manifest["requests"].values() for k in keys)

    whole_sent, ours_sent = total(whole, "sent"), total(m, "sent")
    unanswered = total(m, "unanswered_at_kill")
    # A kill can land after the server answered and before the client recorded the answer; such a
    # request was put on record before it was sent, so the manifest counts it as unanswered_at_kill.
    # The manifest never counts fewer requests than the server answered, and more only by requests
    # put on record but never sent (at most the concurrency, 8, per kill).
    assert ours_sent + unanswered >= served["answered"] - whole_sent
    assert ours_sent + unanswered - (served["answered"] - whole_sent) <= 8 * kills
    assert total(m, "unanswered_prompt_tokens_est") >= 0
    assert (
        total(m, "prompt_tokens", "completion_tokens") + total(whole, "prompt_tokens", "completion_tokens")
        <= (served["tokens_served"])
    )
    assert ours_sent > whole_sent * 0.5  # killed sessions' requests are counted, not just the last


def test_concurrency_and_random_latency_do_not_change_the_output(tmp_path):
    rng = random.Random(5)
    with FakeOpenAIServer(respond) as server:
        server.set_fault_rule(lambda n, body: Fault(delay=rng.uniform(0, 0.03)))
        for run, conc in (("c1", "1"), ("c16", "16")):
            proc = cli(*generate_args(server, run, "--target", "30", "--concurrency", conc), cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
    same_files(tmp_path / "outputs" / "c1", tmp_path / "outputs" / "c16")


def test_scale_out_survives_an_endpoint_that_starts_failing(tmp_path):
    with FakeOpenAIServer(respond) as good, FakeOpenAIServer(respond) as bad:
        bad.set_fault_rule(lambda n, body: Fault(status=503) if n >= 5 else None)
        proc = cli(
            *generate_args(good, "fleet", "--target", "30", "--concurrency", "8"),
            *("--base-url", bad.base_url),
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert bad.counts["fault:503"] >= 1
        assert good.counts["completions"] > bad.counts["completions"]
        good_url, bad_url = good.base_url + "/", bad.base_url + "/"
    m = check_run_dir(tmp_path / "outputs" / "fleet")
    assert m["counts"]["failures"] == 0
    endpoints = {e["url"]: e for e in m["backend"]["endpoints"]}
    assert endpoints[bad_url]["failures"] >= 1
    assert endpoints[good_url]["failures"] == 0


def test_rerun_replays_from_the_cache_without_calling_the_model(tmp_path):
    with FakeOpenAIServer(respond) as server:
        assert cli(*generate_args(server, "cached", "--target", "10"), cwd=tmp_path).returncode == 0
        first = {n: (tmp_path / "outputs" / "cached" / n).read_bytes() for n in DATA_FILES}
        sent = server.counts["completions"]
        for name in DATA_FILES:
            (tmp_path / "outputs" / "cached" / name).unlink()
        assert cli(*generate_args(server, "cached", "--target", "10"), cwd=tmp_path).returncode == 0
        assert server.counts["completions"] == sent  # all answers came from the cache
        assert {n: (tmp_path / "outputs" / "cached" / n).read_bytes() for n in DATA_FILES} == first
        m = manifest(tmp_path, "cached")
        assert m["sessions"][-1]["requests"]["bootstrap"]["cache_hits"] >= 1
        # The re-run asked the endpoint nothing, and its totals still count the first session's.
        [endpoint] = m["backend"]["endpoints"]
        assert endpoint["requests"] == sent and endpoint["failures"] == 0
        assert m["requests"]["bootstrap"]["sent"] == m["sessions"][0]["requests"]["bootstrap"]["sent"]
        # --no-cache asks the model again.
        for name in DATA_FILES:
            (tmp_path / "outputs" / "cached" / name).unlink()
        assert (
            cli(*generate_args(server, "cached", "--target", "10", "--no-cache"), cwd=tmp_path).returncode
            == 0
        )
        assert server.counts["completions"] > sent


def test_rate_limit_and_cost_accounting(tmp_path):
    with FakeOpenAIServer(respond) as server:
        start = time.monotonic()
        proc = cli(
            *generate_args(server, "priced", "--target", "12", "--model", "gpt-4o-mini"),
            *("--llm-rpm", "600"),  # 10 per second
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        elapsed = time.monotonic() - start
    m = manifest(tmp_path, "priced")
    sent = sum(s.get("sent", 0) for s in m["requests"].values())
    assert sent >= 25
    assert elapsed >= (sent - 10) / 10  # the limiter allows a burst of 10, then 10 per second
    boot = m["requests"]["bootstrap"]
    expected = (boot["prompt_tokens"] * 0.15 + boot["completion_tokens"] * 0.60) / 1e6
    assert abs(boot["cost_usd"] - expected) < 1e-6


def test_the_token_limit_holds_over_any_minute():
    import asyncio

    from self_instruct.llm.engine import TokenWindow

    now = [0.0]

    async def sleep(seconds):
        now[0] += seconds

    window = TokenWindow(1000, clock=lambda: now[0], sleep=sleep)

    async def go():
        sent = []
        for tokens in [400] * 10 + [2500, 300]:
            await window.acquire(tokens)
            sent.append((now[0], tokens))
        return sent

    sent = asyncio.run(go())
    # No minute ever carries more than the limit, except a request larger than the whole budget,
    # which waited for an empty minute and went alone.
    for t, _ in sent:
        in_minute = [k for s, k in sent if t - 60 < s <= t]
        assert sum(in_minute) <= 1000 or in_minute == [2500]
    assert [tokens for _, tokens in sent] == [400] * 10 + [2500, 300]
    # Requests of 400 at 1,000 a minute go two a minute: the ninth and tenth in the fifth minute.
    assert 240 <= sent[9][0] < 300
    big = sent[10][0]
    assert all(s <= big - 60 for s, _ in sent[:10])  # a full empty minute before the big one
    assert sent[11][0] >= big + 60  # and nothing else within its minute


def test_usage_settles_the_estimate():
    import asyncio

    from self_instruct.llm.engine import TokenWindow

    now = [0.0]

    async def sleep(seconds):
        now[0] += seconds

    window = TokenWindow(1000, clock=lambda: now[0], sleep=sleep)

    async def go():
        entry = await window.acquire(900)  # estimated
        window.settle(entry, 100)  # the server says it was 100
        await window.acquire(800)
        return now[0]

    assert asyncio.run(go()) == 0.0  # 100 + 800 fit in the same minute


@pytest.mark.slow
def test_the_token_limit_holds_at_the_server_over_two_minutes(tmp_path):
    limit = 6000
    with FakeOpenAIServer(respond) as server:
        args = generate_args(server, "tpm", "--target", "5000", "--llm-tpm", str(limit), "--concurrency", "4")
        proc = subprocess.Popen(
            [*cli_command(), *args],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            preexec_fn=sigint_default,
        )
        time.sleep(125)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        served = list(server.served)
    start = served[0][0]
    # Tokens the server served in any minute, counted by the server.
    per_minute = [sum(k for t, k in served if s <= t < s + 60) for s, _ in served if s <= start + 60]
    assert max(per_minute) <= limit * 1.1, max(per_minute)
    over_two = sum(k for t, k in served if t < start + 120)
    assert over_two >= 2 * limit * 0.8  # and the budget is used, not left idle
