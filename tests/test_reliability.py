"""No data lost, whatever the user or the machine does: one writer per run directory, names that
stay inside their output folder, operating-system errors as one line, settings inside their ranges,
and reruns that never promise what they cannot do."""

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import check_run_dir, cli, cli_command, cli_env
from openai_server import FakeOpenAIServer, Fault
from scripted import respond
from test_engine import DATA_FILES, generate_args

from self_instruct import config as config_mod
from self_instruct.errors import UserError
from self_instruct.store import LOCK_NAME


def one_line(proc, status: int) -> str:
    """The single stderr line of a command that ended with ``status``; no traceback."""
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def same_files(a: Path, b: Path) -> None:
    """The two run directories hold the same data files, byte for byte (or both lack one)."""
    for name in DATA_FILES:
        assert (a / name).exists() == (b / name).exists(), name
        if (a / name).exists():
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- one writer per run directory -------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A scripted server, and a run of target 6 made on it by a single writer."""
    root = tmp_path_factory.mktemp("writers")
    with FakeOpenAIServer(respond) as server:
        assert cli(*generate_args(server, "clean", "--target", "6"), cwd=root).returncode == 0
        yield server, root / "outputs" / "clean"


# Two trials in the fast suite; all 20 with the slow tests.
TRIALS = [pytest.param(i, marks=[pytest.mark.slow] if i >= 2 else []) for i in range(20)]


@pytest.mark.parametrize("trial", TRIALS)
def test_two_writers_started_together_one_refuses_the_other_runs_clean(tmp_path, clean_run, trial):
    server, clean = clean_run
    gate = threading.Event()

    def hold(n, body):
        # Generation requests wait until one process has ended: the writer is still at work when
        # the other reaches the lock, however the two were scheduled.
        gate.wait(60)
        return None

    server.set_fault_rule(hold)
    try:
        args = [*cli_command(), *generate_args(server, "same", "--target", "6")]
        procs = [
            subprocess.Popen(
                args, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.02)
        gate.set()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        gate.set()
        server.set_fault_rule(None)
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outs
    loser, winner = (0, 1) if codes[0] == 2 else (1, 0)
    err = outs[loser][1].decode()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "another self-instruct is writing this run directory" in err
    assert f"process {procs[winner].pid} (started " in err
    run = tmp_path / "outputs" / "same"
    check_run_dir(run)
    same_files(clean, run)


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "outputs" / "r"
    run.mkdir(parents=True)
    (run / LOCK_NAME).write_text(json.dumps({"pid": 999999, "started": "2020-01-01T00:00:00Z"}))
    with FakeOpenAIServer(respond) as server:
        proc = cli(*generate_args(server, "r", "--target", "3"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    holder = json.loads((run / LOCK_NAME).read_text())
    assert holder["pid"] != 999999 and "generate" in holder["command"]


# --- every path contained -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "a/b", "/tmp/abs-run", "..", ".", "x" * 300])
def test_run_names_that_leave_the_output_folder_are_refused(tmp_path, name):
    (tmp_path / "work").mkdir()
    before = tree(tmp_path)
    proc = cli("dataset", "--run-name", name, cwd=tmp_path / "work")
    assert "setting 'run_name'" in one_line(proc, 2)
    assert tree(tmp_path) == before
    config = tmp_path / "work" / "c.toml"
    config.write_text(f"run_name = {json.dumps(name)}\n")
    proc = cli("dataset", "--config", str(config), cwd=tmp_path / "work")
    assert "setting 'run_name'" in one_line(proc, 2)


@pytest.mark.parametrize("name", ["../../escape", "a/b", "/tmp/abs-plan", "x" * 300])
def test_plan_names_that_leave_the_output_folder_are_refused(tmp_path, name):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "plan.toml").write_text(f"name = {json.dumps(name)}\n[base]\ntarget = 2\n")
    before = tree(tmp_path)
    proc = cli("batch", "plan.toml", cwd=work)
    line = one_line(proc, 2)
    assert "plan.toml" in line and "setting 'name'" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "text", ["", "# nothing here\n", 'name = "x"\n', "[merge]\nsimilarity_threshold = 0.5\n"]
)
def test_a_plan_without_runs_is_refused(tmp_path, text):
    (tmp_path / "plan.toml").write_text(text)
    line = one_line(cli("batch", "plan.toml", cwd=tmp_path), 2)
    assert "plan.toml: the plan sets no run" in line
    assert tree(tmp_path) == ["plan.toml"]


# --- operating-system errors are one line -------------------------------------------------------


def test_an_output_dir_that_is_a_file_or_under_one_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a directory\n")
    for output_dir in ("afile", "afile/sub"):
        proc = cli("dataset", "--output-dir", output_dir, "--run-name", "r", cwd=tmp_path)
        assert "afile" in one_line(proc, 2)
    assert (tmp_path / "afile").read_text() == "not a directory\n"


def mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_read_only_output_dir_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    if not mount_tmpfs(ro, "ro,size=1m"):
        if os.geteuid() == 0:
            pytest.skip("cannot mount a read-only tmpfs here (and root writes through permissions)")
        ro.chmod(0o555)
    try:
        proc = cli("dataset", "--output-dir", str(ro), "--run-name", "r", cwd=tmp_path)
        line = one_line(proc, 2)
        assert str(ro) in line and ("Read-only" in line or "Permission denied" in line)
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
        ro.chmod(0o755)


@pytest.mark.parametrize("size", ["120k", "160k", "240k"])  # the disk fills in different stages
def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_to_identical_files(tmp_path, size):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, f"size={size}"):
        pytest.skip("cannot mount a small tmpfs here; test_disk_full_in_process covers the logic")
    try:
        with FakeOpenAIServer(respond) as server:
            assert cli(*generate_args(server, "clean", "--target", "40"), cwd=tmp_path).returncode == 0
            args = [*generate_args(server, "full", "--target", "40"), "--output-dir", str(disk)]
            line = one_line(cli(*args, cwd=tmp_path), 3)
            assert "No space left on device" in line and str(disk / "full") in line
            assert "run the same command again to resume" in line
            leftovers = [p.name for p in disk.rglob("*.tmp")]
            assert leftovers == []
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            proc = cli(*args, cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
        check_run_dir(disk / "full")
        same_files(tmp_path / "outputs" / "clean", disk / "full")
        sessions = json.loads((disk / "full" / "manifest.json").read_text())["sessions"]
        assert sessions[-1]["status"] == "finished" and sessions[0]["status"] in ("stopped", "killed")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_disk_full_in_process(tmp_path, monkeypatch, capsys):
    """Writes made to raise ENOSPC midway (any machine): exit 3 in one line, no temporary file,
    the session on record as stopped, and a resume gives the files of a run never stopped."""
    from self_instruct import cli as cli_mod
    from self_instruct.store import JsonlStore

    with FakeOpenAIServer(respond) as server:
        clean = generate_args(server, "clean", "--target", "20", "--output-dir", str(tmp_path / "out"))
        assert cli_mod.main(clean) == 0
        args = generate_args(server, "full", "--target", "20", "--output-dir", str(tmp_path / "out"))
        real_append = JsonlStore.append
        calls = {"n": 0}

        def append(self, records, *, sync=True):
            records = list(records)
            if records and self.path.name != "usage.jsonl":
                calls["n"] += 1
                if calls["n"] == 12:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            return real_append(self, records, sync=sync)

        monkeypatch.setattr(JsonlStore, "append", append)
        capsys.readouterr()
        assert cli_mod.main(args) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "No space left on device" in err[0], err
        monkeypatch.setattr(JsonlStore, "append", real_append)
        assert cli_mod.main(args) == 0
    run = tmp_path / "out" / "full"
    assert not list(run.rglob("*.tmp"))
    same_files(tmp_path / "out" / "clean", run)
    sessions = json.loads((run / "manifest.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["stopped", "finished"]
    assert "No space left on device" in sessions[0]["error"]


# --- settings inside their ranges ---------------------------------------------------------------


def test_every_numeric_setting_has_a_range():
    numeric = {
        name
        for name, (typ, default) in config_mod.settings().items()
        if isinstance(default, (int, float)) and not isinstance(default, bool)
    }
    assert numeric == set(config_mod.RANGES)


def outside(r: config_mod.Range) -> list[float]:
    values = []
    if r.low is not None:
        values.append(r.low if r.open_low else r.low - 1)
    if r.high is not None:
        values.append(r.high if r.open_high else r.high + 1)
    return values


CASES = [(name, v) for name, r in config_mod.RANGES.items() for v in outside(r)]


@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{n}={v}" for n, v in CASES])
def test_a_setting_outside_its_range_is_refused(name, value):
    typ, _ = config_mod.settings()[name]
    text = str(int(value)) if typ is int else str(value)
    with pytest.raises(UserError, match=f"setting '{name}' must be"):
        config_mod.load_config(None, {name: text})


@pytest.mark.parametrize("name", sorted(config_mod.RANGES))
def test_a_setting_at_its_bounds_is_accepted(name):
    r = config_mod.RANGES[name]
    typ, _ = config_mod.settings()[name]
    for bound, is_open in ((r.low, r.open_low), (r.high, r.open_high)):
        if bound is None:
            continue
        value = bound + (0.5 if typ is float else 1) * (1 if bound == r.low else -1) if is_open else bound
        overrides = {name: str(int(value)) if typ is int else str(value)}
        if name == "bootstrap.num_prompt_instructions":  # at most this many of them from the pool
            overrides["bootstrap.num_machine_instructions"] = "0"
        config_mod.load_config(None, overrides)


@pytest.mark.parametrize(
    "flag",
    [
        ("--bootstrap-max-tokens", "0"),
        ("--llm-timeout", "0"),
        ("--llm-max-retries", "-1"),
        ("--bootstrap-top-p", "7"),
        ("--llm-rpm", "-5"),
        ("--llm-n-ctx", "-1"),
        ("--bootstrap-temperature", "nan"),
    ],
)
def test_nonsense_settings_on_the_command_line_are_one_line(tmp_path, flag):
    line = one_line(cli("generate", *flag, "--run-name", "r", cwd=tmp_path), 2)
    assert f"setting '{flag[0][2:].replace('-', '.', 1).replace('-', '_')}'" in line
    assert not (tmp_path / "outputs").exists()


def test_choices_show_in_help(tmp_path):
    out = cli("generate", "--help", cwd=tmp_path).stdout
    assert "{auto,local,openai}" in out and "{rouge,unicode}" in out


# --- a resume never promises what it cannot do --------------------------------------------------


def test_cut_off_classification_says_which_setting_to_raise_and_raising_it_finishes(tmp_path):
    from self_instruct.prompts import CHAT_CLASSIFY_QUESTION

    classify_seeds = []

    def answer(kind, body):
        text = json.dumps(body.get("messages") or body.get("prompt"))
        if CHAT_CLASSIFY_QUESTION[:30] in text:
            classify_seeds.append(body.get("seed"))
            if body.get("seed") in (42, 42 * 1_000_003 + 1, 42 * 1_000_003 + 2):  # the first 3 attempts
                return "Let me think about what this task asks for before I give a final answer " * 5
            return "No"
        return respond(kind, body)

    with FakeOpenAIServer(answer) as server:
        args = [*generate_args(server, "cut", "--target", "4"), "--api", "chat"]
        line = one_line(cli(*args, cwd=tmp_path), 3)
        assert "4 instructions got 3 unusable answers each" in line and "ambiguous_answer x4" in line
        assert "raise classify.max_attempts (--classify-max-attempts N)" in line
        assert "run the same command again to retry" not in line
        asked = len(classify_seeds)
        assert asked == 12
        # The same command asks nothing more and says so again.
        assert one_line(cli(*args, cwd=tmp_path), 3) == line
        assert len(classify_seeds) == asked
        # Raising the named setting goes on, with new samples, to the end.
        proc = cli(*args, "--classify-max-attempts", "4", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    m = check_run_dir(tmp_path / "outputs" / "cut")
    assert m["counts"]["classified"] == 4


def test_bootstrap_at_its_request_limit_names_the_limit(tmp_path):
    with FakeOpenAIServer(respond) as server:
        args = generate_args(server, "few", "--target", "40", "--bootstrap-max-requests", "2")
        line = one_line(cli(*args, cwd=tmp_path), 3)
        assert "in 2 requests, its limit" in line and "raise bootstrap.max_requests" in line
        answered = server.counts["answered"]
        assert one_line(cli(*args, cwd=tmp_path), 3) == line
        assert server.counts["answered"] == answered


def test_exit_3_names_only_files_that_exist(tmp_path):
    with FakeOpenAIServer(respond) as server:
        server.set_fault_rule(lambda n, body: Fault(status=500))
        line = one_line(cli(*generate_args(server, "down", "--target", "50"), cwd=tmp_path), 3)
    run = tmp_path / "outputs" / "down"
    for name in ("failures.jsonl", "rejected.jsonl"):
        assert (name in line) == (run / name).exists(), line


def test_a_timeout_names_llm_timeout(tmp_path):
    with FakeOpenAIServer(respond) as server:
        server.set_fault_rule(lambda n, body: Fault(delay=2))
        args = generate_args(
            server, "slow", "--target", "3", "--llm-timeout", "0.3", "--llm-max-retries", "0"
        )
        proc = cli(*args, "--llm-breaker-window", "0", "--bootstrap-max-requests", "2", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    failures = [json.loads(line) for line in (tmp_path / "outputs" / "slow" / "failures.jsonl").open()]
    assert failures and all("llm.timeout" in f["error"] for f in failures)


# --- accounting of what was in flight -----------------------------------------------------------


def test_usage_puts_each_request_on_record_before_it_is_sent(tmp_path):
    with FakeOpenAIServer(respond) as server:
        assert (
            cli(*generate_args(server, "u", "--target", "5", "--concurrency", "8"), cwd=tmp_path).returncode
            == 0
        )
        answered = server.counts["answered"]
    usage = [json.loads(line) for line in (tmp_path / "outputs" / "u" / "usage.jsonl").open()]
    sent = [r for r in usage if r.get("event") == "sent"]
    done = [r for r in usage if "request" in r and r.get("event") != "sent"]
    assert len(sent) == len(done) == answered
    first_seen: dict[int, int] = {}
    for i, r in enumerate(usage):
        first_seen.setdefault((r.get("event") == "sent", r.get("request")), i)
    assert all(first_seen[(True, r["request"])] < first_seen[(False, r["request"])] for r in done)
    m = json.loads((tmp_path / "outputs" / "u" / "manifest.json").read_text())
    assert sum(s.get("requests", 0) - s.get("cache_hits", 0) for s in m["requests"].values()) == answered
    assert not any("unanswered_at_kill" in s for s in m["requests"].values())


def test_disk_full_in_process_leaves_the_cache_consistent(tmp_path):
    """A cache on a full disk is one line too (SQLite's own error, named by the cache file)."""
    from self_instruct.llm.base import Response
    from self_instruct.llm.cache import ResponseCache

    cache = ResponseCache(tmp_path / "cache.sqlite")
    cache._db.execute("PRAGMA max_page_count = 8")  # a database that cannot grow: "full"
    with pytest.raises(OSError) as e:
        for i in range(200):
            cache.put(f"k{i}", Response(text="x" * 2000, finish_reason="stop"))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "cache.sqlite")
    cache.close()


def test_a_server_that_turns_to_400_midway_stops_the_run_in_one_line_and_it_resumes(tmp_path):
    """A fatal answer in the middle of a stage (400 to every generation request after the 20th):
    the requests in flight are cancelled, the run stops in one line with its files consistent, and
    the same command resumes to the files of a run never stopped once the server is healthy."""
    with FakeOpenAIServer(respond) as server:
        clean = generate_args(server, "clean", "--target", "30", "--concurrency", "8")
        assert cli(*clean, cwd=tmp_path).returncode == 0
        server.set_fault_rule(lambda n, body: Fault(status=400) if n > 20 else None)
        args = generate_args(server, "cut", "--target", "30", "--concurrency", "8", "--no-cache")
        line = one_line(cli(*args, cwd=tmp_path), 2)
        assert "400 bad request" in line
        run = tmp_path / "outputs" / "cut"
        check_run_dir(run)  # consistent with itself, though unfinished
        sessions = json.loads((run / "manifest.json").read_text())["sessions"]
        assert sessions[-1]["status"] == "failed"
        server.set_fault_rule(None)
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    check_run_dir(run)
    same_files(tmp_path / "outputs" / "clean", run)
