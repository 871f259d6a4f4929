"""self-instruct view: the database equals the run files, and Datasette serves it with facets, search
and canned queries that return rows; a run directory is never changed; bad input fails in one line."""

import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from helpers import SEEDS, cli, cli_command, cli_env, sigint_default
from scripted import ScriptedBackend
from test_cli import assert_one_line_error, free_port

from self_instruct.batch import Plan, merge
from self_instruct.config import load_config
from self_instruct.llm.base import Response
from self_instruct.pipeline import run
from self_instruct.store import read_jsonl
from self_instruct.tasks import load_tasks
from self_instruct.view.metadata import QUERIES

READY_SECONDS = 60
NEAR_SEED = load_tasks(SEEDS)[0].instruction.rstrip(".") + " again."


class Junk(ScriptedBackend):
    """The scripted model, plus what real models do: a blacklisted and a near-duplicate instruction in
    every bootstrap answer, unusable classification answers ("Suggest ..."), failed requests
    ("Explain ...", "List ..."), instances that are all rejected ("Summarize ...") or duplicated
    ("Compare ...")."""

    async def complete(self, request):
        prompt = request.prompt.rstrip()
        task = prompt.rsplit("Task:", 1)[-1].strip()
        if prompt.endswith("Classification:"):
            if task.startswith(("Explain", "List")):
                self.calls.append(request)
                return Response(text="", finish_reason="error", error="500 simulated failure")
            if task.startswith("Suggest"):
                self.calls.append(request)
                return Response(text=" Maybe", finish_reason="stop")
        if prompt.endswith("Example 1"):
            self.calls.append(request)
            if task.startswith("Summarize"):
                return Response(text="Input: same\nOutput: same", finish_reason="stop")
            if task.startswith("Compare"):
                pair = "Input: one case\nOutput: one result"
                return Response(text=f"{pair}\nExample 2\n{pair}", finish_reason="stop")
        response = await super().complete(request)
        if prompt.endswith("\n9."):  # bootstrap: two more items at the end of the numbered list
            items = [re.sub(r"^\d+\.\s*", "", line.strip()) for line in response.text.splitlines()]
            items += ["Draw a map of the harbor, the river and the old lighthouse.", NEAR_SEED]
            response.text = " " + items[0] + "".join(f"\n{10 + k}. {t}" for k, t in enumerate(items[1:]))
        return response


def generate(out: Path, label: str, seed: int) -> Path:
    values = {
        "output_dir": str(out),
        "run_name": label,
        "seed_file": str(SEEDS),
        "target": "15",
        "seed": str(seed),
        "progress": "false",
        "llm.structured": "off",
    }
    return run(load_config(None, values), backend=Junk()).run_dir


def tree_state(root: Path) -> dict:
    """Every file under root by content hash, size and modification time."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def wait_until(check, what: str, seconds: float = READY_SECONDS):
    """Poll ``check`` until it returns something true; fail after the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what} after {seconds} s")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class Viewer:
    """`self-instruct view` in its own process group, stopped (with Datasette) by ``stop``."""

    def __init__(self, args: list[str], cwd: Path, port: int) -> None:
        self.port, self.log = port, cwd / f"view-{port}.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [*cli_command(), "view", *args, "--port", str(port)],
                cwd=cwd,
                env=cli_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=sigint_default,
            )

    def wait_ready(self) -> str:
        def ready():
            assert self.proc.poll() is None, self.log.read_text()
            found = re.search(r"serving at (http://\S+)", self.log.read_text())
            return found and answers(f"http://127.0.0.1:{self.port}/-/versions.json") and found[1]

        return wait_until(ready, "the viewer to serve")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two scripted runs of a batch, their merged directory, and an analysis report in run a."""
    root = tmp_path_factory.mktemp("batch")
    dirs = {label: generate(root / "runs", label, seed) for label, seed in (("a", 1), ("b", 2))}
    merge(Plan("batch", root, {}, {}, 0.7), ["a", "b"])
    dirs["merged"] = root / "merged"
    (dirs["a"] / "analysis").mkdir()
    (dirs["a"] / "analysis" / "report.html").write_text("<html><body>report of run a</body></html>\n")
    return dirs


@pytest.fixture(scope="module")
def served(runs, tmp_path_factory):
    """Datasette serving the three runs; the run directories' state before it started."""
    before = {label: tree_state(d) for label, d in runs.items()}
    work = tmp_path_factory.mktemp("view")
    viewer = Viewer([*(str(d) for d in runs.values()), "--db", str(work / "runs.db")], work, free_port())
    try:
        url = viewer.wait_ready()
        yield url, before
    finally:
        status = viewer.stop()
    assert status == 0, viewer.log.read_text()


def get(url: str, path: str, **params) -> dict | list:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{query}", timeout=30) as resp:
        return json.loads(resp.read())


def count(url: str, table: str, **where) -> int:
    return get(url, f"/{table}.json", _size=0, **where)["filtered_table_rows_count"]


def lines(run_dir: Path, name: str) -> int:
    return len(read_jsonl(run_dir / name))


def test_the_scripted_runs_have_what_the_viewer_shows(runs):
    stages = Counter(r["stage"] for r in read_jsonl(runs["a"] / "rejected.jsonl"))
    assert set(stages) >= {"bootstrap", "classify", "instances", "dataset"}
    assert lines(runs["a"], "failures.jsonl") > 0
    assert any(r["is_classification"] for r in read_jsonl(runs["a"] / "tasks.jsonl"))


def test_table_counts_equal_the_run_files(served, runs):
    url, _ = served
    for label in ("a", "b"):
        d = runs[label]
        expected = {
            "instructions": lines(d, "machine_instructions.jsonl"),
            "tasks": lines(d, "tasks.jsonl"),
            "instances": lines(d, "dataset.jsonl"),
            "rejected": lines(d, "rejected.jsonl"),
            "failures": lines(d, "failures.jsonl"),
            "responses": sum(
                lines(d, n) for n in ("bootstrap_requests.jsonl", "classifications.jsonl", "instances.jsonl")
            ),
        }
        assert {table: count(url, table, run=label) for table in expected} == expected, label
    merged = runs["merged"]
    assert count(url, "tasks", run="merged") == lines(merged, "tasks.jsonl")
    assert count(url, "instances", run="merged") == lines(merged, "dataset.jsonl")
    assert count(url, "rejected", run="merged") == lines(merged, "rejected.jsonl")
    assert count(url, "runs") == 3


def test_rejected_facets_equal_the_manifest_counts(served, runs):
    url, _ = served
    for label in ("a", "b"):
        manifest = json.loads((runs[label] / "manifest.json").read_text())
        by_reason = Counter()
        for reasons in manifest["counts"]["rejected_by_stage"].values():
            by_reason.update(reasons)
        data = get(url, "/rejected.json", run=label, _facet="reason", _facet_size="max", _size=0)
        facet = {r["value"]: r["count"] for r in data["facet_results"]["reason"]["results"]}
        assert facet == dict(by_reason)
        if label == "a":
            assert {"too_similar", "ambiguous_answer", "no_instances", "duplicate_instance"} <= set(facet)


def test_configured_facets_are_computed(served):
    url, _ = served
    for table, facets in {
        "rejected": ("run", "stage", "reason"),
        "instances": ("run", "is_classification", "method"),
        "responses": ("run", "stage", "method"),
    }.items():
        assert set(get(url, f"/{table}.json", _size=0)["facet_results"]) >= set(facets), table


def test_full_text_search_finds_an_instruction(served, runs):
    url, _ = served
    known = read_jsonl(runs["b"] / "dataset.jsonl")[0]
    rows = get(url, "/instances.json", _search=known["instruction"], _shape="array")
    assert known["instruction"] in {r["instruction"] for r in rows}
    rows = get(url, "/instances.json", _search=known["output"], _shape="array")
    assert known["output"] in {r["output"] for r in rows}
    rows = get(url, "/rejected.json", _search="lighthouse", _shape="array")
    assert rows and all("lighthouse" in r["instruction"] for r in rows)
    assert any(r["reason"] == "keyword:draw" for r in rows)


def test_every_canned_query_returns_rows(served):
    url, _ = served
    for name in QUERIES:
        assert get(url, f"/{name}.json", _shape="array"), name


def test_canned_queries_answer_their_questions(served, runs):
    url, _ = served
    near = get(url, "/near_duplicates.json", run="a", _shape="array")
    assert {(r["rejected_instruction"], r["blocked_by"]) for r in near} >= {
        (NEAR_SEED, load_tasks(SEEDS)[0].instruction)
    }
    assert all(r["score"] > 0.7 for r in near)
    missing = get(url, "/tasks_without_instances.json", run="a", _shape="array")
    status = Counter(r["status"] for r in missing)
    assert status["answered, nothing kept"] and status["not classified"]
    kept_nothing = next(r for r in missing if r["status"] == "answered, nothing kept")
    assert kept_nothing["raw_answer"] == "Input: same\nOutput: same"
    assert "input_equals_output" in kept_nothing["rejected_parts"]
    # A merged row's answer is found in the run it came from.
    row = read_jsonl(runs["merged"] / "dataset.jsonl")[0]
    behind = get(url, "/answer_behind_row.json", run="merged", q=row["input"], _shape="array")
    match = next(r for r in behind if r["instruction"] == row["instruction"])
    assert match["answer_run"] in ("a", "b") and row["input"] in match["raw_answer"]
    by_reason = get(url, "/rejections_by_reason.json", run="a", _shape="array")
    assert sum(r["rejected"] for r in by_reason) == lines(runs["a"], "rejected.jsonl")
    assert all(r["examples"] for r in by_reason)
    compared = {r["run"]: r for r in get(url, "/runs_compared.json", _shape="array")}
    assert compared["a"]["instances"] == lines(runs["a"], "dataset.jsonl")


def test_home_page_links_the_analysis_report(served):
    url, _ = served
    root = url.rsplit("/", 1)[0]
    with urllib.request.urlopen(root + "/", timeout=30) as resp:
        home = resp.read().decode()
    assert 'href="/report-a/report.html"' in home
    with urllib.request.urlopen(root + "/report-a/report.html", timeout=30) as resp:
        assert "report of run a" in resp.read().decode()


def test_viewing_leaves_run_directories_unchanged(served, runs):
    url, before = served
    for table in ("runs", "instructions", "tasks", "instances", "rejected", "failures", "responses"):
        get(url, f"/{table}.json")
    assert {label: tree_state(d) for label, d in runs.items()} == before


def test_no_serve_builds_once_and_rebuilds_when_a_run_changes(runs, tmp_path):
    import shutil

    run_dir = shutil.copytree(runs["a"], tmp_path / "a")
    db = tmp_path / "out" / "a.db"

    def view():
        proc = cli("view", str(run_dir), "--db", str(db), "--no-serve", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def failures_in_db():
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from failures").fetchone()[0]

    assert "(built;" in view() and db.is_file()
    assert (tmp_path / "out" / "a.metadata.json").is_file()
    built = db.stat().st_mtime_ns
    assert "(up to date;" in view() and db.stat().st_mtime_ns == built
    n = failures_in_db()
    with (run_dir / "failures.jsonl").open("a") as f:
        f.write(
            json.dumps({"stage": "instances", "key": "machine_0", "error": "later", "attempts": 1}) + "\n"
        )
    assert "(built;" in view()
    assert failures_in_db() == n + 1
    assert sorted(p.name for p in db.parent.iterdir()) == ["a.db", "a.metadata.json"]


def test_the_default_database_lies_in_the_cache_named_after_the_run(runs, tmp_path):
    proc = cli("view", str(runs["b"]), "--no-serve", cwd=tmp_path, env={"XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    (db,) = (tmp_path / "self-instruct" / "view").glob("*/b.db")
    assert str(db) in proc.stdout and f"datasette {db} -m" in proc.stdout


def test_stopping_the_viewer_stops_datasette(runs, tmp_path):
    port = free_port()
    viewer = Viewer([str(runs["b"]), "--db", str(tmp_path / "b.db")], tmp_path, port)
    try:
        viewer.wait_ready()
        viewer.proc.send_signal(signal.SIGINT)  # the viewer only, not its process group
        assert viewer.proc.wait(timeout=30) == 0
    finally:
        viewer.stop()

    def port_closed():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) != 0

    wait_until(port_closed, "Datasette to stop")


def test_bad_input_fails_in_one_line(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = cli("view", str(tmp_path / "empty"), "--no-serve", cwd=tmp_path)
    assert_one_line_error(proc, "empty: not a run directory")
    proc = cli("view", "missing", "--no-serve", cwd=tmp_path)
    assert_one_line_error(proc, "missing: not a run directory")
    (tmp_path / "file").write_text("")
    proc = cli("view", str(runs["b"]), "--db", str(tmp_path / "file" / "x.db"), "--no-serve", cwd=tmp_path)
    assert_one_line_error(proc, "cannot write the database")
    (tmp_path / "notes.db").write_text("not a database\n")
    proc = cli("view", str(runs["b"]), "--db", str(tmp_path / "notes.db"), "--no-serve", cwd=tmp_path)
    assert_one_line_error(proc, "notes.db: exists and is not a database written by self-instruct view")
    assert (tmp_path / "notes.db").read_text() == "not a database\n"
    proc = cli("view", str(runs["b"]), "--db", str(runs["b"] / "view.db"), "--no-serve", cwd=tmp_path)
    assert_one_line_error(proc, "inside the run directory")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = cli("view", str(runs["b"]), "--db", str(tmp_path / "b.db"), "--port", str(port), cwd=tmp_path)
    assert_one_line_error(proc, f"--port {port}: cannot listen")


def test_view_without_its_extra_names_it(runs, tmp_path):
    fake = tmp_path / "shadow" / "datasette"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {"PYTHONPATH": str(fake.parent)}
    proc = cli("view", str(runs["b"]), "--no-serve", cwd=tmp_path, env=env)
    assert_one_line_error(proc, "needs the 'view' extra", "pip install 'self-instruct[view]'")
