"""Run configuration: defaults (the method's reference parameters), a TOML file, then CLI overrides.

Every setting has a dotted name (``bootstrap.temperature``), the same in the TOML file (as a table
key) and on the command line (``--bootstrap-temperature``). Each is declared once, below, as a
pydantic field: its type (a ``Literal`` for one of a few words), default, help text (the ``--help``
line) and range. The CLI flags, the range table and the validation all come from these fields.
Unknown keys, wrong types and values out of range are one-line UserErrors that name the setting;
pydantic's own error text never reaches the user. The API key is never part of the config: it comes
from OPENAI_API_KEY.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from .errors import UserError

# Ranges that several settings share, as types.
Probability = Annotated[float, Field(gt=0, le=1)]  # top_p: (0, 1]
Temperature = Annotated[float, Field(ge=0, le=2)]
Penalty = Annotated[float, Field(ge=-2, le=2)]  # presence / frequency penalties, as the OpenAI API takes them
# A number without bounds, on purpose (a test checks that every other numeric setting has some).
AnyNumber = Annotated[float, Field(json_schema_extra={"range": "any"})]


class Section(BaseModel):
    """What every group of settings shares: strict types (a TOML ``9.0`` is no int, ``1`` no bool),
    no unknown keys, no nan or inf; text from the command line is read as the field's type first."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: from_text(fields[k].annotation, v) if k in fields else v for k, v in data.items()}


def from_text(typ: Any, value: Any) -> Any:
    """A value as the field's type when it came as text (flags, a batch plan) or an int where a float
    belongs; anything it cannot read is left for the type check to refuse with the value as given."""
    if typing.get_origin(typ) is list and isinstance(value, str):
        return [value]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return value
    if typ is bool and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if typ in (int, float):
        try:
            return typ(value)
        except ValueError:
            pass
    return value


def rule(message: str) -> PydanticCustomError:
    """A broken rule, raised inside a validator with the line the user sees (config_error passes it on)."""
    return PydanticCustomError("setting", "{message}", {"message": message})


class LLMConfig(Section):
    backend: Literal["auto", "local", "openai"] = Field(
        "auto",
        description="local: the embedded llama.cpp model; openai: any OpenAI-compatible server; auto: openai "
        "when a base URL (llm.base_url or OPENAI_BASE_URL) or a model name is set, else local",
    )
    model: str = Field("", description="model name for the openai backend (empty: gpt-4o-mini)")
    model_path: str = Field(
        "", description="GGUF file for the local backend (empty: the embedded SmolLM2-135M-Instruct)"
    )
    base_url: list[str] = Field(
        default_factory=list,
        description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1; several share the requests; "
        "empty: OPENAI_BASE_URL, else the OpenAI API",
    )
    api: Literal["auto", "completions", "chat"] = Field(
        "auto", description="auto: completions for the local backend, chat for the openai backend"
    )
    concurrency: int = Field(8, ge=1, description="requests in flight at once (the local backend serves one)")
    timeout: float = Field(120.0, gt=0, description="seconds one request may take")
    max_retries: int = Field(5, ge=0, description="retries of a failed request")
    retry_initial: float = Field(
        1.0, ge=0, description="first backoff in seconds when the server sends no Retry-After (doubles)"
    )
    retry_max: float = Field(30.0, ge=0, description="longest single wait in seconds, Retry-After included")
    n_ctx: int = Field(4096, ge=1, description="context window of the local backend")
    cache: bool = Field(
        True, description="replay identical requests from the SQLite response cache (--no-cache: always ask)"
    )
    cache_dir: str = Field(
        "", description="directory of the response cache; empty: the run directory (set one to share it)"
    )
    max_cost: float = Field(
        0.0,
        ge=0,
        description="USD the run may spend over all its sessions, counted from usage.jsonl (0: no limit; "
        "needs the model's price); the run stops before a request could pass it, with exit status 3",
    )
    max_tokens_total: int = Field(
        0, ge=0, description="prompt + completion tokens the run may spend in all its sessions (0: no limit)"
    )
    rpm: float = Field(0.0, ge=0, description="requests-per-minute limit (0: none)")
    tpm: float = Field(
        0.0,
        ge=0,
        description="tokens-per-minute limit over any 60 s, a request counted as prompt/4 + max_tokens "
        "(0: none)",
    )
    price_prompt: AnyNumber = Field(
        -1.0,
        description="USD per million prompt tokens for the cost estimate; negative: the model's price in the "
        "built-in table (self_instruct/llm/prices.py; unknown models cost nothing)",
    )
    price_completion: AnyNumber = Field(
        -1.0, description="USD per million completion tokens; negative: as for llm.price_prompt"
    )
    prices: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(
        default_factory=dict,
        description="your own price table, model name -> [prompt, completion] USD per million tokens; it "
        'extends and overrides the built-in one (TOML only: [llm.prices] "my-model" = [0.2, 0.6])',
    )
    batch_api: bool = Field(
        False,
        description="classify and instances through the OpenAI Batch API (half price, slow; openai backend)",
    )
    breaker_window: int = Field(20, ge=0, description="circuit breaker: attempts looked back on (0: off)")
    breaker_failure_rate: Probability = Field(
        0.9,
        description="circuit breaker: share of those attempts that must fail to stop the run",
    )
    structured: Literal["auto", "on", "off"] = Field(
        "auto",
        description="ask for JSON of each stage's schema (response_format; for the local backend a llama.cpp "
        "grammar); on: always (an endpoint that refuses it is an error); auto: off for the completions API, "
        "which continues the method's text; for chat, on for the local backend, and for an endpoint if a "
        "probe shows it follows a schema",
    )
    batch_poll_seconds: float = Field(
        30.0, gt=0, description="seconds between looks at an OpenAI Batch API job"
    )


class BootstrapConfig(Section):
    num_prompt_instructions: int = Field(8, ge=1, le=64, description="instructions shown in each prompt")
    num_machine_instructions: int = Field(
        2,
        ge=0,
        description="of those, machine-generated ones once the pool has that many "
        "(at most bootstrap.num_prompt_instructions)",
    )
    max_new_per_request: int = Field(
        7, ge=1, description="new instructions per response at most (the answer stops at the item after them)"
    )
    # Fixed (not the concurrency), so output is the same at any concurrency (README: fleets).
    window: int = Field(
        512,
        ge=1,
        description="requests in flight at most: request i's prompt sees the pool after requests "
        "0..i-window; fixed, so output is the same at any concurrency; about 8x llm.concurrency keeps a "
        "fleet with slow stragglers busy, a smaller one follows the growing pool more closely",
    )
    max_requests: int = Field(0, ge=0, description="give up after this many requests (0: 20 x target + 50)")
    temperature: Temperature = Field(0.7, description="sampling temperature")
    top_p: Probability = Field(0.5, description="nucleus sampling: top_p")
    presence_penalty: Penalty = Field(2.0, description="presence penalty")
    frequency_penalty: Penalty = Field(0.0, description="frequency penalty")
    max_tokens: int = Field(1024, ge=1, description="answer length")
    similarity_threshold: float = Field(
        0.7,
        ge=0,
        le=1,
        description="a new instruction is kept when its ROUGE-L F to every instruction in the pool is at "
        "most this",
    )
    tokenizer: Literal["rouge", "unicode"] = Field(
        "rouge",
        description="words for ROUGE-L: rouge (the reference: [a-z0-9] only) or unicode (any script; CJK per "
        "character)",
    )
    record_similar: int = Field(
        10, ge=0, description="each accepted instruction records this many most similar pool entries"
    )
    keep_truncated: bool = Field(
        True, description="keep the complete items of a response cut off by max_tokens"
    )


class ClassifyConfig(Section):
    max_tokens: int = Field(3, ge=1, description="answer length, completions API (the answer is one word)")
    chat_max_tokens: int = Field(
        16,
        ge=1,
        description="answer length, chat API and structured outputs (room for 'Yes, because ...'; "
        "the first word counts)",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="answers asked for per instruction when they are neither yes nor no (later ones sampled)",
    )
    method: Literal["auto", "greedy", "calibrated"] = Field(
        "auto",
        description="greedy: the reference rule (the answer's yes or no); calibrated: the first "
        "token's yes-no log-probability margin against a threshold fitted on the seed labels; auto: "
        "calibrated for the local backend (greedy if that is no better than chance on the seeds), greedy "
        "for endpoints",
    )
    logprobs: int = Field(
        20, ge=2, le=20, description="top alternatives asked for the first answer token (calibrated)"
    )
    temperature: Temperature = Field(0.0, description="sampling temperature")


class InstancesConfig(Section):
    max_instances: int = Field(5, ge=1, description="instances per task at most")
    max_tokens_input_first: int = Field(
        350, ge=1, description="answer length for input-first instances (the reference: 350)"
    )
    max_tokens_output_first: int = Field(
        300, ge=1, description="answer length for output-first instances (the reference: 300)"
    )
    temperature: Temperature = Field(0.0, description="sampling temperature")
    top_p: Probability = Field(1.0, description="nucleus sampling: top_p")
    presence_penalty: Penalty = Field(1.5, description="presence penalty")
    frequency_penalty: Penalty = Field(0.0, description="frequency penalty")


class RayConfig(Section):
    address: str = Field(
        "",
        description="with executor = ray: auto (the cluster this machine is part of), a cluster address "
        "(ray://host:10001), or empty to start a local Ray on this machine",
    )
    shards: int = Field(
        0, ge=0, description="novelty index shards, one Ray actor each (0: one per CPU of the cluster)"
    )
    max_shards: int = Field(64, ge=1, description="the most shards ray.shards = 0 makes")
    workers: int = Field(
        0,
        ge=0,
        description="Ray actors that send the model requests, each with its share of llm.concurrency, "
        "llm.rpm and llm.tpm (0: one per node of the cluster)",
    )


class QualityConfig(Section):
    decontaminate: list[str] = Field(
        default_factory=list,
        description="benchmark files (JSONL, JSON, CSV, Parquet, a saved dataset): an instruction, seed or "
        "instance that shares a word n-gram with one is rejected as contaminated",
    )
    fields: list[str] = Field(
        default_factory=list, description="only these fields of the benchmark files (empty: every string)"
    )
    ngram: int = Field(13, ge=1, description="words per n-gram for quality.decontaminate (GPT-3's rule: 13)")
    judge: Literal["off", "on"] = Field(
        "off",
        description="on: a model rates every instance A (valid and satisfying) to D (irrelevant or invalid), "
        "the Self-Instruct paper's scale, and the dataset keeps those at quality.min_rating or better",
    )
    judge_model: str = Field("", description="the judge's model (empty: the run's model)")
    judge_base_url: list[str] = Field(
        default_factory=list, description="the judge's endpoint (empty: the run's endpoint)"
    )
    min_rating: Literal["A", "B", "C", "D"] = Field("B", description="the lowest rating the dataset keeps")
    judge_max_attempts: int = Field(
        3, ge=1, description="answers asked for when one has no readable rating (later ones sampled)"
    )
    judge_max_tokens: int = Field(96, ge=1, description="tokens for the judge's answer")


class Config(Section):
    run_name: str = Field("run", description="run directory name inside output_dir")
    output_dir: str = Field("outputs", description="where run directories are created")
    seed_file: str = Field(
        "",
        description="seed tasks (JSONL: seed schema or flat instruction/input/output); empty: the 175 seed "
        "tasks that ship with the package",
    )
    target: int = Field(100, ge=1, description="machine-generated instructions to accept")
    seed: int = Field(42, ge=0, description="random seed (prompt sampling and model sampling)")
    progress: bool = Field(True, description="show progress bars")
    executor: Literal["local", "ray"] = Field(
        "local",
        description="local: this process; ray: the novelty index sharded across a Ray cluster and the model "
        "requests sent from Ray workers (the 'ray' extra; settings under ray.*), with the same files",
    )
    llm: LLMConfig = Field(default_factory=LLMConfig)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    instances: InstancesConfig = Field(default_factory=InstancesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)

    @field_validator("run_name")
    @classmethod
    def _plain_run_name(cls, name: str) -> str:
        try:
            return plain_name(name, "run_name")
        except UserError as e:
            raise rule(str(e)) from None

    @model_validator(mode="after")
    def _rules(self) -> Config:
        """The rules that tie two settings together."""
        if self.llm.batch_api and self.llm.backend == "local":
            raise rule("setting 'llm.batch_api' needs the openai backend")
        b = self.bootstrap
        if b.num_machine_instructions > b.num_prompt_instructions:
            raise rule(
                "setting 'bootstrap.num_machine_instructions' must be at most "
                "bootstrap.num_prompt_instructions"
            )
        return self

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
        """Every setting as nested plain values, in declaration order (the manifest records it, and a
        resumed run compares it: the order and the values' types must not change)."""
        return self.model_dump()


SECTIONS: dict[str, type[Section]] = {
    "llm": LLMConfig,
    "bootstrap": BootstrapConfig,
    "classify": ClassifyConfig,
    "instances": InstancesConfig,
    "ray": RayConfig,
    "quality": QualityConfig,
}


DICT_SETTINGS = {"llm.prices"}  # settings whose value is itself a TOML table


def fields() -> dict[str, FieldInfo]:
    """Every setting's declaration by dotted name, in declaration order."""
    out: dict[str, FieldInfo] = {}
    for name, info in Config.model_fields.items():
        if name in SECTIONS:
            out.update({f"{name}.{k}": v for k, v in SECTIONS[name].model_fields.items()})
        else:
            out[name] = info
    return out


def settings() -> dict[str, tuple[Any, object]]:
    """Every setting as dotted name -> (type, default)."""
    return {name: (f.annotation, f.get_default(call_default_factory=True)) for name, f in fields().items()}


def choices(name: str) -> tuple[str, ...]:
    """The words a setting takes (its Literal), or () for a setting that takes any value of its type."""
    typ = fields()[name].annotation
    return typing.get_args(typ) if typing.get_origin(typ) is Literal else ()


@dataclass(frozen=True)
class Range:
    """Where a numeric setting's value may lie: ``low``/``high`` inclusive unless ``open_low`` /
    ``open_high``; None: unbounded on that side. A view of a field's constraints, for the error line,
    ``--help`` and the tests; pydantic does the checking."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def describe(self) -> str:
        def num(x: float) -> str:
            return f"{x:g}"

        low = None if self.low is None else ("above " if self.open_low else "at least ") + num(self.low)
        high = None if self.high is None else ("below " if self.open_high else "at most ") + num(self.high)
        if low and high:
            return f"must be {low} and {high}"
        return f"must be {low or high or 'a number'}"


def field_range(info: FieldInfo) -> Range | None:
    """A field's range from its constraints (ge, gt, le, lt); None when it declares none."""
    r: dict[str, Any] = {}
    for c in info.metadata:
        if isinstance(c, annotated_types.Ge):
            r.update(low=c.ge, open_low=False)
        elif isinstance(c, annotated_types.Gt):
            r.update(low=c.gt, open_low=True)
        elif isinstance(c, annotated_types.Le):
            r.update(high=c.le, open_high=False)
        elif isinstance(c, annotated_types.Lt):
            r.update(high=c.lt, open_high=True)
    unbounded = isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("range") == "any"
    return Range(**r) if r or unbounded else None


def _ranges() -> dict[str, Range]:
    numeric = {name: info for name, info in fields().items() if info.annotation in (int, float)}
    return {name: r for name, info in numeric.items() if (r := field_range(info)) is not None}


# The range of every numeric setting, as its field declares it (a test checks that none is missing):
# a value outside is refused with exit status 2 before anything runs.
RANGES: dict[str, Range] = _ranges()


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


def nest(flat: dict[str, object]) -> dict[str, Any]:
    """Dotted setting names as the nested table the models take."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        section, _, leaf = name.rpartition(".")
        (out.setdefault(section, {}) if section else out)[leaf] = value
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
    given: dict[str, object] = {}
    where: dict[str, str] = {}  # where each setting's value came from, for the error line
    sources: list[tuple[str, dict]] = []
    if path:
        path = Path(path)
        table = read_toml(path)
        try:
            sources.append((str(path), flatten(table)))
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
    sources.append(("command line", dict(overrides or {})))
    known = fields()
    for source, flat in sources:
        for name, value in flat.items():
            if name not in known:
                raise UserError(f"{source}: unknown setting '{name}'")
            given[name], where[name] = value, source
    try:
        return Config.model_validate(nest(given))
    except ValidationError as e:
        raise config_error(e.errors()[0], given, where) from None


RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def config_error(error: Any, given: dict[str, object], where: dict[str, str]) -> UserError:
    """Pydantic's first complaint as the one line the user sees: a wrong type names where the value
    came from (file or command line); a value out of range or choices gives the whole range or the
    choices; a rule says what it wants."""
    if error["type"] == "setting":
        return UserError(error["ctx"]["message"])
    loc = error["loc"]
    name = f"{loc[0]}.{loc[1]}" if loc[0] in SECTIONS else str(loc[0])
    info, value, source = fields()[name], error["input"], where.get(name, "default")
    if name in DICT_SETTINGS:
        return UserError(f"{source}: setting '{name}' must map model names to [prompt, completion] prices")
    if typing.get_origin(info.annotation) is list:
        return UserError(
            f"{source}: setting '{name}' must be a string or a list of strings, got {given.get(name)!r}"
        )
    words = choices(name)
    if words and isinstance(value, str):
        return UserError(f"setting '{name}' must be {', '.join(words[:-1])} or {words[-1]}, got {value!r}")
    if error["type"] == "finite_number":
        return UserError(f"setting '{name}' must be a finite number, got {value!r}")
    if error["type"] in RANGE_ERRORS:
        return UserError(f"setting '{name}' {(field_range(info) or Range()).describe()}, got {value!r}")
    kind = "str" if words else getattr(info.annotation, "__name__", "")
    return UserError(f"{source}: setting '{name}' must be {kind}, got {value!r}")


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
