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
