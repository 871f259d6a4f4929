import random

from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from self_instruct.novelty import NoveltyIndex, rouge_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


texts = st.text(alphabet=st.sampled_from(list("abc xyz 019.,!-AB\u00e9\u4e2d")), max_size=40)


def test_tokenizer_matches_reference_semantics():
    assert rouge_tokens("Hello, World! 42-times") == ["hello", "world", "42", "times"]
    assert rouge_tokens("\u4e2d\u6587\u6587\u672c") == []  # non-ASCII text has no tokens


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, min_size=1, max_size=6), texts)
def test_best_match_equals_rouge_score(pool, candidate):
    index = NoveltyIndex()
    for text in pool:
        index.add(text)
    best = index.best(candidate)
    expected = max(reference(candidate, p) for p in pool)
    assert best.score == expected


def test_top_k_is_sorted_and_keeps_sequential_semantics():
    index = NoveltyIndex(0.7)
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    for _ in range(50):
        index.add(" ".join(rng.choices(words, k=8)))
    top = index.top_k("alpha beta gamma delta", 10)
    assert [m.score for m in top] == sorted((m.score for m in top), reverse=True)
    keep, match = index.is_novel("a completely new sentence about nothing")
    assert keep
    index.add("a completely new sentence about nothing")
    keep, match = index.is_novel("A completely new sentence about nothing!")
    assert not keep and match.score == 1.0 and match.index == 50
