"""Run configuration: defaults (the method's reference parameters), a TOML file, then CLI overrides.

Every setting has a dotted name (``bootstrap.temperature``), the same in the TOML file (as a table
key) and on the command line (``--bootstrap-temperature``). Unknown keys and wrong types are errors
that name the setting. The API key is never part of the config: it comes from OPENAI_API_KEY.
"""

from __future__ import annotations

import dataclasses
import math
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


@dataclass(frozen=True)
class Range:
    """Where a numeric setting's value may lie: ``low``/``high`` inclusive unless ``open_low`` /
    ``open_high``; None: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def allows(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.open_high else value > self.high))

    def describe(self) -> str:
        def num(x: float) -> str:
            return f"{x:g}"

        low = None if self.low is None else ("above " if self.open_low else "at least ") + num(self.low)
        high = None if self.high is None else ("below " if self.open_high else "at most ") + num(self.high)
        if low and high:
            return f"must be {low} and {high}"
        return f"must be {low or high or 'a number'}"


def at_least(low: float) -> Range:
    return Range(low)


def above(low: float) -> Range:
    return Range(low, open_low=True)


PROBABILITY = Range(0.0, 1.0, open_low=True)  # top_p: (0, 1]
TEMPERATURE = Range(0.0, 2.0)
PENALTY = Range(-2.0, 2.0)  # presence / frequency penalties, as the OpenAI API takes them
ANY = Range()  # a price: negative means "look the model up"

# The range of every numeric setting (a test checks that none is missing): a value outside is
# refused with exit status 2 before anything runs.
RANGES: dict[str, Range] = {
    "target": at_least(1),
    "seed": at_least(0),
    "llm.concurrency": at_least(1),
    "llm.timeout": above(0),
    "llm.max_retries": at_least(0),
    "llm.retry_initial": at_least(0),
    "llm.retry_max": at_least(0),
    "llm.n_ctx": at_least(1),
    "llm.rpm": at_least(0),
    "llm.tpm": at_least(0),
    "llm.price_prompt": ANY,
    "llm.price_completion": ANY,
    "llm.breaker_window": at_least(0),
    "llm.breaker_failure_rate": PROBABILITY,
    "llm.batch_poll_seconds": above(0),
    "bootstrap.num_prompt_instructions": Range(1, 64),
    "bootstrap.num_machine_instructions": at_least(0),  # and at most num_prompt_instructions
    "bootstrap.max_new_per_request": at_least(1),
    "bootstrap.window": at_least(1),
    "bootstrap.max_requests": at_least(0),
    "bootstrap.temperature": TEMPERATURE,
    "bootstrap.top_p": PROBABILITY,
    "bootstrap.presence_penalty": PENALTY,
    "bootstrap.frequency_penalty": PENALTY,
    "bootstrap.max_tokens": at_least(1),
    "bootstrap.similarity_threshold": Range(0.0, 1.0),
    "bootstrap.record_similar": at_least(0),
    "classify.max_tokens": at_least(1),
    "classify.chat_max_tokens": at_least(1),
    "classify.max_attempts": at_least(1),
    "classify.logprobs": Range(2, 20),
    "classify.temperature": TEMPERATURE,
    "instances.max_instances": at_least(1),
    "instances.max_tokens_input_first": at_least(1),
    "instances.max_tokens_output_first": at_least(1),
    "instances.temperature": TEMPERATURE,
    "instances.top_p": PROBABILITY,
    "instances.presence_penalty": PENALTY,
    "instances.frequency_penalty": PENALTY,
}

# Settings that take one of a few words.
CHOICES: dict[str, tuple[str, ...]] = {
    "llm.backend": ("auto", "local", "openai"),
    "llm.api": ("auto", "completions", "chat"),
    "llm.structured": ("auto", "on", "off"),
    "bootstrap.tokenizer": ("rouge", "unicode"),
    "classify.method": ("auto", "greedy", "calibrated"),
}

# A file or directory name: most file systems take at most 255 bytes.
MAX_NAME_BYTES = 255


def plain_name(name: str, setting: str) -> str:
    """The one check that a name from any source (--run-name, a TOML file, a batch plan) names a
    directory inside its output folder: one path component, not "." or "..", no separator, not
    absolute, and short enough for the file system. Returns the name; a UserError otherwise."""
    why = ""
    if not name or name in (".", ".."):
        why = "must be a plain directory name, not empty, '.' or '..'"
    elif "/" in name or "\\" in name or "\0" in name or Path(name).is_absolute():
        why = f"must be a plain directory name inside the output folder, without '/' ({name!r})"
    elif len(name.encode("utf-8")) > MAX_NAME_BYTES:
        why = f"is {len(name.encode('utf-8'))} bytes long; a directory name takes at most {MAX_NAME_BYTES}"
    if why:
        raise UserError(f"setting '{setting}' {why}")
    return name


def get_value(cfg: Config, name: str):
    """A setting's value by its dotted name."""
    target: object = cfg
    for part in name.split("."):
        target = getattr(target, part)
    return target


def validate(cfg: Config) -> None:
    """Every setting's range or choices, then the rules that tie two settings together."""

    def bad(name: str, why: str):
        raise UserError(f"setting '{name}' {why}")

    for name in settings():
        value = get_value(cfg, name)
        if name in CHOICES and value not in CHOICES[name]:
            bad(name, f"must be {', '.join(CHOICES[name][:-1])} or {CHOICES[name][-1]}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            bad(name, f"must be a finite number, got {value!r}")
        if name in RANGES and not RANGES[name].allows(value):
            bad(name, f"{RANGES[name].describe()}, got {value!r}")
    if cfg.llm.batch_api and cfg.llm.backend == "local":
        bad("llm.batch_api", "needs the openai backend")
    b = cfg.bootstrap
    if b.num_machine_instructions > b.num_prompt_instructions:
        bad("bootstrap.num_machine_instructions", "must be at most bootstrap.num_prompt_instructions")
    plain_name(cfg.run_name, "run_name")
