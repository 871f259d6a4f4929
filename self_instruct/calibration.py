"""Classification calibrated on the seed tasks' own labels.

A small model asked "is this a classification task?" may rank tasks well and still answer "No" to
nearly all of them: its yes/no threshold is off, not its judgement. So each task is scored by the
margin log P(yes) - log P(no) of the first answer token, and the threshold on that margin is chosen
on the seed tasks, whose ``is_classification`` labels come with every seed file.

The threshold calls as many seed tasks classification tasks as their labels do (see
``best_threshold``). The accuracy and balanced accuracy it reports (balanced: the mean of the
recall on both labels, since seed files hold far fewer classification tasks than others) are
cross-validated: stratified folds, each judged with a threshold chosen on the other folds, so they
are not measured on the data the threshold was tuned on. AUC needs no threshold at all.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

YES_TOKENS = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO_TOKENS = ("no", "No", "NO", " no", " No", " NO")
MIN_PER_LABEL = 5  # fewer labelled seeds of either kind cannot place a threshold
FOLDS = 5


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def margin(top_logprobs: dict[str, float] | None) -> float | None:
    """log P(yes) - log P(no) for the first answer token, from its top alternatives.

    Each side adds up its spellings (" Yes", "Yes", "yes", ...). A side missing from the top list is
    bounded by the least likely token listed (it is at most that likely). None without logprobs or
    when neither side is listed."""
    if not top_logprobs:
        return None
    yes = [lp for t, lp in top_logprobs.items() if t in YES_TOKENS]
    no = [lp for t, lp in top_logprobs.items() if t in NO_TOKENS]
    if not yes and not no:
        return None
    floor = min(top_logprobs.values())
    return _logsumexp(yes or [floor]) - _logsumexp(no or [floor])


def auc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def balanced_accuracy(pred: list[bool], labels: list[bool]) -> float:
    pos = [p for p, y in zip(pred, labels, strict=True) if y]
    neg = [not p for p, y in zip(pred, labels, strict=True) if not y]
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


def best_threshold(scores: list[float], labels: list[bool]) -> float:
    """The margin threshold (``score >= t`` is yes) that calls as many tasks classification tasks
    as the labels do: midway between the k-th and the (k+1)-th highest score, for k positives.

    So the model's ranking decides which tasks, and the seed file decides how many. Maximising
    balanced accuracy instead was measured to be worse on our seeds with the embedded model
    (cross-validated balanced accuracy 0.73-0.76 against 0.76-0.78, and a yes rate of 28% against
    the labels' 17%): its optimum is flat and jagged, so it hinges on a seed or two."""
    k = sum(labels)
    ranked = sorted(scores, reverse=True)
    if k == 0:
        return ranked[0] + 1.0
    if k == len(ranked):
        return ranked[-1] - 1.0
    return (ranked[k - 1] + ranked[k]) / 2


@dataclass
class Calibration:
    threshold: float
    seeds: int  # labelled seed tasks scored
    positives: int
    cv_accuracy: float
    cv_balanced_accuracy: float
    auc: float
    greedy_yes_rate: float  # how often the top answer token was yes on the seeds (what greedy says)
    calibrated_yes_rate: float  # share of seeds at or above the threshold

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def folds(labels: list[bool], k: int, seed: int) -> list[int]:
    """A fold number per item, stratified: each fold gets its share of either label."""
    rng = random.Random(seed)
    fold = [0] * len(labels)
    for value in (True, False):
        idx = [i for i, y in enumerate(labels) if y is value]
        rng.shuffle(idx)
        for n, i in enumerate(idx):
            fold[i] = n % k
    return fold


def calibrate(scores: list[float], labels: list[bool], greedy_yes: list[bool], seed: int = 0) -> Calibration:
    """The threshold on all seeds, with cross-validated accuracy, balanced accuracy and AUC."""
    k = min(FOLDS, sum(labels), len(labels) - sum(labels))
    fold = folds(labels, k, seed)
    pred = [False] * len(scores)
    for f in range(k):
        train = [i for i in range(len(scores)) if fold[i] != f]
        t = best_threshold([scores[i] for i in train], [labels[i] for i in train])
        for i in range(len(scores)):
            if fold[i] == f:
                pred[i] = scores[i] >= t
    threshold = best_threshold(scores, labels)
    n = len(scores)
    return Calibration(
        threshold=threshold,
        seeds=n,
        positives=sum(labels),
        cv_accuracy=sum(p == y for p, y in zip(pred, labels, strict=True)) / n,
        cv_balanced_accuracy=balanced_accuracy(pred, labels),
        auc=auc(scores, labels),
        greedy_yes_rate=sum(greedy_yes) / n,
        calibrated_yes_rate=sum(s >= threshold for s in scores) / n,
    )
