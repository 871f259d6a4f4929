"""Benchmark decontamination: does a text repeat an evaluation set's text?

The rule is word n-gram overlap, as in the GPT-3 paper's contamination study (13-grams):

- text is normalised: lower-cased, every run of characters that are not letters or digits (of any
  script) folded into one space, then split into words;
- a text shares an n-gram with a benchmark when the same n consecutive words occur in both;
- a text shorter than n words matches on its whole normalised form: it is contaminated when a
  benchmark text is exactly those words, and a benchmark text shorter than n words is found the same
  way. Below ``MIN_WHOLE_WORDS`` words whole forms are not compared: answers such as "Positive" or
  "Paris" are in every benchmark and in every honest dataset alike.

Speed: texts are cut into words a batch at a time, without a Python step per word. The batch is
joined into one string; ASCII text goes through a byte table that lower-cases letters and turns
every byte but letters and digits into a space (other text is first normalised by ``words``); numpy
finds where the words begin and end, and reads each word's 64-bit id from its bytes (a word of up to
8 bytes is its bytes, a longer one folds in 8 more at a time). Every n-word window's hash is a
polynomial in its words' ids modulo 2**64. The index is the sorted array of the benchmark's n-gram
hashes (and one of its short texts' whole forms), behind two bitmaps: the benchmark's vocabulary (a
window holding a word the benchmark never uses cannot match and is not hashed) and its n-gram hashes
(so that few windows reach ``searchsorted``). A hash hit is confirmed word for word against the
benchmark's own words (its folded bytes are kept) before it is reported, so a collision never
rejects anything. ``check`` cuts a quarter of a megabyte of text at a time, so that its arrays stay in
the CPU's caches.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

_WORD = re.compile(r"[^\W_]+")
MIN_WHOLE_WORDS = 4


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


# -- cutting texts into words, in numpy -----------------------------------------------------------


_SEPARATOR = " \x00 "  # between texts cut together: a word of its own, the only one holding a zero byte
_PAD = " " * 7  # after the last word, so that 8 bytes can be read from the start of every word
# Bytes: capitals to lower case; ASCII letters and digits, the separator's zero byte and every byte of a
# multi-byte UTF-8 character kept; every other byte (ASCII spaces, punctuation, controls) a space.
_FOLD = bytes(
    c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 or 48 <= c <= 57 or c == 0 or c >= 128 else 32
    for c in range(256)
)
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)  # the first k bytes
_CHUNK = 1 << 18  # characters of text cut at once by check(): its arrays stay in the CPU's caches
_P = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hashes' base
_MIX = np.uint64(0xBF58476D1CE4E5B9)  # odd: a word's bytes to its id


@dataclass
class _Words:
    """Texts cut into words all at once: one byte buffer in which words are runs of bytes other than
    spaces, each word's place in it and 64-bit id, and the separator words between the texts."""

    buf: bytes  # the texts' folded bytes, joined by the separator word
    start: np.ndarray  # each word's first byte in buf
    end: np.ndarray  # and the byte after its last
    ids: np.ndarray  # each word's id (uint64): its bytes, mixed; equal words have equal ids
    sep: np.ndarray  # the separators' word numbers: text k's words lie between sep[k] and sep[k + 1]

    def words(self, first: int, count: int) -> list[bytes]:
        """The normalised words first .. first + count - 1 (UTF-8)."""
        ends = self.end[first : first + count].tolist()
        return [self.buf[s:e] for s, e in zip(self.start[first : first + count].tolist(), ends, strict=True)]

    def text_of(self, word: np.ndarray | int) -> Any:
        """The number of the text a word (or each of an array of words) lies in."""
        return np.searchsorted(self.sep, word) - 1


def _fold(texts: list[str]) -> bytes:
    """The texts' normalised words as bytes, the texts joined by the separator word. ASCII text is
    normalised by the byte table alone (its letters and digits are [A-Za-z0-9], what ``words`` finds
    in it); other characters are first lower-cased, or made spaces, by ``_fold_other``, and their
    UTF-8 bytes then pass the table unchanged."""
    joined = _SEPARATOR.join(["", *texts, _PAD])
    if not joined.isascii():
        other = _fold_other(joined)
        if other is None:  # only the regular expression will do: for the texts that need it
            other = _SEPARATOR.join(["", *(t if t.isascii() else " ".join(words(t)) for t in texts), _PAD])
        joined = other
    buf = joined.encode().translate(_FOLD)
    if np.count_nonzero(np.frombuffer(buf, dtype=np.uint8) == 0) != len(texts) + 1:
        # A text holds a zero byte itself (never a letter, so a space like any other).
        return _fold([t.replace("\x00", " ") for t in texts])
    return buf


def _fold_other(text: str) -> str | None:
    """The text with every character outside ASCII lower-cased, or made a space where (lower-cased)
    it is not a letter or digit, by a table of the text's distinct such characters applied with
    numpy to its code points. None where one lower-cases to several characters (İ) or by its place
    (Σ: σ, or ς at a word's end): ``words`` must cut such text."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    other = np.flatnonzero(codes >= 128)
    distinct = np.unique(codes[other])
    chars = [chr(c) for c in distinct.tolist()]
    lowered = [c.lower() for c in chars]
    if "\u03a3" in chars or any(len(c) != 1 for c in lowered):
        return None
    table = np.array([ord(c) if _WORD.fullmatch(c) else 32 for c in lowered], dtype="<u4")
    codes = codes.copy()
    codes[other] = table[np.searchsorted(distinct, codes[other])]
    return codes.tobytes().decode("utf-32-le", "surrogatepass")


def _tokenise(texts: list[str]) -> _Words:
    """The texts' words, without a Python step per word: numpy finds where the words begin and end
    in the folded bytes, and reads each word's id from its bytes. A word of up to 8 bytes is its bytes
    themselves, the rest of the 8 masked to zero (no word holds a zero byte, so no two such words
    meet); a longer one folds in 8 bytes more at a time (a hash from there on: equal ids are confirmed
    word for word like equal hashes). The 64 bits are then mixed, so that the top bits (which the
    filters use) depend on every byte."""
    buf = _fold(texts)
    b = np.frombuffer(buf, dtype=np.uint8)
    space = b == 32
    edges = np.flatnonzero(space[1:] != space[:-1]) + 1  # buf begins and ends with a space
    start, end = edges[0::2], edges[1::2]
    length = end - start
    # The 8 bytes from every offset, as one little-endian integer (a view: nothing is copied).
    eight = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    key = eight[start] & _LOW_BYTES[np.minimum(length, 8)]
    longer, k = np.flatnonzero(length > 8), 8
    while len(longer):
        more = eight[start[longer] + k] & _LOW_BYTES[np.minimum(length[longer] - k, 8)]
        key[longer] = key[longer] * _P + more
        k += 8
        longer = longer[length[longer] > k]
    ids = key * _MIX
    ids ^= ids >> np.uint64(32)
    return _Words(buf, start, end, ids, np.flatnonzero(b[start] == 0))


def _span_hashes(ids: np.ndarray, first: np.ndarray, length: int | np.ndarray) -> np.ndarray:
    """The hash of each span of words ids[first : first + length], for many spans at once: a
    polynomial in P modulo 2**64 over the span's length and its words' ids (Horner's rule, one word
    of every span a step). A window of n words and a whole text of n words hash alike."""
    if isinstance(length, int):  # windows: every span the same length
        h = np.full(len(first), length, dtype=np.uint64)
        for j in range(length):
            h *= _P
            h += ids[first + j]
        return h
    h = length.astype(np.uint64)
    for j in range(int(length.max(initial=0))):
        live = np.flatnonzero(length > j)
        h[live] = h[live] * _P + ids[first[live] + j]
    return h


def _window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """``_span_hashes(ids, np.arange(len(ids) - n + 1), n)``: every window's, from slices."""
    count = max(len(ids) - n + 1, 0)
    h = np.full(count, n, dtype=np.uint64)
    for j in range(n if count else 0):
        h *= _P
        h += ids[j : j + count]
    return h


def _sorted(hashes: np.ndarray) -> np.ndarray:
    """The order that sorts the hashes, equal hashes in their first order (a stable sort's result, but
    the quicker sort's cost: only the runs of equal hashes, few, are sorted again by place)."""
    order = np.argsort(hashes)
    h = hashes[order]
    tie = np.flatnonzero(h[1:] == h[:-1])
    if len(tie):
        runs = np.union1d(tie, tie + 1)
        order[runs] = order[runs][np.lexsort((order[runs], h[runs]))]
    return order


class _Filter:
    """A set of 64-bit hashes as a bitmap of their top bits: no false negatives, and a false positive
    rate of at most 1/``spread`` (the bitmap has at least ``spread`` bits per hash)."""

    def __init__(self, hashes: np.ndarray, spread: int) -> None:
        self.bits = max(10, int(len(hashes) * spread - 1).bit_length())
        self.shift = np.uint64(64 - self.bits)
        slot = (hashes >> self.shift).view(np.int64)
        self.table = np.zeros(1 << (self.bits - 3), dtype=np.uint8)
        np.bitwise_or.at(self.table, slot >> 3, (1 << (slot & 7)).astype(np.uint8))

    def holds(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash, whether it may be in the set."""
        slot = (hashes >> self.shift).view(np.int64)
        return ((self.table[slot >> 3] >> (slot & 7)) & 1).astype(bool)


def _compact(a: np.ndarray) -> np.ndarray:
    """Word and byte numbers in 32 bits where they fit."""
    return a.astype(np.int32) if len(a) == 0 or int(a.max()) < 2**31 else a


# -- the index ---------------------------------------------------------------------------------


class BenchmarkIndex:
    """The n-grams (and short whole texts) of benchmark files, for looking texts up in batches."""

    def __init__(self, texts: Iterable[tuple[Where, str]], n: int = 13) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n
        self.where: list[Where] = []
        bodies: list[str] = []
        for where, text in texts:
            self.where.append(where)
            bodies.append(text)
        w = _tokenise(bodies)
        ids = w.ids
        separator = np.zeros(len(ids) + 1, dtype=np.int64)
        separator[w.sep + 1] = 1
        separator = np.cumsum(separator)  # separators before each word
        # The n-grams: every window of n words inside one text, sorted by hash; equal hashes keep
        # the stream's order, so the earliest occurrence of an n-gram comes first.
        at = np.flatnonzero(separator[n:] == separator[:-n])
        hashes = _window_hashes(ids, n)[at]
        order = _sorted(hashes)
        self.hashes = hashes[order]
        self._at = _compact(at[order])  # each n-gram's first word
        self.ngrams = len(self.hashes)
        # Short texts, by the hash of their whole form; a form met again is kept once, with its first text.
        first = w.sep[:-1] + 1
        length = w.sep[1:] - first
        short = np.flatnonzero((length >= MIN_WHOLE_WORDS) & (length < n))
        whole = _span_hashes(ids, first[short], length[short])
        order = _sorted(whole)
        whole, short = whole[order], short[order]
        kept = np.ones(len(short), dtype=bool)
        form = lambda i: tuple(w.words(int(first[short[i]]), int(length[short[i]])))  # noqa: E731
        seen: dict[
            int, set[tuple[bytes, ...]]
        ] = {}  # per hash met again: the forms kept (collisions aside, one)
        for i in (np.flatnonzero(whole[1:] == whole[:-1]) + 1).tolist():
            forms = seen.setdefault(int(whole[i]), {form(i - 1)})  # the first of a run is kept
            f = form(i)
            if f in forms:
                kept[i] = False
            else:
                forms.add(f)
        self.whole = whole[kept]  # (their number is the number of distinct short forms)
        self._whole_text = _compact(short[kept])
        # The vocabulary, as a filter: a window holding a word no benchmark text uses cannot match.
        vocab = np.sort(np.delete(ids, w.sep))
        distinct = np.ones(len(vocab), dtype=bool)
        distinct[1:] = vocab[1:] != vocab[:-1]
        self._vocab = _Filter(vocab[distinct], 32)
        self._ngram_filter = _Filter(self.hashes, 16)
        # What confirming a hit word for word needs: the benchmark's folded bytes and its words' places
        # (not their ids: the hashes and filters hold all that lookups need of those).
        self._words = _Words(w.buf, _compact(w.start), _compact(w.end), np.zeros(0, dtype=np.uint64), w.sep)

    def __len__(self) -> int:
        return self.ngrams

    def memory_bytes(self) -> int:
        """What the index's arrays and the benchmark's folded bytes hold (the sources besides)."""
        w = self._words
        arrays = (self.hashes, self._at, self.whole, self._whole_text, w.start, w.end, w.sep)
        filters = self._vocab.table.nbytes + self._ngram_filter.table.nbytes
        return int(sum(a.nbytes for a in arrays) + filters + len(w.buf))

    def check(self, texts: list[str]) -> list[Hit | None]:
        """For each text, its first n-gram (in reading order) found in a benchmark, or, for a text
        shorter than n words, its whole form when a benchmark text is exactly that; None if clean."""
        out: list[Hit | None] = [None] * len(texts)
        if not texts:
            return out
        # About _CHUNK characters at a time: the next chunk's number of texts from the last one's size.
        a, count = 0, 256
        while a < len(texts):
            b = min(a + count, len(texts))
            size = self._check(texts[a:b], out, a)
            count = max(1, min(4 * count, count * _CHUNK // max(size, 1)))
            a = b
        return out

    def _check(self, texts: list[str], out: list[Hit | None], offset: int) -> int:
        """check() for a chunk of texts, their hits written to out[offset:]; returns the size of
        the chunk's folded bytes."""
        w = _tokenise(texts)
        n = self.n
        unknown = ~self._vocab.holds(w.ids)
        unknown[w.sep] = True  # so that no window reaches over two texts
        unknowns = np.concatenate(([0], np.cumsum(unknown, dtype=np.int64)))  # before each word
        if len(self.whole):
            first = w.sep[:-1] + 1
            length = w.sep[1:] - first
            short = np.flatnonzero(
                (length >= MIN_WHOLE_WORDS) & (length < n) & (unknowns[first + length] == unknowns[first])
            )
            hashes = _span_hashes(w.ids, first[short], length[short])
            slot = np.minimum(np.searchsorted(self.whole, hashes), len(self.whole) - 1)
            for f in np.flatnonzero(self.whole[slot] == hashes).tolist():
                k = int(short[f])
                form = w.words(int(first[k]), int(length[k]))
                s = int(slot[f])
                while s < len(self.whole) and self.whole[s] == hashes[f]:  # confirmed word for word
                    t = int(self._whole_text[s])
                    b = int(self._words.sep[t]) + 1
                    if self._words.words(b, int(self._words.sep[t + 1]) - b) == form:
                        out[offset + k] = Hit(self.where[t], b" ".join(form).decode())
                        break
                    s += 1
        if not self.ngrams:
            return len(w.buf)
        at = np.flatnonzero(unknowns[n:] == unknowns[:-n])  # windows of known words inside one text
        hashes = _span_hashes(w.ids, at, n)
        maybe = np.flatnonzero(self._ngram_filter.holds(hashes))
        at, hashes = at[maybe], hashes[maybe]
        slot = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        found = np.flatnonzero(self.hashes[slot] == hashes)
        text = w.text_of(at[found])
        # In reading order (text, then place): a text's first confirmed hit wins.
        for f, k in zip(found.tolist(), text.tolist(), strict=True):
            if out[offset + k] is not None:
                continue
            gram = w.words(int(at[f]), n)
            # Confirmed word for word among the benchmark windows with this hash (collisions are rare).
            s = int(slot[f])
            while s < len(self.hashes) and self.hashes[s] == hashes[f]:
                b = int(self._at[s])
                if self._words.words(b, n) == gram:
                    source = int(self._words.text_of(b))
                    out[offset + k] = Hit(self.where[source], b" ".join(gram).decode())
                    break
                s += 1
        return len(w.buf)


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
