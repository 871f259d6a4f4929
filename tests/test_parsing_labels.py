"""Labels a model writes that are ours, not its content: 'Task N:' before a new instruction, and our
'Class label:' cue repeated before a class label (issue 18, "labels"). The answer corpus
(tests/data/answers/) holds whole answers of these kinds; these tests pin the rules at their edges.
"""

from __future__ import annotations

import pytest

from self_instruct.parsing import (
    bare_label,
    clean_instruction,
    parse_input_first,
    parse_instructions,
    parse_output_first,
)
from self_instruct.prompts import template
from self_instruct.tasks import Instance


def instructions(text: str, *, continuation: bool):
    return parse_instructions(
        text,
        first_number=9,
        finish_reason="stop",
        continuation=continuation,
        max_items=7,
        header=template("bootstrap"),
    )


LABELLED = [
    "Task 10: Write a haiku about rain.",
    "Task 10. Write a haiku about rain.",
    "Task 10) Write a haiku about rain.",
    "Task 10 - Write a haiku about rain.",
    "task 10: write a haiku about rain.",
    "TASK #10: Write a haiku about rain.",
    "**Task 10:** Write a haiku about rain.",
    "**Task 10**: Write a haiku about rain.",
    "__Task 10.__ Write a haiku about rain.",
    "**Task 10: Write a haiku about rain.**",
    "Instruction 10: Write a haiku about rain.",
    "New task 10: Write a haiku about rain.",
    "### Task 10: Write a haiku about rain.",
]


@pytest.mark.parametrize("line", LABELLED)
@pytest.mark.parametrize("continuation", [True, False], ids=["completions", "chat"])
def test_a_labelled_line_is_an_item_of_its_own_without_its_label(line, continuation):
    first = " Convert" if continuation else "Task 9: Convert"  # a continuation follows our '9.'
    got = instructions(f"{first} 200 grams to ounces.\n{line}\n", continuation=continuation)
    assert got.kept == ["Convert 200 grams to ounces.", "Write a haiku about rain."]
    assert got.rejected == []


def test_a_task_heading_alone_takes_the_lines_below_it():
    text = "**Task 9**\nWrite a haiku\nabout rain.\n**Task 10:**\nName a bird.\n"
    got = instructions(text, continuation=False)
    assert got.kept == ["Write a haiku about rain.", "Name a bird."]


@pytest.mark.parametrize(
    "line",
    [
        "Task 10 is to write a haiku about rain.",  # no label: a sentence about a task
        "Tasks 10: write a haiku about rain.",
        "Taskmaster 10: write a haiku about rain.",
        "Task: write a haiku about rain.",  # no number: in the middle of an item, a wrapped line
    ],
)
def test_other_lines_that_mention_a_task_still_wrap_the_item(line):
    got = instructions(f" Convert 200 grams to ounces.\n{line}\n", continuation=True)
    assert len(got.kept) == 1 and got.kept[0].startswith("Convert 200 grams to ounces. Task")


def test_a_preamble_that_mentions_tasks_is_still_a_preamble():
    got = instructions(
        "Task: continue the list with new tasks.\nHere is task 9 onward:\n\nTask 9: Name a bird.\n",
        continuation=False,
    )
    assert got.kept == ["Name a bird."]
    assert got.rejected == [("preamble", "Task: continue the list with new tasks. Here is task 9 onward:")]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Task 9: Name a bird.", "Name a bird."),
        ("Task 9. Name a bird.", "Name a bird."),
        ("**Task 9**: Name a bird.", "Name a bird."),
        ("Instruction 9) name a bird.", "Name a bird."),
        ("Task: Name a bird.", "Name a bird."),
        ("Task 9 is to name a bird.", "Task 9 is to name a bird."),
        ("Task force: name a bird.", "Task force: name a bird."),
    ],
)
def test_clean_instruction_removes_a_task_label_with_or_without_number(text, want):
    """The clean-up of an item's text (and of a JSON string) knows the same labels as the list."""
    assert clean_instruction(text) == want


@pytest.mark.parametrize(
    "value",
    [
        "Fact",
        "Class label: Fact",
        "class label: Fact",
        "CLASS LABEL:Fact",
        "Class label 2: Fact",
        "**Class label:** Fact",
        "**Class label**: Fact",
        "__Class label:__ Fact",
        "**Class label: Fact**",
        "Class label: **Fact**",
    ],
)
def test_our_class_label_cue_repeated_is_not_part_of_the_label(value):
    assert bare_label(value) == "Fact"


@pytest.mark.parametrize(
    "value", ["Sentiment: Positive", "Category: Fact", "Class labels: Fact", "Labelled: Fact"]
)
def test_other_names_before_a_colon_stay_in_the_label(value):
    assert bare_label(value) == value


def test_output_first_continuation_repeating_the_cue_gives_bare_labels():
    text = " class label: Fact\nInput: Water boils at 100 °C.\nClass label: Opinion\nInput: Tea is nicer.\n"
    got = parse_output_first(text, finish_reason="stop", continuation=True)
    assert got.kept == [
        Instance("Water boils at 100 °C.", "Fact"),
        Instance("Tea is nicer.", "Opinion"),
    ]


def test_leading_blank_lines_of_a_continuation_are_no_example_of_their_own():
    """A continuation that breaks the line after our cue starts with its first example: the blank
    lines go with it, as blank lines before a first part always do, and nothing is rejected."""
    text = "\n\nExample 2\nInput: 2 + 2\nOutput: 4\n"
    got = parse_input_first(text, finish_reason="stop", continuation=True)
    assert got.kept == [Instance("2 + 2", "4")]
    assert got.rejected == []
    assert "".join(p.raw for p in got.parts) == text
