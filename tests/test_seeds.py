"""Our own seed file: size, mix, novelty and filter-cleanliness."""

from itertools import combinations
from pathlib import Path

from rouge_score import rouge_scorer

from self_instruct.filters import check_instruction
from self_instruct.tasks import load_tasks

SEEDS = Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"


def test_seed_file_size_and_mix():
    tasks = load_tasks(SEEDS)
    assert len(tasks) == 175
    assert len({t.id for t in tasks}) == 175
    assert len({t.name for t in tasks}) == 175
    assert sum(t.is_classification is True for t in tasks) >= 25
    empty_input = sum(all(not i.input for i in t.instances) for t in tasks)
    assert 40 <= empty_input <= 60
    assert all(t.instances and all(i.output.strip() for i in t.instances) for t in tasks)


def test_no_seed_trips_our_instruction_filters():
    problems = [(t.id, why) for t in load_tasks(SEEDS) if (why := check_instruction(t.instruction))]
    assert problems == []


def test_no_two_seeds_are_too_similar():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tasks = load_tasks(SEEDS)
    worst = max(
        (scorer.score(a.instruction, b.instruction)["rougeL"].fmeasure, a.id, b.id)
        for a, b in combinations(tasks, 2)
    )
    assert worst[0] <= 0.7, worst


def test_the_packaged_seed_file_is_the_repository_one(tmp_path):
    from self_instruct.config import load_config
    from self_instruct.tasks import packaged_seed_file

    repo = Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"
    assert packaged_seed_file().read_bytes() == repo.read_bytes()
    assert load_config(None, {}).seed_path == packaged_seed_file()
