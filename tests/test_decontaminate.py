"""Decontamination: the n-gram index finds exactly what a plain set of n-gram tuples finds, names the
benchmark's file and line, and the command writes the report and a clean copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli
from hypothesis import given, settings
from hypothesis import strategies as st

from self_instruct.quality.decontaminate import (
    MIN_WHOLE_WORDS,
    BenchmarkIndex,
    Hit,
    Where,
    baseline_check,
    benchmark_texts,
    check_data,
    words,
)

# A small vocabulary, so that random texts share n-grams often (and hashes meet equal windows).
word = st.sampled_from(["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "Über", "日本", "x1"])
text = st.lists(word, max_size=30).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    bench=st.lists(text, max_size=8),
    queries=st.lists(text, max_size=8),
    n=st.integers(1, 6),
    copies=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 30)), max_size=4),
)
def test_the_index_finds_what_a_set_of_ngram_tuples_finds(bench, queries, n, copies):
    # Plant spans of benchmark texts in the queries, with other case and punctuation around them.
    queries = list(queries)
    for b, q, start in copies:
        if bench and queries:
            span = bench[b % len(bench)].split()[start : start + n + 2]
            queries[q % len(queries)] += " -- " + " ".join(span).upper() + "!"
    records = [(Where("b.jsonl", k + 1, "q"), t) for k, t in enumerate(bench)]
    assert BenchmarkIndex(records, n).check(queries) == baseline_check(records, n, queries)


# Words that the numpy path must cut and tell apart exactly as ``words`` does: cases, digits, words of
# 8, 9, 16 and more bytes sharing their first 8, and other scripts (``İ`` lower-cases to two characters,
# ``Σ`` to ``σ`` or ``ς`` by its place, the Kelvin sign to ASCII ``k``; digits and numbers of other
# scripts); and separators: punctuation, the underscore (``[^\W_]`` leaves it out), controls, the zero
# byte (check()'s own separator), punctuation and spaces outside ASCII, and a lone surrogate.
rich_word = st.sampled_from(
    [
        *("the", "The", "THE", "cat", "a1", "42", "0", "x_y"),
        *("internat", "internati", "internationalise", "internationalisation", "Internationalisations"),
        *("über", "ÜBER", "日本", "İx", "\u212a", "ß", "é", "e\u0301", "ΟΔΟΣ", "οδος", "x²", "½", "٣"),
    ]
)
separator = st.sampled_from(
    [" ", "  ", ", ", "\n", "\t", "_", "-", "'", "\x00", " \x00 ", "\x1f", "\xa0", " — ", "’", "…", "\ud800"]
)
rich_text = st.lists(st.tuples(rich_word, separator), max_size=20).map(
    lambda ws: "".join(w + s for w, s in ws)
)


@settings(max_examples=80, deadline=None)
@given(
    bench=st.lists(rich_text, max_size=8),
    queries=st.lists(st.one_of(rich_text, text), max_size=8),
    n=st.integers(1, 8),
    copies=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 20)), max_size=4),
)
def test_words_are_cut_as_the_regular_expression_cuts_them(bench, queries, n, copies):
    queries = list(queries)
    for b, q, start in copies:  # whole benchmark texts and spans of them, in ASCII or other company
        if bench and queries:
            source = bench[b % len(bench)]
            queries[q % len(queries)] += " " + (
                source if start % 3 == 0 else " ".join(source.split()[start:])
            )
    records = [(Where("b.jsonl", k + 1, "q"), t) for k, t in enumerate(bench)]
    assert BenchmarkIndex(records, n).check(queries) == baseline_check(records, n, queries)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=6), st.sampled_from(["", "İstanbul", "ΟΔΟΣ, ΣΟΦΙΑ"]))
def test_the_byte_fold_finds_the_words_the_regular_expression_finds(texts, other):
    from self_instruct.quality.decontaminate import _fold

    # Any characters at all: ASCII by the byte table, others by the table of the batch's distinct
    # characters, or (a character that lower-cases to several, or by its place) by ``words``.
    texts = [*texts, other]
    between = _fold(texts).split(b"\x00")[1:-1]  # the separator word between the texts
    assert [part.decode().split() for part in between] == [words(t) for t in texts]


def test_texts_of_n_words_empty_texts_and_other_edges():
    records = [
        (Where("b.jsonl", 1, "q"), ""),
        (Where("b.jsonl", 2, "q"), "one two three four five"),  # exactly n words
        (Where("b.jsonl", 3, "q"), "Un DEUX trois quatre"),  # a whole form of MIN_WHOLE_WORDS words
        (Where("b.jsonl", 4, "q"), "!!! ... ---"),  # no words at all
        (Where("b.jsonl", 5, "q"), "one two three four five"),  # again: the first source is named
        (Where("b.jsonl", 6, "q"), "Grüße aus Köln, 2024 – à bientôt"),
    ]
    queries = [
        "",
        "one two three four five",
        "one two three four",
        "(un) deux, TROIS... quatre!",
        "un deux trois quatre cinq",
        "un_deux_trois_quatre",
        "un\x00deux\x00trois\x00quatre",
        "GRÜSSE aus köln 2024 à bientôt",
        "grüße aus köln 2024 à bientôt",
        "\x00",
        " \x00 one two three four five",
    ]
    index = BenchmarkIndex(records, n=5)
    hits = index.check(queries)
    assert hits == baseline_check(records, 5, queries)
    assert [h and (h.where.line, h.ngram) for h in hits] == [
        None,
        (2, "one two three four five"),
        None,
        (3, "un deux trois quatre"),
        None,
        (3, "un deux trois quatre"),
        (3, "un deux trois quatre"),
        (6, "aus köln 2024 à bientôt"),  # ß is not ss: the second window
        (6, "grüße aus köln 2024 à"),
        None,
        (2, "one two three four five"),
    ]
    assert len(index) == 4 and len(index.whole) == 1  # n-grams as found (a repeated one twice)
    assert BenchmarkIndex([], 5).check(queries) == [None] * len(queries)
    assert index.check([]) == []


def test_a_hash_collision_never_rejects_and_the_first_source_is_named(monkeypatch):
    import numpy as np

    from self_instruct.quality import decontaminate

    # Every word's id 0: every window of the benchmark has the same hash, every short text the same
    # hash as any other of its length; only the word-for-word comparison tells them apart.
    monkeypatch.setattr(decontaminate, "_MIX", np.uint64(0))
    records = [
        (Where("b.jsonl", k + 1, "q"), t)
        for k, t in enumerate(
            [
                "a b c d e f g",
                "red green blue",
                "one two three four",
                "b c d e f g h",
                "one two three five",
                "b c d e f g h i",
                "one two three four",
            ]
        )
    ]
    queries = [
        "x b c d e f g h",
        "c d e f g h",
        "one two three five",
        "one two three six",
        "b c d e",
        "p q r s t u",
    ]
    hits = BenchmarkIndex(records, 6).check(queries)
    assert hits == baseline_check(records, 6, queries)
    assert [h and (h.where.line, h.ngram) for h in hits] == [
        (1, "b c d e f g"),
        (4, "c d e f g h"),
        (5, "one two three five"),
        None,
        None,
        None,
    ]


def test_a_large_batch_is_checked_in_chunks_alike(monkeypatch):
    import random

    from self_instruct.quality import decontaminate

    rng = random.Random(3)
    vocabulary = ["alpha", "beta", "gamma", "delta", "Epsilon", "zeta", "eta", "theta", "Ωmega", "x_1"]
    bench = [" ".join(rng.choices(vocabulary, k=rng.randint(0, 30))) for _ in range(60)]
    queries = [", ".join(rng.choices(vocabulary, k=rng.randint(0, 40))) for _ in range(3000)]
    records = [(Where("b.jsonl", k + 1, "q"), t) for k, t in enumerate(bench)]
    index = BenchmarkIndex(records, 5)
    whole = index.check(queries)
    monkeypatch.setattr(decontaminate, "_CHUNK", 200)  # a few texts a chunk, one text over it at times
    assert index.check(queries) == whole == baseline_check(records, 5, queries)
    assert sum(h is not None for h in whole) > 100


def test_normalisation_whole_forms_and_the_first_source():
    records = [
        (Where("a.jsonl", 1, "question"), "Name THREE primary colours, used in painting; then explain why."),
        (Where("a.jsonl", 2, "question"), "name three primary colours used in painting then explain why"),
        (Where("a.jsonl", 3, "answer"), "Positive"),
        (Where("a.jsonl", 4, "question"), "What is the capital of France?"),
    ]
    index = BenchmarkIndex(records, n=8)
    hits = index.check(
        [
            "Please: name three primary colours, used in painting; then!",  # 8 words: the first source
            "What is the capital of france",  # a short text's whole form
            "Positive",  # below MIN_WHOLE_WORDS: never compared whole
            "what is the capital",  # part of a short text only
            "",
        ]
    )
    assert hits[0] is not None and hits[0].where == records[0][0]
    assert hits[0].ngram == "name three primary colours used in painting then"
    assert (
        hits[1] is not None and hits[1].where.line == 4 and hits[1].ngram == "what is the capital of france"
    )
    assert hits[2:] == [None, None, None]
    assert words("Ünïcode-Text 日本 x_y") == ["ünïcode", "text", "日本", "x", "y"]
    assert MIN_WHOLE_WORDS == 4


def test_benchmark_files_in_every_format_name_their_lines(tmp_path):
    line = "the same long sentence that a benchmark holds and a generated instance repeats word for word"
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"id": 1, "q": "other text"})
        + "\n\n"
        + json.dumps({"q": line, "meta": {"note": "x"}})
        + "\n"
    )
    (tmp_path / "b.json").write_text(json.dumps([{"q": "nothing"}, {"q": line}]))
    (tmp_path / "b.csv").write_text(f'q,a\nnothing,nothing\n"{line}",yes\n')
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"q": ["nothing", line]}), tmp_path / "b.parquet")
    files = [tmp_path / f"b.{ext}" for ext in ("jsonl", "json", "csv", "parquet")]
    found = {
        (w.file, w.line, w.field) for w, t in benchmark_texts(files) if t == line
    }  # JSONL: its line (a blank one counted); JSON and Parquet: the row; CSV: the line
    assert found == {
        (str(files[0]), 3, "q"),
        (str(files[1]), 2, "q"),
        (str(files[2]), 3, "q"),
        (str(files[3]), 2, "q"),
    }
    nested = {w.field for w, _ in benchmark_texts([files[0]])}
    assert nested == {"q", "meta.note"}
    assert {w.field for w, _ in benchmark_texts([files[0]], ["note"])} == {"meta.note"}


def test_decontaminate_command_reports_every_hit_and_writes_a_clean_copy(tmp_path):
    bench = tmp_path / "bench.jsonl"
    long_q = "the quick brown fox jumps over the lazy dog near the river bank on a sunny afternoon today"
    bench.write_text(
        json.dumps({"question": long_q, "answer": "yes"})
        + "\n"
        + json.dumps({"question": "What is the capital of France and why is it famous"})
        + "\n"
    )
    rows = [
        {"instruction": "Write a story.", "input": "", "output": f"Once {long_q.upper()}, the end."},
        {
            "instruction": "What is the capital of France, and why is it famous?",
            "input": "",
            "output": "Paris",
        },
        {"instruction": "Add two numbers.", "input": "2, 3", "output": "5"},
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = cli("decontaminate", "data.jsonl", "--against", "bench.jsonl", "--out", "clean", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "data.jsonl: 3 records, 2 contaminated (output 1, instruction 1) -> clean/data.jsonl" in proc.stdout
    )
    report = [json.loads(x) for x in (tmp_path / "decontamination.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"], r["benchmark_line"]) for r in report] == [
        (1, "output", 1),
        (2, "instruction", 2),
    ]
    assert report[0]["ngram"] == "the quick brown fox jumps over the lazy dog near the river bank"
    clean = [json.loads(x) for x in (tmp_path / "clean" / "data.jsonl").read_text().splitlines()]
    assert clean == rows[2:]
    # Bad input: one line, exit 2, nothing written over.
    for args, message in (
        (["--against", "missing.jsonl"], "missing.jsonl: no such benchmark file"),
        (["--against", "bench.jsonl", "--out", "."], "would overwrite an input"),
        (["--against", "bench.jsonl", "--ngram", "0"], "--ngram must be at least 1"),
    ):
        proc = cli("decontaminate", "data.jsonl", *args, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert [json.loads(x) for x in data.read_text().splitlines()] == rows


def test_a_run_leaves_out_every_seed_instruction_and_instance_that_repeats_a_benchmark(tmp_path):
    from scripted import ScriptedBackend

    from self_instruct.config import load_config
    from self_instruct.pipeline import run
    from self_instruct.store import read_jsonl
    from self_instruct.tasks import load_tasks

    seed_file = Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"
    copied = [t.instruction for t in load_tasks(seed_file)[:5]]
    lines = [{"question": "an unrelated benchmark question about the tides of a far sea"}]
    lines += [{"question": text} for text in copied]  # lines 2 to 6

    def generate(name: str, bench: list[dict]) -> Path:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in bench))
        over = {
            "output_dir": str(tmp_path),
            "run_name": name,
            "seed_file": str(seed_file),
            "target": "20",
            "progress": "false",
            "llm.structured": "off",
            "quality.decontaminate": [str(path)],
        }
        summary = run(load_config(None, over), backend=ScriptedBackend())
        assert not summary.incomplete
        assert any("seed tasks repeat a benchmark: left out" in n for n in summary.notes)
        return tmp_path / name

    def contaminated(run_dir: Path) -> list[dict]:
        return [r for r in read_jsonl(run_dir / "rejected.jsonl") if r["reason"] == "contaminated"]

    first = generate("first", lines)
    seeds = contaminated(first)
    assert [(r["stage"], r["text"], r["details"]["benchmark"]["line"]) for r in seeds] == [
        ("seeds", text, k + 2) for k, text in enumerate(copied)
    ]
    # Plant the run's last accepted instruction and one of its first task's outputs in the benchmark:
    # a second run asks the same questions up to there, and must leave both out.
    last = read_jsonl(first / "machine_instructions.jsonl")[-1]["instruction"]
    task = read_jsonl(first / "instances.jsonl")[0]
    field, value = next(
        (f, i[f])
        for i in task["instances"]
        for f in ("input", "output")
        if len(words(i[f])) >= MIN_WHOLE_WORDS
    )
    planted = [*lines, {"question": last}, {"answer": value}]  # lines 7 and 8
    second = generate("second", planted)
    found = contaminated(second)
    assert {(r["stage"], r["details"]["benchmark"]["line"]) for r in found} == {
        *(("seeds", k + 2) for k in range(5)),
        ("bootstrap", 7),
        ("instances", 8),
    }
    assert all(r["text"] == last for r in found if r["stage"] == "bootstrap")
    assert all(r["details"][field] == value for r in found if r["stage"] == "instances")
    rows = read_jsonl(second / "dataset.jsonl")
    assert last not in {r["instruction"] for r in rows} and value not in {r[field] for r in rows}
    # Nothing left in the data repeats the benchmark; a second session records nothing twice.
    bench = [(Where("b", k + 1, "q"), next(iter(r.values()))) for k, r in enumerate(planted)]
    texts = [t for r in rows for t in (r["instruction"], r["input"], r["output"])]
    assert baseline_check(bench, 13, texts) == [None] * len(texts)
    generate("second", planted)
    assert len(contaminated(second)) == len(found)
    # After the fact, the command's check finds in the first run exactly what the plain set finds.
    index = BenchmarkIndex(benchmark_texts([tmp_path / "second.jsonl"]), 13)
    [(source, records, hits)] = list(check_data([str(first)], index))
    assert source == first / "dataset.jsonl" and hits
    fields = [(n, f, r[f]) for n, r in records for f in ("instruction", "input", "output")]
    plain = baseline_check(benchmark_texts([tmp_path / "second.jsonl"]), 13, [t for _, _, t in fields])
    assert {(h["line"], h["field"]) for h in hits} == {
        (n, f) for (n, f, _), hit in zip(fields, plain, strict=True) if hit is not None
    }


def test_a_short_text_repeated_many_times_is_one_whole_form():
    records = [(Where("b.jsonl", i + 1, "answer"), "None of the above.") for i in range(20_000)]
    records.append((Where("b.jsonl", 20_001, "answer"), "All of the above."))
    index = BenchmarkIndex(records, 13)
    assert len(index.whole) == 2
    [hit, other, clean] = index.check(["none of the ABOVE", "All of the above!", "none of these above"])
    assert hit == Hit(Where("b.jsonl", 1, "answer"), "none of the above")  # the first of them
    assert other is not None and other.where.line == 20_001 and clean is None
