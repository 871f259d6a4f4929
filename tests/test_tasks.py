import json

import pytest

from self_instruct.errors import UserError
from self_instruct.tasks import Instance, load_tasks


def write(tmp_path, lines, name="seeds.jsonl"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return p


def test_seed_schema(tmp_path):
    rec = {
        "id": "seed_task_0",
        "name": "greet",
        "instruction": "Greet the user warmly.",
        "instances": [{"input": "", "output": "Hello there!"}],
        "is_classification": False,
    }
    tasks = load_tasks(write(tmp_path, [json.dumps(rec)]))
    assert len(tasks) == 1
    assert tasks[0].instances == [Instance("", "Hello there!")]
    assert tasks[0].to_dict() == rec


def test_flat_schema_groups_instances_by_instruction(tmp_path):
    lines = [
        json.dumps({"instruction": "Add the numbers.", "input": "1 2", "output": "3"}),
        json.dumps({"instruction": "Name a colour.", "output": "Blue"}),
        json.dumps({"instruction": "Add the numbers.", "input": "2 2", "output": "4"}),
    ]
    tasks = load_tasks(write(tmp_path, lines))
    assert [t.instruction for t in tasks] == ["Add the numbers.", "Name a colour."]
    assert tasks[0].instances == [Instance("1 2", "3"), Instance("2 2", "4")]
    assert tasks[1].is_classification is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"instances": []}', "'instruction' must be a string"),
        ('{"instruction": "  ", "output": "x"}', "'instruction' is empty"),
        ('{"instruction": "Do it now.", "instances": {}}', "'instances' must be a list"),
        (
            '{"instruction": "Do it now.", "instances": [{"input": 1, "output": "x"}]}',
            "instances[0]: 'input'",
        ),
        ('{"instruction": "Do it now.", "instances": [], "is_classification": "yes"}', "is_classification"),
        ('{"instruction": "Do it now."}', "expected 'instances'"),
    ],
)
def test_malformed_line_is_reported_with_file_and_line(tmp_path, line, message):
    good = json.dumps({"instruction": "Fine task here.", "output": "ok"})
    path = write(tmp_path, [good, "", line])
    with pytest.raises(UserError) as err:
        load_tasks(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="seed file not found"):
        load_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="no tasks"):
        load_tasks(write(tmp_path, []))
