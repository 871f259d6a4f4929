import pytest

from self_instruct.filters import check_instance, check_instruction, filter_instances
from self_instruct.tasks import Instance


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Say hello now.", "too_short"),  # 3 words
        ("Say hello to me.", None),  # 4 words
        (" ".join(["word"] * 150), None),
        (" ".join(["word"] * 151), "too_long"),
        ("Describe the image below in detail.", "keyword:image"),
        ("Summarize these Files for a report.", "keyword:files"),
        ("Please go to the store and buy milk.", "keyword:go to"),
        ("Create a flowchart of the login process.", "keyword:flowchart"),
        ("Explain how a mapping function works here.", None),  # 'map' only on a word boundary
        ("Write a program that prints primes.", "write_a_program"),
        ("write a program to sort numbers quickly.", "write_a_program"),
        ("Write a poem about programs and code.", None),
        ("- List three colours of the rainbow.", "starts_with_punctuation"),
        ('"Quote" a famous line from a play.', "starts_with_punctuation"),
        ("Écrivez une phrase sur le printemps.", "starts_with_non_ascii"),
        ("", "empty"),
    ],
)
def test_instruction_filters(text, reason):
    assert check_instruction(text) == reason


@pytest.mark.parametrize(
    ("inst", "reason"),
    [
        (Instance("abc", "def"), None),
        (Instance("", "an output"), None),
        (Instance("in", ""), "empty_output"),
        (Instance("same", "same"), "input_equals_output"),
        (Instance("Sentence:", "x"), "ends_with_colon"),
        (Instance("x", "Answer:"), "ends_with_colon"),
    ],
)
def test_instance_rules(inst, reason):
    assert check_instance(inst) == reason


def test_conflicting_outputs_for_same_input_drop_the_task():
    kept, rejected = filter_instances([Instance("q", "a"), Instance("q", "b"), Instance("r", "c")])
    assert kept == []
    assert [why for _, why in rejected] == ["conflicting_outputs"] * 3


def test_no_input_tasks_may_have_many_outputs():
    kept, rejected = filter_instances([Instance("", "Name A"), Instance("", "Name B")])
    assert kept == [Instance("", "Name A"), Instance("", "Name B")]
    assert rejected == []


def test_duplicates_removed_and_cap_applied_with_reasons():
    insts = [Instance(str(i), f"out {i}") for i in range(7)] + [Instance("0", "out 0")]
    kept, rejected = filter_instances(insts, max_instances=5)
    assert kept == insts[:5]
    assert sorted(why for _, why in rejected) == ["duplicate_instance", "over_cap", "over_cap"]
