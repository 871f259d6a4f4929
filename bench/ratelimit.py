"""Rate limits the client is not told: this tree's pacing against the previous engine, in the same run.

A loopback OpenAI-compatible server (tests/openai_server.py, the scripted model, ``--latency`` per
answer) runs in its own process and enforces limits as OpenAI does (``RateLimits``): requests and
tokens per minute, each a bucket of ``--burst`` seconds' worth refilling continuously, a request
counting its prompt and all of its max_tokens on arrival. An over-limit request is answered 429 at
once with ``retry-after-ms`` / ``retry-after``; every answer carries the ``x-ratelimit-*`` headers.
The client is given no ``llm.rpm`` / ``llm.tpm``.

``generate --target N --concurrency 64`` runs against it twice, each in its own process and with a
fresh server, cache off: this tree, and the engine of ``--baseline-rev`` (the commit before pacing,
extracted with ``git archive``). For each it prints:

- goodput: requests the server admitted, as a share of what its limits allowed over the run (the
  bucket's burst plus its rate x the time from the first request to the last);
- the share of requests answered 429;
- wall time, and whether the run finished (the previous engine can spend a request's retries on
  429s and end incomplete, exit 3).

The previous engine runs a second time told the limits (``--llm-rpm``, ``--llm-tpm``), as its users
had to; this tree is never told.

A second scenario splits the limit over two endpoints, one granting 4x the other; it prints each
endpoint's share of the work against its share of the capacity.

    .venv/bin/python bench/ratelimit.py [--target 500] [--rpm 600] [--tpm 1000000] [--latency 0.3]
    .venv/bin/python bench/ratelimit.py --max-retries 30   # retries enough for the previous engine to finish
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

from fleet import baseline_tree  # noqa: E402

BASELINE_REV = "64746f1"  # the last commit before pacing: Retry-After honoured, full concurrency


def serve(rpm: float, tpm: float, burst: float, latency: float, conn) -> None:
    from openai_server import FakeOpenAIServer, RateLimits
    from scripted import answer

    def responder(kind: str, body: dict) -> str:
        return answer(body["prompt"]) if kind == "completions" else answer(body["messages"][-1]["content"])

    limits = RateLimits(rpm=rpm, tpm=tpm, burst=burst)
    with FakeOpenAIServer(responder, latency=latency, limits=limits) as server:
        conn.send(server.base_url)
        conn.recv()  # until told to stop: then what the server saw
        conn.send({"log": limits.log, "capacity": limits.capacity, "rate": limits.rate})


class Server:
    """A rate-limited server in its own process."""

    def __init__(self, rpm: float, tpm: float, burst: float, latency: float) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=serve, args=(rpm, tpm, burst, latency, child), daemon=True)
        self.proc.start()
        self.url = self.conn.recv()

    def stop(self) -> dict:
        self.conn.send("stop")
        seen = self.conn.recv()
        self.proc.join(timeout=10)
        return seen


def goodput(seen: dict) -> dict:
    """What the server admitted and refused, and the admitted share of what its limits allowed."""
    log = seen["log"]
    admitted = [(t, tokens) for t, ok, tokens in log if ok]
    span = admitted[-1][0] - log[0][0] if admitted else 0.0
    out = {"requests": len(log), "admitted": len(admitted), "refused": len(log) - len(admitted)}
    for k, used in (("requests", len(admitted)), ("tokens", sum(t for _, t in admitted))):
        if seen["rate"][k]:
            out[f"share_{k}"] = used / (seen["capacity"][k] + seen["rate"][k] * span)
    return out


def generate(
    code: Path, out: Path, name: str, urls: list[str], args, extra: tuple[str, ...] = ()
) -> tuple[float, str]:
    """Wall time, and how the run ended: "complete", or its cause when requests failed for good
    (exit 3: retries spent on 429s)."""
    cmd = [sys.executable, "-m", "self_instruct", "generate", "--api", "completions"]
    for url in urls:
        cmd += ["--base-url", url]
    cmd += ["--seed-file", str(ROOT / "seeds" / "seed_tasks.jsonl"), "--output-dir", str(out)]
    cmd += ["--run-name", name, "--target", str(args.target), "--concurrency", str(args.concurrency)]
    cmd += [
        "--no-cache",
        "--no-progress",
        "--llm-structured",
        "off",
        "--llm-max-retries",
        str(args.max_retries),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(code)}  # and a working directory without a package in it
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{name}: generate failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    ended = "complete" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1].split(". ")[0]
    return wall, ended


def one(code: Path, out: Path, name: str, args, extra: tuple[str, ...] = ()) -> dict:
    server = Server(args.rpm, args.tpm, args.burst, args.latency)
    try:
        wall, ended = generate(code, out, name, [server.url], args, extra)
    finally:
        seen = server.stop()
    return {"wall": wall, "ended": ended, **goodput(seen)}


def fleet(code: Path, out: Path, name: str, args) -> list[dict]:
    """Two endpoints, the first granting 4x the second (together the same limit)."""
    servers = [Server(args.rpm * f, args.tpm * f, args.burst, args.latency) for f in (0.8, 0.2)]
    try:
        _, ended = generate(code, out, name, [s.url for s in servers], args)
    finally:
        seen = [s.stop() for s in servers]
    return [{"ended": ended, **goodput(s)} for s in seen]


def report(label: str, r: dict) -> None:
    tokens = f", tokens {100 * r['share_tokens']:.1f}%" if "share_tokens" in r else ""
    print(
        f"  {label:<28} goodput {100 * r.get('share_requests', 0):5.1f}% of the request limit{tokens}; "
        f"429s {r['refused']:4d} of {r['requests']:4d} ({100 * r['refused'] / max(r['requests'], 1):4.1f}%); "
        f"wall {r['wall']:6.1f} s"
    )
    if r["ended"] != "complete":
        print(f"    the run did not finish: {r['ended']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rpm", type=float, default=600, help="the server's requests per minute")
    ap.add_argument("--tpm", type=float, default=1_000_000, help="the server's tokens per minute (0: none)")
    ap.add_argument("--burst", type=float, default=10.0, help="seconds' worth each bucket holds")
    ap.add_argument("--latency", type=float, default=0.3, help="seconds per answer")
    ap.add_argument(
        "--max-retries", type=int, default=5, help="llm.max_retries of both runs (5: the default)"
    )
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--skip-fleet", action="store_true", help="only the one-endpoint scenario")
    args = ap.parse_args()
    print(
        f"generate --target {args.target}, concurrency {args.concurrency}; the server allows {args.rpm:g} "
        f"requests and {args.tpm:g} tokens a minute ({args.burst:g} s burst), answers in {args.latency:g} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        baseline = baseline_tree(args.baseline_rev, out / "baseline")
        ours = one(ROOT, out, "ours", args)
        theirs = one(baseline, out, "baseline", args)
        # The previous engine as a user would have had to run it: told the limits (llm.rpm, llm.tpm).
        told = ("--llm-rpm", f"{args.rpm:g}", "--llm-tpm", f"{args.tpm:g}")
        theirs_told = one(baseline, out, "baseline-told", args, told)
        report("this tree (not told)", ours)
        report(f"previous engine ({args.baseline_rev})", theirs)
        report("previous engine, told the limits", theirs_told)
        for label, r in (("previous", theirs), ("previous told the limits", theirs_told)):
            print(f"  wall time, {label} / this tree: {r['wall'] / ours['wall']:.2f}x")
        if not args.skip_fleet:
            print("two endpoints, the first granting 4x the second (80% / 20% of the capacity):")
            for label, code in (("this tree", ROOT), (f"previous engine ({args.baseline_rev})", baseline)):
                a, b = fleet(code, out, f"fleet-{label[:4]}", args)
                total = a["admitted"] + b["admitted"]
                refused = a["refused"] + b["refused"]
                shares = f"{100 * a['admitted'] / total:4.1f}% / {100 * b['admitted'] / total:4.1f}%"
                print(f"  {label:<28} work: {shares}; 429s {refused} of {a['requests'] + b['requests']}")
                if a["ended"] != "complete":
                    print(f"    the run did not finish: {a['ended']}")


if __name__ == "__main__":
    main()
