"""Benchmark decontamination: does a text repeat an evaluation set's text?

The rule is word n-gram overlap, as in the GPT-3 paper's contamination study (13-grams):

- text is normalised: lower-cased, every run of characters that are not letters or digits (of any
  script) folded into one space, then split into words;
- a text shares an n-gram with a benchmark when the same n consecutive words occur in both;
- a text shorter than n words matches on its whole normalised form: it is contaminated when a
  benchmark text is exactly those words, and a benchmark text shorter than n words is found the same
  way. Below ``MIN_WHOLE_WORDS`` words whole forms are not compared: answers such as "Positive" or
  "Paris" are in every benchmark and in every honest dataset alike.

Speed: the benchmark's words get integer ids, and every n-gram a 64-bit polynomial hash, computed for
a whole batch of texts at once with numpy (prefix sums modulo 2**64). The index is the sorted array of
the benchmark's hashes; a batch of texts is looked up with one ``searchsorted``. A hash hit is
confirmed word for word against the benchmark before it is reported, so a collision never rejects
anything. A window holding a word the benchmark never uses cannot match and is skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from ..errors import UserError

_WORD = re.compile(r"[^\W_]+")
MIN_WHOLE_WORDS = 4
_P = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible modulo 2**64
_UNKNOWN = 0  # the id of a word no benchmark text uses
_SEPARATOR = 1 << 63  # the id of the separator between texts tokenised together
_WORD_OR_SEPARATOR = re.compile(r"[^\W_]+|\x00")
# ASCII text: capitals to lower case, letters, digits and the separator kept, every other byte a space.
_ASCII_FOLD = bytes(
    c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 or 48 <= c <= 57 or c == 0 else 32 for c in range(256)
)


def words(text: str) -> list[str]:
    """The normalised words of a text."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Where:
    """Where a benchmark text lies: its file, its line (JSONL, CSV) or row (JSON, Parquet, a saved
    dataset), and the field it came from."""

    file: str
    line: int
    field: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ({self.field})"


@dataclass(frozen=True)
class Hit:
    """A text's first n-gram (or whole form) found in a benchmark, and where."""

    where: Where
    ngram: str

    def details(self) -> dict:
        """What a rejection record says of it."""
        w = self.where
        return {"benchmark": {"file": w.file, "line": w.line, "field": w.field}, "ngram": self.ngram}


# -- reading benchmark files -------------------------------------------------------------------


def _strings(value: object, path: str, fields: frozenset[str]) -> Iterator[tuple[str, str]]:
    """(field, text) of every string in a record, nested values included (the field as a dotted
    path); only fields named in ``fields`` (by their path or their last key) when it is given."""
    if isinstance(value, str):
        name = path or "text"
        if not fields or name in fields or name.rsplit(".", 1)[-1] in fields:
            yield name, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k), fields)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, path, fields)


def _records(path: Path) -> Iterator[tuple[int, object]]:
    """(line or row number, record) of a benchmark file in any of the accepted formats."""
    name = path.name.lower()
    if path.is_dir():
        yield from _saved_dataset(path)
    elif name.endswith(".jsonl"):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}:{number}: invalid JSON ({e.msg})") from None
    elif name.endswith(".json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        rows = data if isinstance(data, list) else [data]
        yield from enumerate(rows, 1)
    elif name.endswith(".csv"):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield reader.line_num, row
    elif name.endswith(".parquet"):
        yield from _parquet(path)
    else:
        raise UserError(
            f"{path}: not a benchmark file this reads (JSONL, JSON, CSV, Parquet, or a directory saved "
            "by datasets)"
        )


def _parquet(path: Path) -> Iterator[tuple[int, object]]:
    from ..errors import require_extra

    require_extra("hf", ("pyarrow",), f"reading the Parquet file {path}")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # not Parquet, or broken: the library's message, on one line
        raise UserError(f"{path}: cannot read it as Parquet ({e.__class__.__name__}: {e})") from None
    yield from enumerate(table.to_pylist(), 1)


def _saved_dataset(path: Path) -> Iterator[tuple[int, object]]:
    from ..errors import require_extra

    require_extra("hf", ("datasets",), f"reading the saved dataset {path}")
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as e:
        raise UserError(f"{path}: cannot load the saved dataset ({e.__class__.__name__}: {e})") from None
    splits = [data[name] for name in data] if isinstance(data, datasets.DatasetDict) else [data]
    number = 0
    for split in splits:
        for row in split:
            number += 1
            yield number, row


def benchmark_texts(paths: Iterable[str | Path], fields: Iterable[str] = ()) -> Iterator[tuple[Where, str]]:
    """Every string of every record of the benchmark files (only the named fields, if any)."""
    wanted = frozenset(fields)
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UserError(f"{path}: no such benchmark file")
        for number, record in _records(path):
            for field, text in _strings(record, "", wanted):
                yield Where(str(path), number, field), text


def benchmark_sha256(paths: Iterable[str | Path]) -> list[str]:
    """Each benchmark's content hash, for the run's provenance (a directory: its files, by name)."""
    import hashlib

    out = []
    for p in paths:
        path, digest = Path(p), hashlib.sha256()
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            digest.update(str(f.relative_to(path)).encode() if path.is_dir() else b"")
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        out.append(digest.hexdigest())
    return out


# -- hashing -----------------------------------------------------------------------------------


def _powers(length: int) -> np.ndarray:
    """P**0 .. P**(length-1) modulo 2**64."""
    out = np.full(max(length, 1), _P, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


def _inverse(x: int) -> int:
    """x**-1 modulo 2**64 (x odd)."""
    return pow(x, -1, 1 << 64)


class _Stream:
    """Texts as one array of word ids with each text's start, for hashing many at once."""

    def __init__(self, ids: list[np.ndarray] | np.ndarray, lengths: np.ndarray | None = None) -> None:
        """Texts as a list of id arrays, or as one array of ids with each text's length."""
        if lengths is None:
            lengths = np.array([len(a) for a in ids], dtype=np.int64)
            ids = np.concatenate(ids) if len(ids) else np.zeros(0, dtype=np.uint64)
        self.lengths = lengths
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)))[:-1]
        self.ids = np.asarray(ids).astype(np.uint64)

    def windows(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash, text number, start position) of every n-word window that lies inside one text
        and holds no unknown word."""
        total = len(self.ids)
        if total < n:
            empty = np.zeros(0, dtype=np.int64)
            return np.zeros(0, dtype=np.uint64), empty, empty
        powers = _powers(total + 1)
        with np.errstate(over="ignore"):
            prefix = np.concatenate(([np.uint64(0)], np.cumsum(self.ids * powers[:total], dtype=np.uint64)))
            starts = np.arange(total - n + 1)
            raw = prefix[starts + n] - prefix[starts]
            inverse_powers = _powers_of(_inverse(int(_P)), total - n + 1)
            hashes = raw * inverse_powers  # every window as if it began at position 0
        text = np.repeat(np.arange(len(self.lengths)), self.lengths)
        unknown = np.concatenate(([0], np.cumsum(self.ids == _UNKNOWN)))
        valid = (text[starts] == text[starts + n - 1]) & (unknown[starts + n] == unknown[starts])
        return hashes[valid], text[starts[valid]], starts[valid]


def _powers_of(x: int, length: int) -> np.ndarray:
    out = np.full(max(length, 1), np.uint64(x), dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=np.uint64)[:length]


# -- the index ---------------------------------------------------------------------------------


class BenchmarkIndex:
    """The n-grams (and short whole texts) of benchmark files, for looking texts up in batches."""

    def __init__(self, texts: Iterable[tuple[Where, str]], n: int = 13) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n
        self._ascii_vocab: dict[bytes, int] | None = None  # the vocabulary's ASCII words, as bytes
        self.vocab: dict[str, int] = {}
        self.where: list[Where] = []
        long_ids: list[np.ndarray] = []
        long_where: list[int] = []
        self.whole: dict[tuple[int, ...], int] = {}  # short texts: their word ids -> their source
        for where, text in texts:
            ws = words(text)
            if not ws:
                continue
            ids = [self.vocab.setdefault(w, len(self.vocab) + 1) for w in ws]
            self.where.append(where)
            if len(ids) >= n:
                long_ids.append(np.array(ids, dtype=np.uint64))
                long_where.append(len(self.where) - 1)
            elif len(ids) >= MIN_WHOLE_WORDS:
                self.whole.setdefault(tuple(ids), len(self.where) - 1)
        stream = _Stream(long_ids)
        hashes, text_of, start = stream.windows(n)
        order = np.argsort(hashes, kind="stable")  # equal hashes: the earliest occurrence first
        self.hashes = hashes[order]
        self._source = np.asarray(long_where, dtype=np.int64)[text_of[order]] if len(order) else text_of
        self._start = start[order]
        self._ids = stream.ids
        self.ngrams = len(self.hashes)

    def __len__(self) -> int:
        return self.ngrams

    def memory_bytes(self) -> int:
        """What the index's arrays hold (the vocabulary and sources besides)."""
        return int(self.hashes.nbytes + self._source.nbytes + self._start.nbytes + self._ids.nbytes)

    def _stream(self, texts: list[str]) -> _Stream:
        """The texts' word ids, tokenised all at once: one regular-expression pass over the texts
        joined by a separator no word holds, and one C-level map through the vocabulary."""
        if any("\x00" in t for t in texts):  # the separator itself: text by text
            each = [[self.vocab.get(w, _UNKNOWN) for w in words(t)] for t in texts]
            return _Stream([np.array(a, dtype=np.uint64) for a in each])
        joined = " \x00 ".join(texts)
        if joined.isascii():  # letters and digits are [A-Za-z0-9]: a byte table does the regex's work
            if self._ascii_vocab is None:
                self._ascii_vocab = {w.encode(): i for w, i in self.vocab.items() if w.isascii()}
                self._ascii_vocab[b"\x00"] = _SEPARATOR
            tokens: list = joined.encode().translate(_ASCII_FOLD).split()
            lookup: Callable[..., int] = self._ascii_vocab.get
        else:
            tokens = _WORD_OR_SEPARATOR.findall(joined.lower())
            lookup = {**self.vocab, "\x00": _SEPARATOR}.get
        ids = np.fromiter(map(lookup, tokens, repeat(_UNKNOWN)), dtype=np.uint64, count=len(tokens))
        separator = ids == np.uint64(_SEPARATOR)
        text_of = np.cumsum(separator)[~separator]
        return _Stream(ids[~separator], np.bincount(text_of, minlength=len(texts)).astype(np.int64))

    def check(self, texts: list[str]) -> list[Hit | None]:
        """For each text, its first n-gram (in reading order) found in a benchmark, or, for a text
        shorter than n words, its whole form when a benchmark text is exactly that; None if clean."""
        out: list[Hit | None] = [None] * len(texts)
        if not texts:
            return out
        stream = self._stream(texts)
        if self.whole:
            short = np.flatnonzero((stream.lengths >= MIN_WHOLE_WORDS) & (stream.lengths < self.n))
            for k in short.tolist():
                a = int(stream.starts[k])
                source = self.whole.get(tuple(stream.ids[a : a + stream.lengths[k]].tolist()))
                if source is not None:
                    out[k] = Hit(self.where[source], " ".join(words(texts[k])))
        if not self.ngrams:
            return out
        hashes, text, start = stream.windows(self.n)
        if not len(hashes):
            return out
        slot = np.searchsorted(self.hashes, hashes)
        slot[slot == len(self.hashes)] = 0
        found = np.flatnonzero(self.hashes[slot] == hashes)
        n = self.n
        for f in found.tolist():  # in order of text, then position: the first hit of each text wins
            k = int(text[f])
            if out[k] is not None:
                continue
            window = stream.ids[start[f] : start[f] + n]
            # Confirm word for word among the benchmark windows with this hash (collisions are rare).
            s = int(slot[f])
            while s < len(self.hashes) and self.hashes[s] == hashes[f]:
                b = int(self._start[s])
                if np.array_equal(self._ids[b : b + n], window):
                    offset = int(start[f] - stream.starts[k])
                    out[k] = Hit(
                        self.where[int(self._source[s])], " ".join(words(texts[k])[offset : offset + n])
                    )
                    break
                s += 1
        return out


def baseline_check(texts: Iterable[tuple[Where, str]], n: int, queries: list[str]) -> list[Hit | None]:
    """The plain way, for bench/decontaminate.py: a Python set of n-gram tuples (first source
    kept in a dict), each query's n-grams looked up one by one."""
    grams: dict[tuple[str, ...], Where] = {}
    whole: dict[tuple[str, ...], Where] = {}
    for where, text in texts:
        ws = words(text)
        if len(ws) >= n:
            for i in range(len(ws) - n + 1):
                grams.setdefault(tuple(ws[i : i + n]), where)
        elif len(ws) >= MIN_WHOLE_WORDS:
            whole.setdefault(tuple(ws), where)
    out: list[Hit | None] = []
    for q in queries:
        ws = words(q)
        hit = None
        if MIN_WHOLE_WORDS <= len(ws) < n and tuple(ws) in whole:
            hit = Hit(whole[tuple(ws)], " ".join(ws))
        for i in range(len(ws) - n + 1):
            if hit is not None:
                break
            gram = tuple(ws[i : i + n])
            if gram in grams:
                hit = Hit(grams[gram], " ".join(gram))
        out.append(hit)
    return out


# -- checking existing data --------------------------------------------------------------------

DATA_FIELDS = ("instruction", "input", "output")


def _data_texts(record: object) -> list[tuple[str, str]]:
    """The texts of a data record to check: its instruction, input and output when it has them
    (the task schema's instances included), else every string in it."""
    if isinstance(record, dict):
        found = [(f, record[f]) for f in DATA_FIELDS if isinstance(record.get(f), str)]
        for k, inst in enumerate(record.get("instances") or []):
            if isinstance(inst, dict):
                found += [
                    (f"instances.{k}.{f}", inst[f])
                    for f in ("input", "output")
                    if isinstance(inst.get(f), str)
                ]
        if found:
            return found
    return list(_strings(record, "", frozenset()))


def data_file(path: Path) -> Path:
    """The file to read for a path given to ``decontaminate``: a run directory's dataset.jsonl."""
    if path.is_dir() and (path / "dataset.jsonl").is_file():
        return path / "dataset.jsonl"
    return path


def check_data(
    paths: list[str], index: BenchmarkIndex
) -> Iterator[tuple[Path, list[tuple[int, object]], list[dict]]]:
    """For each input: its file, its records (line, record), and a hit record for each
    contaminated field (file, line, field, the benchmark's file, line and field, the n-gram)."""
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UserError(f"{path}: no such file or run directory")
        source = data_file(path)
        records = list(_records(source))
        fields = [(line, name, text) for line, record in records for name, text in _data_texts(record)]
        hits = index.check([text for _, _, text in fields])
        found = [
            {
                "file": str(source),
                "line": line,
                "field": name,
                "benchmark": hit.where.file,
                "benchmark_line": hit.where.line,
                "benchmark_field": hit.where.field,
                "ngram": hit.ngram,
            }
            for (line, name, _), hit in zip(fields, hits, strict=True)
            if hit is not None
        ]
        yield source, records, found
