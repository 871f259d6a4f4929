"""Run configuration: defaults (the method's reference parameters), a TOML file, then CLI overrides.

Every setting has a dotted name (``bootstrap.temperature``), the same in the TOML file (as a table
key) and on the command line (``--bootstrap-temperature``). Unknown keys and wrong types are errors
that name the setting. The API key is never part of the config: it comes from OPENAI_API_KEY.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError


@dataclass
class LLMConfig:
    backend: str = "auto"  # auto: openai when a base URL or OPENAI_API_KEY is set, else local
    model: str = ""  # model name for openai (default gpt-4o-mini); ignored by local
    model_path: str = ""  # GGUF for local; empty: the embedded SmolLM2-135M-Instruct
    # OpenAI-compatible endpoints (several: requests spread over them); empty: OPENAI_BASE_URL or OpenAI
    base_url: list[str] = field(default_factory=list)
    api: str = "auto"  # completions | chat | auto (local: completions, openai: chat)
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 5
    retry_initial: float = 1.0  # first backoff in seconds (doubles, with jitter) when no Retry-After
    retry_max: float = 30.0  # longest single wait, Retry-After included
    n_ctx: int = 4096  # local context window
    cache: bool = True  # replay identical requests from the response cache
    cache_dir: str = ""  # where cache.sqlite lives; empty: the run directory (set one to share it)
    rpm: float = 0.0  # requests per minute limit; 0: none
    tpm: float = 0.0  # tokens per minute over any 60 s (admitted on prompt/4 + max_tokens); 0: none
    # Price in USD per million tokens for the cost estimate; negative: look the model up in the
    # built-in table (self_instruct/llm/prices.py), unknown models cost nothing.
    price_prompt: float = -1.0
    price_completion: float = -1.0
    # Your own price table, model name -> [prompt, completion] USD per million tokens; it extends and
    # overrides the built-in one (TOML only: [llm.prices] "my-model" = [0.2, 0.6]).
    prices: dict[str, list[float]] = field(default_factory=dict)
    batch_api: bool = False  # classify and instances through the OpenAI Batch API (half price, slow)
    # Circuit breaker: stop early when this share of the last breaker_window attempts failed (0: off)
    breaker_window: int = 20
    breaker_failure_rate: float = 0.9
    # Structured outputs: each stage asks for JSON of a schema (response_format / a llama.cpp grammar).
    # auto: on for the local backend; for an endpoint, probed once per run (off if it refuses)
    structured: str = "auto"
    batch_poll_seconds: float = 30.0


@dataclass
class BootstrapConfig:
    num_prompt_instructions: int = 8
    num_machine_instructions: int = 2  # of the 8, once the pool has that many machine instructions
    max_new_per_request: int = 7  # stop at item 16: 8 shown + 7 new
    # Request i's prompt sees the pool after requests 0..i-window were applied, and goes out as soon as
    # they are; fixed (not the concurrency), so output is the same at any concurrency (README: fleets)
    window: int = 512
    max_requests: int = 0  # give up after this many requests; 0: 20 x target + 50
    temperature: float = 0.7
    top_p: float = 0.5
    presence_penalty: float = 2.0
    frequency_penalty: float = 0.0
    max_tokens: int = 1024
    similarity_threshold: float = 0.7
    tokenizer: str = "rouge"  # rouge (reference: [a-z0-9] only) | unicode (any script; CJK per character)
    record_similar: int = 10  # each accepted instruction records this many most similar pool entries
    keep_truncated: bool = True  # keep the complete items of a response cut off by max_tokens


@dataclass
class ClassifyConfig:
    max_tokens: int = 3  # completions API: the answer is one word
    chat_max_tokens: int = 16  # chat API: room for "Yes, because ..." (only the first word counts)
    max_attempts: int = 3  # answers asked for when they are neither yes nor no (later ones sampled)
    # greedy: the reference rule (the answer's yes or no); calibrated: the first token's yes-no
    # log-probability margin against a threshold fitted on the seed tasks' labels;
    # auto: calibrated for the local backend, greedy for endpoints
    method: str = "auto"
    logprobs: int = 20  # top alternatives asked for the first answer token (calibrated)
    temperature: float = 0.0


@dataclass
class InstancesConfig:
    max_instances: int = 5
    max_tokens_input_first: int = 350  # the reference: 350 for batches without classification tasks
    max_tokens_output_first: int = 300  # and 300 for batches that held one
    temperature: float = 0.0
    top_p: float = 1.0
    presence_penalty: float = 1.5
    frequency_penalty: float = 0.0


@dataclass
class Config:
    run_name: str = "run"
    output_dir: str = "outputs"
    seed_file: str = ""  # empty: the seed tasks that ship with the package (seeds/seed_tasks.jsonl)
    target: int = 100  # machine-generated instructions to accept
    seed: int = 42
    progress: bool = True
    llm: LLMConfig = field(default_factory=LLMConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    instances: InstancesConfig = field(default_factory=InstancesConfig)

    @property
    def seed_path(self) -> Path:
        """The seed file to use: the one given, or the package's own (found from any directory)."""
        if self.seed_file:
            return Path(self.seed_file)
        from .tasks import packaged_seed_file

        return packaged_seed_file()

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {
    "llm": LLMConfig,
    "bootstrap": BootstrapConfig,
    "classify": ClassifyConfig,
    "instances": InstancesConfig,
}


DICT_SETTINGS = {"llm.prices"}  # settings whose value is itself a TOML table


def settings() -> dict[str, tuple[type, object]]:
    """Every setting as dotted name -> (type, default)."""
    out: dict[str, tuple[type, object]] = {}
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name in SECTIONS:
            sub = SECTIONS[f.name]
            sub_hints = typing.get_type_hints(sub)
            for g in dataclasses.fields(sub):
                default = g.default if g.default_factory is dataclasses.MISSING else g.default_factory()
                out[f"{f.name}.{g.name}"] = (sub_hints[g.name], default)
        else:
            out[f.name] = (hints[f.name], f.default)
    return out


def _coerce(name: str, typ: type, value, where: str):
    if typing.get_origin(typ) is dict:
        ok = isinstance(value, dict) and all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
            for v in value.values()
        )
        if not ok:
            raise UserError(f"{where}: setting '{name}' must map model names to [prompt, completion] prices")
        return {k: [float(x) for x in v] for k, v in value.items()}
    if typing.get_origin(typ) is list:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(v, str) for v in items):
            return list(items)
        raise UserError(f"{where}: setting '{name}' must be a string or a list of strings, got {value!r}")
    if isinstance(typ, types.UnionType):
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str and isinstance(value, str):
        return value
    raise UserError(f"{where}: setting '{name}' must be {typ.__name__}, got {value!r}")


def set_value(cfg: Config, name: str, value, where: str) -> None:
    known = settings()
    if name not in known:
        raise UserError(f"{where}: unknown setting '{name}'")
    typ, _ = known[name]
    value = _coerce(name, typ, value, where)
    target: object = cfg
    *parents, leaf = name.split(".")
    for p in parents:
        target = getattr(target, p)
    setattr(target, leaf, value)


def flatten(table: dict, prefix: str = "") -> dict[str, object]:
    """A TOML table as dotted setting names; an unknown section is an error."""
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in DICT_SETTINGS:
            if key not in SECTIONS:
                raise UserError(f"unknown section [{key}]")
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_toml(path: Path, what: str = "config file") -> dict:
    """A TOML file as a table; a missing file or bad TOML is a UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid TOML ({e})") from None


def load_config(path: str | Path | None = None, overrides: dict[str, object] | None = None) -> Config:
    """Defaults, then the TOML file, then overrides (CLI); validated."""
    cfg = Config()
    if path:
        path = Path(path)
        table = read_toml(path)
        try:
            flat = flatten(table)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        for name, value in flat.items():
            set_value(cfg, name, value, str(path))
    for name, value in (overrides or {}).items():
        set_value(cfg, name, value, "command line")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    def bad(name: str, why: str):
        raise UserError(f"setting '{name}' {why}")

    if cfg.target < 1:
        bad("target", "must be at least 1")
    if cfg.llm.backend not in ("auto", "local", "openai"):
        bad("llm.backend", "must be auto, local or openai")
    if cfg.llm.api not in ("auto", "completions", "chat"):
        bad("llm.api", "must be auto, completions or chat")
    if cfg.llm.structured not in ("auto", "on", "off"):
        bad("llm.structured", "must be auto, on or off")
    if cfg.llm.batch_api and cfg.llm.backend == "local":
        bad("llm.batch_api", "needs the openai backend")
    if cfg.llm.breaker_window < 0:
        bad("llm.breaker_window", "must be 0 (off) or more")
    if not 0.0 < cfg.llm.breaker_failure_rate <= 1.0:
        bad("llm.breaker_failure_rate", "must be above 0 and at most 1")
    if cfg.llm.concurrency < 1:
        bad("llm.concurrency", "must be at least 1")
    b = cfg.bootstrap
    if not 1 <= b.num_prompt_instructions <= 64:
        bad("bootstrap.num_prompt_instructions", "must be between 1 and 64")
    if not 0 <= b.num_machine_instructions <= b.num_prompt_instructions:
        bad("bootstrap.num_machine_instructions", "must be between 0 and num_prompt_instructions")
    if b.window < 1:
        bad("bootstrap.window", "must be at least 1")
    if not 0.0 <= b.similarity_threshold <= 1.0:
        bad("bootstrap.similarity_threshold", "must be between 0 and 1")
    if b.tokenizer not in ("rouge", "unicode"):
        bad("bootstrap.tokenizer", "must be rouge or unicode")
    if b.record_similar < 0:
        bad("bootstrap.record_similar", "must be 0 or more")
    if cfg.classify.method not in ("auto", "greedy", "calibrated"):
        bad("classify.method", "must be auto, greedy or calibrated")
    if not 2 <= cfg.classify.logprobs <= 20:
        bad("classify.logprobs", "must be between 2 and 20")
    if cfg.classify.max_attempts < 1:
        bad("classify.max_attempts", "must be at least 1")
    if cfg.instances.max_instances < 1:
        bad("instances.max_instances", "must be at least 1")
    if not cfg.run_name or "/" in cfg.run_name or cfg.run_name in (".", ".."):
        bad("run_name", "must be a plain directory name")
