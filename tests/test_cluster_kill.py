"""A run on a Ray cluster whose driver is killed at random moments resumes to the local run's files.

The cluster is started as a user starts one (``ray start --head``), in its own process group, and
outlives the drivers the test kills, as a real cluster does; the drivers join it with
``--ray-address``.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import check_run_dir, cli, cli_env, sigkill_at_random_requests
from openai_server import FakeOpenAIServer
from scripted import respond
from test_engine import generate_args, same_files

pytestmark = pytest.mark.slow
HEAD_OPTIONS = ("--include-dashboard=false", "--disable-usage-stats")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray head with 2 CPUs on this machine; its address."""
    port = _free_port()
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", *HEAD_OPTIONS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=cli_env(),  # no OPENAI_* settings: the workers get the API key from the driver
    )
    try:
        assert head.stdout is not None
        for line in head.stdout:  # up once it says so (it blocks after that)
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail("ray start --head ended before the cluster started")
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def test_a_ray_run_killed_at_random_moments_resumes_to_the_local_runs_files(cluster, tmp_path):
    rng = random.Random(11)
    key = {"OPENAI_API_KEY": "sk-cluster-test"}
    with FakeOpenAIServer(respond, latency=0.05, api_key=key["OPENAI_API_KEY"]) as server:
        whole = cli(
            *generate_args(server, "whole", "--target", "40", "--concurrency", "8"), cwd=tmp_path, env=key
        )
        assert whole.returncode == 0, whole.stderr
        args = generate_args(server, "killed", "--target", "40", "--concurrency", "8")
        args += ["--executor", "ray", "--ray-address", cluster, "--ray-shards", "2", "--ray-workers", "2"]
        usage = tmp_path / "outputs" / "killed" / "usage.jsonl"
        # Kill each driver after a random number of new requests (so bootstrap, classify and instances
        # see kills, with requests in flight at the workers) until 4 kills have landed.
        kills = sigkill_at_random_requests(args, tmp_path, usage, rng, kills=4, most=25, tries=20, env=key)
        assert kills >= 4
        final = cli(*args, cwd=tmp_path, env=key)
        assert final.returncode == 0, final.stderr
        assert "model requests sent from 2 Ray workers" in final.stdout + final.stderr
        answered = server.counts["answered"]
    m = check_run_dir(tmp_path / "outputs" / "killed")
    same_files(tmp_path / "outputs" / "whole", tmp_path / "outputs" / "killed")
    # The endpoint's counts are the workers': the driver sent nothing itself.
    sent_by_workers = sum(e["requests"] for e in m["backend"]["endpoints"])
    assert 0 < sent_by_workers <= answered
