"""The novelty index against the reference scorer, rouge_score, used here as the oracle."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from self_instruct.novelty import NoveltyIndex, f_measure, rouge_tokens, unicode_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


def reference_decisions(pool: list[str], batch: list[str], threshold: float = 0.7) -> list[bool]:
    """The method's rule, the slow way: each candidate against the pool and earlier kept candidates."""
    pool = list(pool)
    out = []
    for text in batch:
        keep = all(reference(text, p) <= threshold for p in pool)
        out.append(keep)
        if keep:
            pool.append(text)
    return out


# Small alphabets make repeated tokens, shared subsequences and scores near 0.7 common.
WORDS = [
    "a",
    "the",
    "cat",
    "Cat",
    "dog",
    "sat",
    "on",
    "mat",
    "42",
    "x1",
    "b.c",
    "e\u0301",
    "\u4e2d\u6587",
    "",
]
word_text = st.lists(st.sampled_from(WORDS), max_size=14).map(lambda ws: " ".join(ws))
raw_text = st.text(alphabet=st.sampled_from(list("ab c.,!-AB019\n\t\u00e9\u4e2d_")), max_size=30)
any_text = st.one_of(word_text, raw_text)


def test_tokenizer_matches_reference_semantics():
    assert rouge_tokens("Hello, World! 42-times") == ["hello", "world", "42", "times"]
    assert rouge_tokens("snake_case and CamelCase") == ["snake", "case", "and", "camelcase"]
    assert rouge_tokens("\u4e2d\u6587\u6587\u672c") == []  # non-ASCII text has no tokens


def test_f_measure_order_of_operations_matters_at_the_boundary():
    # 2*LCS/(m+n) and rouge_score's 2PR/(P+R) differ in the last bit for some pairs; ours must be
    # the latter. Find such a pair and check we agree with rouge_score on it.
    found = 0
    for lcs in range(1, 40):
        for m in range(lcs, 60):
            for n in range(lcs, 60):
                if f_measure(lcs, m, n) != 2 * lcs / (m + n):
                    found += 1
                    a = " ".join(f"w{i}" for i in range(m))
                    b = " ".join(f"w{i}" for i in range(lcs)) + "".join(f" z{i}" for i in range(n - lcs))
                    assert f_measure(lcs, m, n) == reference(a, b)
                    if found > 5:
                        return
    assert found, "expected pairs where the two formulas differ"


@settings(max_examples=400, deadline=None)
@given(st.lists(any_text, min_size=1, max_size=8), any_text)
def test_top_k_equals_brute_force_rouge_score(pool, candidate):
    index = NoveltyIndex()
    for text in pool:
        index.add(text)
    expected = sorted(((reference(candidate, p), i) for i, p in enumerate(pool)), key=lambda s: (-s[0], s[1]))
    got = index.top_k(candidate, 3)
    assert [(m.score, m.index) for m in got] == expected[:3]
    assert all(abs(m.score - e[0]) <= 1e-12 for m, e in zip(got, expected, strict=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(any_text, max_size=8), st.lists(any_text, min_size=1, max_size=8))
def test_batch_decisions_equal_the_reference_rule(pool, batch):
    index = NoveltyIndex()
    for text in pool:
        index.add(text)
    # Near-duplicates inside the batch: each candidate again with one word changed.
    batch = batch + [t + " cat" for t in batch]
    got = [index.admit(text)[0] is None for text in batch]  # what bootstrap does for each candidate
    assert got == reference_decisions(pool, batch)
    assert len(index) == len(pool) + sum(got)


@settings(max_examples=200, deadline=None)
@given(st.lists(word_text, min_size=1, max_size=10), word_text)
def test_blocking_neighbour_is_the_best_match(pool, candidate):
    index = NoveltyIndex()
    for text in pool:
        index.add(text)
    keep, blocker = index.is_novel(candidate)
    best = max(reference(candidate, p) for p in pool)
    assert keep == (best <= 0.7)
    if not keep:
        assert blocker.score == best and reference(candidate, pool[blocker.index]) == best


def test_larger_pool_with_mask_bits_matches_the_reference():
    # Enough entries that frequent tokens move to mask bits, and queries repeating them.
    rng = random.Random(7)
    vocab = ["the", "a", "of", "to", "and"] * 6 + [f"w{i}" for i in range(150)]
    pool = [" ".join(rng.choices(vocab, k=rng.randint(3, 16))) for _ in range(400)]
    index = NoveltyIndex()
    for text in pool:
        index.add(text)
    assert index._bit  # frequent tokens were given mask bits
    for _ in range(25):
        query = " ".join(rng.choices(vocab, k=rng.randint(1, 20)))
        expected = sorted(((reference(query, p), i) for i, p in enumerate(pool)), key=lambda s: (-s[0], s[1]))
        assert [(m.score, m.index) for m in index.top_k(query, 10)] == expected[:10]
        keep, _ = index.is_novel(query)
        assert keep == (expected[0][0] <= 0.7)


def test_long_texts_and_exact_threshold():
    long_a = " ".join(f"t{i % 97}" for i in range(3000))
    long_b = " ".join(f"t{i % 89}" for i in range(2500))
    index = NoveltyIndex()
    index.add(long_a)
    assert index.best(long_b).score == reference(long_b, long_a)
    # F exactly 0.7 is kept (the rule is "<= 0.7"): LCS 7, m = n = 10.
    base = " ".join(f"k{i}" for i in range(10))
    near = " ".join([f"k{i}" for i in range(7)] + ["y1", "y2", "y3"])
    assert reference(near, base) == 0.7
    index = NoveltyIndex()
    index.add(base)
    assert index.is_novel(near)[0]


def test_unicode_tokenizer_sees_other_scripts():
    assert unicode_tokens("Übersetze den Satz ins Deutsche") == [
        "übersetze",
        "den",
        "satz",
        "ins",
        "deutsche",
    ]
    assert unicode_tokens("翻译这个句子 into English") == [
        "翻",
        "译",
        "这",
        "个",
        "句",
        "子",
        "into",
        "english",
    ]
    zh_a, zh_b = "请把这个句子翻译成英文", "请把这个句子翻译成法文"
    ref = NoveltyIndex()
    ref.add(zh_a)
    assert ref.is_novel(zh_b)[0]  # reference tokenizer: no tokens, never filtered
    uni = NoveltyIndex(tokenizer="unicode")
    uni.add(zh_a)
    keep, match = uni.is_novel(zh_b)
    assert not keep and match.score > 0.8


def test_empty_and_tokenless_texts():
    index = NoveltyIndex()
    assert index.top_k("anything", 5) == [] and index.is_novel("anything") == (True, None)
    index.add("")
    index.add("real words here")
    assert index.is_novel("!!!")[0]
    assert [m.score for m in index.top_k("!!!", 5)] == [0.0, 0.0]
    assert index.best("real words").index == 1


@settings(max_examples=150, deadline=None)
@given(st.lists(any_text, min_size=1, max_size=12), st.integers(min_value=1, max_value=5))
def test_top_k_before_equals_top_k_at_the_time_of_adding(texts, k):
    index = NoveltyIndex()
    expected = []
    for text in texts:
        expected.append([(m.score, m.index) for m in index.top_k(text, k)])
        index.add(text)
    got = index.top_k_before(list(range(len(texts))), k)
    assert [[(m.score, m.index) for m in row] for row in got] == expected
