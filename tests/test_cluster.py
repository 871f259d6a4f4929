"""The sharded novelty index on a local Ray (2 CPUs) decides and records exactly as one local index."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_novelty import any_text, word_text

from self_instruct.cluster import connect
from self_instruct.cluster.novelty import ShardedNoveltyIndex
from self_instruct.novelty import NoveltyIndex

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def ray():
    # Ray's workers import the test modules a run ships to them (the scripted backend) from here.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), old) if p)
    ray = connect("", num_cpus=2)
    yield ray
    ray.shutdown()
    if old is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def indexes(ray):
    """Sharded indexes by shard count, emptied before each use (starting an actor takes seconds)."""
    made = {k: ShardedNoveltyIndex(ray, k, cpus=0.25) for k in (1, 2, 3)}  # 6 actors on 2 CPUs
    yield made
    for index in made.values():
        index.close()


def _fresh(indexes, shards: int, tokenizer: str = "rouge") -> ShardedNoveltyIndex:
    index = indexes[shards]
    index.reset(0.7, tokenizer)
    return index


def _same(pool: list[str], batches: list[list[str]], sharded: ShardedNoveltyIndex, tokenizer="rouge") -> None:
    """Admit the batches through both indexes; decisions, blockers and top-10 records all equal."""
    local = NoveltyIndex(0.7, tokenizer)
    assert local.add_many(pool) == sharded.add_many(pool)
    for batch in batches:
        want = [local.admit(text) for text in batch]
        got = sharded.admit_many(batch)
        assert got == want
    entries = list(range(len(local)))
    assert sharded.top_k_before(entries, 10) == local.top_k_before(entries, 10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pool=st.lists(any_text, max_size=12),
    batches=st.lists(st.lists(any_text, min_size=1, max_size=10), min_size=1, max_size=4),
    shards=st.integers(1, 3),
)
def test_random_text_decides_and_records_as_the_local_index(indexes, pool, batches, shards):
    _same(pool, batches, _fresh(indexes, shards))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(word_text, min_size=1, max_size=12), min_size=1, max_size=5))
def test_small_vocabularies_full_of_ties_and_near_threshold_scores(indexes, batches):
    _same(["the cat sat on the mat", "a dog sat on a mat"], batches, _fresh(indexes, 2))


def test_adversarial_pool_duplicates_empty_texts_and_unicode(indexes):
    rng = random.Random(7)
    words = [
        "classify",
        "the",
        "sentiment",
        "of",
        "a",
        "review",
        "write",
        "a",
        "poem",
        "about",
        "cats",
        "summarize",
        "this",
        "text",
    ]
    pool = [" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(300)]
    adversarial = [
        pool[0],  # an exact duplicate: blocked at 1.0 by the earliest copy
        pool[0].upper(),  # the same tokens
        "",  # no tokens: scores 0 against everything, admitted
        "!!! ...",
        "\u4e2d\u6587 \u6587\u672c",  # no tokens for the reference tokenizer
        " ".join(pool[5].split()[:-1]),  # a near-duplicate
        pool[5] + " " + pool[5],  # repeated tokens
        "classify classify classify",
    ]
    batches = [adversarial, [" ".join(rng.choices(words, k=rng.randint(2, 8))) for _ in range(200)]]
    for shards in (2, 3):
        _same(pool, batches, _fresh(indexes, shards))
    more = [adversarial, ["\u4e2d\u6587\u6587\u672c", "\u4e2d\u6587\u6587\u672c!"]]
    _same(pool[:50], more, _fresh(indexes, 2, "unicode"), "unicode")


def test_each_shard_holds_its_share_and_counts_its_cpu(ray, indexes):
    sharded = _fresh(indexes, 2)
    sharded.add_many([f"task number {i} about topic {i % 7}" for i in range(101)])
    sharded.admit_many(["a new task about something else entirely"])
    sizes = ray.get([s.add.remote([]) for s in sharded.shards])
    assert sorted(sizes) == [51, 51] and len(sharded) == 102
    assert all(cpu > 0 for cpu in sharded.cpu_seconds())


def test_generate_with_the_ray_executor_writes_the_local_executors_files(ray, tmp_path):
    from scripted import ScriptedBackend
    from test_golden import DATA_FILES

    from self_instruct.config import load_config
    from self_instruct.pipeline import run

    def files(executor: str) -> dict[str, bytes]:
        over = {
            "output_dir": str(tmp_path),
            "run_name": executor,
            "seed_file": str(Path(__file__).parent.parent / "seeds" / "seed_tasks.jsonl"),
            "target": "40",
            "progress": "false",
            "llm.structured": "off",
            "llm.concurrency": "4",
            "executor": executor,
            "ray.shards": "2",
            "ray.workers": "2",
            "quality.judge": "on",  # a fifth step, its requests through the workers too
        }
        summary = run(load_config(None, over), backend=ScriptedBackend(jitter=0.002))
        assert not summary.incomplete
        if executor == "ray":
            assert any("the novelty index in 2 shards holding" in note for note in summary.notes)
            sent = next(n for n in summary.notes if "model requests sent from 2 Ray workers" in n)
            sent_by = re.search(r"requests (\d+) \+ (\d+)\)", sent)
            assert sent_by and all(int(n) > 0 for n in sent_by.groups()), sent  # both workers sent
            assert "(concurrency 2 + 2;" in sent, sent
        return {
            n: (tmp_path / executor / n).read_bytes()
            for n in DATA_FILES
            if (tmp_path / executor / n).exists()
        }

    assert files("ray") == files("local")
    assert ray.available_resources().get("CPU", 0) >= 0.5  # the run's actors are gone


def test_batch_with_the_ray_executor_runs_each_run_as_a_ray_task(ray, tmp_path):
    from scripted import ScriptedBackend
    from test_golden import DATA_FILES

    from self_instruct.batch import run_plan

    seeds = TESTS.parent / "seeds" / "seed_tasks.jsonl"

    def batch(executor: str) -> dict[str, bytes]:
        plan = tmp_path / f"{executor}.toml"
        plan.write_text(
            f"""
output_dir = "{tmp_path}"
[base]
target = 12
seed_file = "{seeds}"
progress = false
executor = "{executor}"
[base.llm]
structured = "off"
concurrency = 2
[matrix]
seed = [1, 2]
"""
        )
        announced: list[str] = []
        summary = run_plan(plan, backend=ScriptedBackend(), announce=announced.append)
        assert [r["accepted"] for r in summary["runs"]] == [12, 12]
        on_ray = [label for label in announced if label.endswith("(a Ray task)")]
        assert len(on_ray) == (2 if executor == "ray" else 0), announced
        root = tmp_path / executor
        paths = [root / "merged" / n for n in ("tasks.jsonl", "dataset.jsonl", "rejected.jsonl")]
        paths += [root / "runs" / f"seed-{s}" / n for s in (1, 2) for n in DATA_FILES]
        return {str(p.relative_to(root)): p.read_bytes() for p in paths if p.exists()}

    local = batch("local")
    assert batch("ray") == local and len(local) > 10


def test_analyze_on_ray_data_gives_the_local_statistics(ray, tmp_path):
    from scripted import ScriptedBackend

    from self_instruct.analysis import analyze
    from self_instruct.config import load_config
    from self_instruct.pipeline import run

    over = {
        "output_dir": str(tmp_path),
        "run_name": "run",
        "seed_file": str(TESTS.parent / "seeds" / "seed_tasks.jsonl"),
        "target": "60",
        "progress": "false",
        "llm.structured": "off",
    }
    run(load_config(None, over), backend=ScriptedBackend())
    stats = {
        executor: analyze(
            [str(tmp_path / "run")], str(tmp_path / executor), executor=executor, progress=False
        )
        for executor in ("local", "ray")
    }
    local = stats["local"]["inputs"][0]
    assert local["verb_noun"]["with_pair"] > 20 and local["seed_rouge_l"]["seeds"] > 100
    assert stats["ray"] == stats["local"]


def test_a_judge_at_another_endpoint_is_asked_from_the_ray_workers(ray, tmp_path):
    from openai_server import FakeOpenAIServer
    from scripted import ScriptedBackend, respond
    from test_golden import DATA_FILES

    from self_instruct.config import load_config
    from self_instruct.pipeline import run

    with FakeOpenAIServer(respond) as judge:

        def files(executor: str) -> dict[str, bytes]:
            over = {
                "output_dir": str(tmp_path),
                "run_name": executor,
                "seed_file": str(TESTS.parent / "seeds" / "seed_tasks.jsonl"),
                "target": "12",
                "progress": "false",
                "llm.structured": "off",
                "llm.concurrency": "4",
                "executor": executor,
                "ray.workers": "2",
                "quality.judge": "on",
                "quality.judge_base_url": [judge.base_url],
                "quality.judge_model": "judge-model",
            }
            summary = run(load_config(None, over), backend=ScriptedBackend())
            assert not summary.incomplete
            if executor == "ray":
                sent = next(n for n in summary.notes if "the judge's requests sent from 2 Ray workers" in n)
                sent_by = re.search(r"requests (\d+) \+ (\d+)\)", sent)
                assert sent_by and all(int(n) > 0 for n in sent_by.groups()), sent
            return {
                n: (tmp_path / executor / n).read_bytes()
                for n in DATA_FILES
                if (tmp_path / executor / n).exists()
            }

        local = files("local")
        asked = len([r for r in judge.requests if (r["body"] or {}).get("model") == "judge-model"])
        assert files("ray") == local and b'"rating"' in local["dataset.jsonl"]
    # Every instance was rated once in each run, by the judge's endpoint.
    assert len([r for r in judge.requests if (r["body"] or {}).get("model") == "judge-model"]) == 2 * asked
