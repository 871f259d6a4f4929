"""Bad input ends with one line naming the file:line or setting, exit status 2, no traceback."""

import json
import socket
import subprocess
import sys

import pytest
from helpers import SEEDS, cli


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("self-instruct: error: ")
    for n in needles:
        assert n in err, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_lists_commands_and_settings(tmp_path):
    out = cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    for cmd in ("generate", "bootstrap", "classify", "instances", "dataset"):
        assert cmd in out.stdout
    out = cli("generate", "--help", cwd=tmp_path)
    for flag in (
        "--target",
        "--base-url",
        "--model-path",
        "--bootstrap-temperature",
        "--instances-max-tokens",
    ):
        assert flag in out.stdout


def test_malformed_seed_line(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(SEEDS.read_text().splitlines()[0] + "\n{oops\n")
    proc = cli("generate", "--seed-file", str(seeds), cwd=tmp_path)
    assert_one_line_error(proc, f"{seeds}:2:", "invalid JSON")


def test_missing_seed_file(tmp_path):
    proc = cli("bootstrap", "--seed-file", "nope.jsonl", cwd=tmp_path)
    assert_one_line_error(proc, "nope.jsonl: seed file not found")


def test_unknown_config_key(tmp_path):
    (tmp_path / "c.toml").write_text("[bootstrap]\ntemprature = 0.5\n")
    proc = cli("generate", "--config", "c.toml", "--seed-file", str(SEEDS), cwd=tmp_path)
    assert_one_line_error(proc, "c.toml", "unknown setting 'bootstrap.temprature'")


def test_bad_flag_value(tmp_path):
    proc = cli("generate", "--target", "lots", "--seed-file", str(SEEDS), cwd=tmp_path)
    assert_one_line_error(proc, "setting 'target' must be int")


def test_unreachable_endpoint(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = cli("generate", "--base-url", url, "--seed-file", str(SEEDS), "--no-progress", cwd=tmp_path)
    assert_one_line_error(proc, "llm.base_url", "cannot reach", url)


@pytest.mark.parametrize("content", [None, b"not a gguf model at all"])
def test_bad_model_path(tmp_path, content):
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    proc = cli("generate", "--model-path", str(path), "--seed-file", str(SEEDS), cwd=tmp_path)
    assert_one_line_error(proc, "llm.model_path", str(path))


def test_errors_do_not_damage_earlier_output(tmp_path):
    run_dir = tmp_path / "outputs" / "keep"
    run_dir.mkdir(parents=True)
    (run_dir / "machine_instructions.jsonl").write_text(json.dumps({"id": "machine_0"}) + "\n")
    before = (run_dir / "machine_instructions.jsonl").read_bytes()
    proc = cli("generate", "--run-name", "keep", "--seed-file", "missing.jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    assert (run_dir / "machine_instructions.jsonl").read_bytes() == before


def test_unreachable_endpoint_leaves_no_run_directory(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = cli("generate", "--base-url", url, "--seed-file", str(SEEDS), "--run-name", "x", cwd=tmp_path)
    assert proc.returncode == 2
    assert not (tmp_path / "outputs" / "x").exists()


def test_analyze_writes_a_report_and_rejects_bad_paths(tmp_path):
    proc = cli("analyze", str(SEEDS), "--out", "rep", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "rep" / "stats.json").read_text())
    assert "report.html" in proc.stdout and (tmp_path / "rep" / "report.html").exists()
    s = stats["inputs"][0]
    assert s["dataset"]["instructions"] == 175 and s["dataset"]["classification"] == 30
    assert s["verb_noun"]["instructions"] == 175
    proc = cli("analyze", "missing.jsonl", "--out", "rep2", cwd=tmp_path)
    assert_one_line_error(proc, "missing.jsonl")
    assert not (tmp_path / "rep2").exists()


def test_analyze_judge_through_the_test_server(tmp_path):
    from openai_server import FakeOpenAIServer
    from scripted import respond as responder
    from test_engine import generate_args

    with FakeOpenAIServer(responder) as server:
        assert cli(*generate_args(server, "j", "--target", "6"), cwd=tmp_path).returncode == 0
        proc = cli(
            "analyze",
            "outputs/j",
            "--out",
            "rep",
            "--judge",
            "5",
            "--no-progress",
            "--base-url",
            server.base_url,
            "--api",
            "completions",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        judged = [r for r in server.requests if "### Review" in str(r["body"].get("prompt", ""))]
        assert len(judged) == 5
    judge = json.loads((tmp_path / "rep" / "stats.json").read_text())["inputs"][0]["judge"]
    assert judge["sample"] == 5
    assert judge["valid"]["share"] == 1.0 and judge["input_fits"]["share"] == 1.0
    assert judge["output_correct"]["share"] == 0.0 and judge["output_correct"]["n"] == 5
    assert "LLM judge" in (tmp_path / "rep" / "report.md").read_text()


def test_a_command_without_its_extra_names_the_extra_to_install(tmp_path):
    # As if the 'analysis', 'local' and 'ray' extras were not installed: their modules cannot be imported.
    code = (
        "import sys; sys.modules.update(spacy=None, llama_cpp=None, ray=None); "
        "from self_instruct.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    for args, extra in (
        (["analyze", str(SEEDS), "--out", "rep", "--no-progress"], "analysis"),
        (["generate", "--seed-file", str(SEEDS), "--target", "2"], "local"),
        (["generate", "--seed-file", str(SEEDS), "--target", "2", "--executor", "ray"], "ray"),
        (["analyze", str(SEEDS), "--out", "rep", "--executor", "ray"], "ray"),
    ):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 2, proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line and f"pip install 'self-instruct[{extra}]'" in line
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "rep").exists()
