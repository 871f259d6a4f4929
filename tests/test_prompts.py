import re

import pytest

from self_instruct.parsing import (
    parse_classification,
    parse_input_first,
    parse_instructions,
    parse_output_first,
)
from self_instruct.prompts import (
    json_demos,
    render_bootstrap,
    render_classify,
    render_input_first,
    render_output_first,
    template,
    template_hashes,
)
from self_instruct.tasks import Instance


def parse(text, *, continuation=True, finish="stop", first=9, max_items=7):
    return parse_instructions(
        text, first_number=first, finish_reason=finish, continuation=continuation, max_items=max_items
    )


def test_render_bootstrap_numbers_items_and_ends_with_next_number():
    prompt = render_bootstrap(["Say hi.", "Count to  three\nslowly."])
    lines = prompt.splitlines()
    assert lines[0] == template("bootstrap").strip()
    assert lines[1:] == ["1. Say hi.", "2. Count to three slowly.", "3."]


def test_continuation_list_is_split_into_items():
    text = (
        " Plan a picnic for six people.\n10. Explain why the sky looks blue.\n11. Name three prime numbers."
    )
    assert parse(text).kept == [
        "Plan a picnic for six people.",
        "Explain why the sky looks blue.",
        "Name three prime numbers.",
    ]


def test_ragged_numbering_and_separators_are_accepted():
    text = (
        " First task here please.\n12) Second task here please.\n10 . Third task here please.\n3: Fourth one."
    )
    assert parse(text).kept == [
        "First task here please.",
        "Second task here please.",
        "Third task here please.",
        "Fourth one.",
    ]


def test_wrapped_item_lines_are_joined():
    text = " Write a short story about\na lighthouse keeper.\n10. Another task to do."
    assert parse(text).kept == ["Write a short story about a lighthouse keeper.", "Another task to do."]


def test_trailing_junk_after_blank_line_is_ignored():
    text = " Task one is this.\n10. Task two is this.\n\nI hope these tasks help you!"
    assert parse(text, continuation=False).kept == ["Task two is this."]  # chat: unnumbered preamble skipped
    assert parse(text).kept == ["Task one is this.", "Task two is this."]


def test_truncated_last_item_is_set_apart():
    text = " Complete task one.\n10. Complete task two.\n11. Incomplete ta"
    parsed = parse(text, finish="length")
    assert parsed.kept == ["Complete task one.", "Complete task two."]
    assert parsed.rejected == [("truncated", "Incomplete ta")]


def test_items_beyond_max_are_cut():
    text = " a1 b c.\n" + "\n".join(f"{n}. item {n} x y." for n in range(10, 20))
    parsed = parse(text, max_items=7)
    assert len(parsed.kept) == 7
    assert parsed.rejected == [("over_cap", f"Item {n} x y.") for n in range(16, 20)]


def test_chat_answer_with_preamble_markdown_and_closing_remark():
    text = (
        "Sure! Here are some more tasks:\n\n"
        "9. **Summarize the plot of a novel.**\n\n"
        "10. Task: translate a greeting into German.\n"
        "- 11. Rank four fruits by sweetness.\n"
        "* Suggest a name for a cat.\n\n"
        "Let me know if you need more!"
    )
    assert parse(text, continuation=False).kept == [
        "Summarize the plot of a novel.",
        "Translate a greeting into German.",
        "Rank four fruits by sweetness.",
        "Suggest a name for a cat.",
    ]


def test_first_letter_is_upper_cased_without_lowercasing_the_rest():
    assert parse(" convert 5 km to miles with NASA data.").kept == ["Convert 5 km to miles with NASA data."]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (" Yes", "yes"),
        ("Yes.", "yes"),
        (" yes, it is", "yes"),
        (" No", "no"),
        ("no", "no"),
        (" Maybe", "ambiguous"),
        ("", "ambiguous"),
    ],
)
def test_classification_answers(answer, expected):
    assert parse_classification(answer) == expected


def test_classify_prompt_ends_with_target():
    p = render_classify("Label the tweet as happy or sad.")
    assert p.startswith(template("classify"))
    assert p.endswith("Task: Label the tweet as happy or sad.\nClassification:")


def test_input_first_continuation_with_and_without_input():
    text = "Input: 2 + 2\nOutput: 4\nExample 2\nOutput: A fact with no input.\nExample 3\nInput: x\nOutput: y"
    parsed = parse_input_first(text, finish_reason="stop", continuation=True)
    assert parsed.kept == [
        Instance("2 + 2", "4"),
        Instance("", "A fact with no input."),
        Instance("x", "y"),
    ]


def test_input_first_multiline_fields_and_truncation():
    text = "Input: line one\nline two\nOutput: out one\nout two\nExample 2\nInput: cut\nOutput: cut sho"
    parsed = parse_input_first(text, finish_reason="length", continuation=True)
    assert parsed.kept == [Instance("line one\nline two", "out one\nout two")]
    assert parsed.rejected == [("truncated", "Example 2 Input: cut Output: cut sho")]


def test_input_first_chat_answer_repeating_the_task_and_using_bold_labels():
    text = (
        "Task: Add two numbers.\n"
        "**Example 1**\n**Input:** 3 and 4\n**Output:** 7\n\n"
        "Example 2:\nInput: 10 and 5\nOutput: 15\n"
        "Task: Something else entirely."
    )
    parsed = parse_input_first(text, finish_reason="stop", continuation=False)
    assert parsed.kept == [Instance("3 and 4", "7"), Instance("10 and 5", "15")]
    assert parsed.rejected == [
        ("prompt_echo", "Task: Add two numbers."),
        ("next_task", "Task: Something else entirely."),
    ]


def test_input_first_chunk_without_output_is_unparsable():
    parsed = parse_input_first(
        "Input: only input\nExample 2\nOutput: ok", finish_reason="stop", continuation=True
    )
    assert parsed.kept == [Instance("", "ok")]
    assert parsed.rejected == [("unparsable", "Input: only input")]


def test_output_first_pairs():
    text = " Positive\nInput: I love it.\nClass label: Negative\nInput: I hate it.\nClass label: Neutral"
    parsed = parse_output_first(text, finish_reason="stop", continuation=True)
    # A label with nothing after it is a label-only class: an empty input, as in the reference.
    assert parsed.kept == [
        Instance("I love it.", "Positive"),
        Instance("I hate it.", "Negative"),
        Instance("", "Neutral"),
    ]


def test_output_first_chat_answer():
    text = (
        "Task: Is it spam?\nClass label: Spam\nInput: WIN A PRIZE now\nline 2\n\n"
        "Class label: Not spam\nInput: See you at 5."
    )
    parsed = parse_output_first(text, finish_reason="stop", continuation=False)
    assert parsed.kept == [
        Instance("WIN A PRIZE now\nline 2", "Spam"),
        Instance("See you at 5.", "Not spam"),
    ]


def _demo_blocks(name):
    body = template(name).split("\n\n", 1)[1]
    return [b for b in body.split("\n\n") if b.strip()]


def test_classify_template_has_about_thirty_demos_with_both_answers():
    answers = [b.splitlines()[-1] for b in _demo_blocks("classify")]
    assert 28 <= len(answers) <= 34
    assert set(answers) == {"Classification: Yes", "Classification: No"}
    assert 10 <= answers.count("Classification: Yes") <= 14


def test_input_first_template_demos_parse_with_our_parser():
    blocks = _demo_blocks("instances_input_first")
    assert 9 <= len(blocks) <= 13
    for block in blocks:
        task, rest = block.split("\n", 1)
        assert task.startswith("Task: ") and rest.startswith("Example 1\n")
        parsed = parse_input_first(rest.split("\n", 1)[1], finish_reason="stop", continuation=True)
        assert parsed.kept and not parsed.rejected
        assert len(parsed.kept) == len(re.findall(r"^Example \d+$", rest, re.M))


def test_output_first_template_demos_parse_with_our_parser():
    blocks = _demo_blocks("instances_output_first")
    assert 14 <= len(blocks) <= 18
    for block in blocks:
        rest = block.split("\n", 1)[1]
        assert rest.startswith("Class label:")
        parsed = parse_output_first(rest[len("Class label:") :], finish_reason="stop", continuation=True)
        assert len(parsed.kept) >= 2 and not parsed.rejected
        assert len({i.output for i in parsed.kept}) >= 2  # several labels per task


def test_instance_prompts_end_where_the_model_continues():
    assert render_input_first("Do X.").endswith("\n\nTask: Do X.\nExample 1\n")
    assert render_output_first("Tag Y.").endswith("\n\nTask: Tag Y.\nClass label:")


def test_template_hashes_cover_every_template():
    hashes = template_hashes()
    assert set(hashes) == {
        "bootstrap",
        "bootstrap_json",
        "classify",
        "instances_input_first",
        "instances_output_first",
    }
    assert len(set(hashes.values())) == 5


@pytest.mark.parametrize("name", ["classify", "instances_input_first", "instances_output_first"])
def test_structured_prompts_show_every_demo_as_json(name):
    head, demos = json_demos(name)
    assert head == template(name).split("\n\n", 1)[0]
    assert len(demos) == len(_demo_blocks(name))
    for _, obj in demos:
        if name == "classify":
            assert obj["answer"] in ("Yes", "No")
        else:
            assert obj["examples"] and all(
                all(v.strip() or k == "input" for k, v in e.items()) for e in obj["examples"]
            )


def test_a_chat_model_gluing_shown_tasks_together_is_an_echo():
    shown = [
        "Recommend five habits that can help an adult fall asleep more easily.",
        "Explain what this Python error means and how to fix it.",
        "Sort it.",
    ]
    text = (
        "1. Recommend five habits that can help an adult fall asleep more easily: 3, Explain what this "
        "Python error means and how to fix it:\n2. Sort it out by colour and size please.\n"
        "3. Plan a garden for a shady balcony."
    )
    parsed = parse_instructions(
        text, first_number=9, finish_reason="stop", continuation=False, max_items=7, shown=shown
    )
    assert parsed.kept == ["Sort it out by colour and size please.", "Plan a garden for a shady balcony."]
    assert [r[0] for r in parsed.rejected] == ["prompt_echo"]
