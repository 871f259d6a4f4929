import pytest

from self_instruct.errors import UserError
from self_instruct.store import JsonlStore, read_jsonl, write_jsonl_atomic


def test_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    store = JsonlStore(tmp_path / "s.jsonl")
    store.append([{"a": 1}, {"a": 2}])
    with store.path.open("a") as f:
        f.write('{"a": 3, "b"')  # a crash in the middle of a write
    assert store.read() == [{"a": 1}, {"a": 2}]
    store.append([{"a": 4}])
    assert store.read() == [{"a": 1}, {"a": 2}, {"a": 4}]
    assert store.path.read_text().count("\n") == 3


def test_corrupt_middle_line_is_an_error_with_its_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(UserError, match=r"s.jsonl:2: corrupt record"):
        read_jsonl(p)


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "out.jsonl"
    write_jsonl_atomic(p, [{"x": "é"}])
    write_jsonl_atomic(p, [{"x": 1}, {"x": 2}])
    assert read_jsonl(p) == [{"x": 1}, {"x": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary file left


def test_every_rejection_has_the_same_core_keys_and_old_shapes_are_read_as_the_new(tmp_path):
    """A run that rejects in every stage writes one shape; records written by earlier versions, each
    stage with its own keys, read as that shape."""
    from self_instruct.store import as_rejection, rejected_instruction, rejection

    old = [
        {"stage": "bootstrap", "request": 3, "reason": "too_short", "instruction": "Do it."},
        {
            "stage": "classify",
            "id": "m1",
            "instruction": "Sort it.",
            "reason": "ambiguous_answer",
            "attempt": 1,
            "text": "Maybe",
        },
        {
            "stage": "instances",
            "id": "m2",
            "instruction": "Add.",
            "reason": "empty_output",
            "input": "2+2",
            "output": "",
        },
        {"stage": "dataset", "id": "m3", "instruction": "Nothing.", "reason": "no_instances"},
        {
            "stage": "merge",
            "reason": "too_similar",
            "run": "seed-1",
            "id": "m4",
            "instruction": "Same.",
            "most_similar": {"instruction": "Same!", "score": 1.0},
        },
    ]
    new = [as_rejection(r) for r in old]
    assert all(set(r) == {"stage", "key", "reason", "text", "details"} for r in new)
    assert [r["key"] for r in new] == [3, "m1", "m2", "m3", "seed-1/m4"]
    assert [rejected_instruction(r) for r in new] == ["Do it.", "Sort it.", "Add.", "Nothing.", "Same."]
    assert new[1]["text"] == "Maybe" and new[1]["details"]["attempt"] == 1
    assert new[2]["text"] == "2+2 => " and new[4]["details"]["most_similar"]["score"] == 1.0
    assert as_rejection(new[0]) is new[0]
    assert rejection("classify", "m1", "truncated", "Ye", instruction="Sort it.", attempt=0) == {
        "stage": "classify",
        "key": "m1",
        "reason": "truncated",
        "text": "Ye",
        "details": {"instruction": "Sort it.", "attempt": 0},
    }
