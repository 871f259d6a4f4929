"""What `self-instruct view` tells Datasette: the tables' columns (their order, type and description),
facets, full-text search, and the canned queries that answer the questions a run raises.

The column lists here are the schema: database.py creates every table from them, so a table exists with
all its columns even when no run has a row for it, and a row with a column not listed here fails.
"""

from __future__ import annotations

import html
from typing import Any

INT, FLOAT, BOOL, TEXT = int, float, bool, str

RUN = ("run", TEXT, "the run directory the row comes from (its name; parent folders added where two clash)")

# table -> (description, primary key, facets, columns as (name, type, description))
TABLES: dict[str, tuple[str, list[str] | None, list[str], list[tuple]]] = {
    "runs": (
        "One row per run directory: what its manifest.json says (a merged batch directory has less).",
        ["run"],
        [],
        [
            RUN,
            ("path", TEXT, "the run directory on disk"),
            ("kind", TEXT, "run, or merged (a batch's merged directory)"),
            ("run_name", TEXT, "the run_name setting"),
            ("model", TEXT, "the model that answered"),
            ("backend", TEXT, "local, openai, ..."),
            ("api", TEXT, "completions or chat"),
            ("classify_method", TEXT, "greedy (the reference rule) or calibrated"),
            ("structured", BOOL, "answers constrained to a JSON schema"),
            ("random_seed", INT, "the seed setting"),
            ("target", INT, "machine instructions asked for"),
            ("created", TEXT, "first session's start (UTC)"),
            ("updated", TEXT, "last manifest write (UTC)"),
            ("machine_instructions", INT, "accepted machine instructions, as the manifest counts them"),
            ("dataset_tasks", INT, "tasks in tasks.jsonl, as the manifest counts them"),
            ("dataset_rows", INT, "rows of dataset.jsonl, as the manifest counts them"),
            ("rejected", INT, "lines of rejected.jsonl, as the manifest counts them"),
            ("failures_outstanding", INT, "failed requests whose work is still undone"),
            ("tokens", INT, "prompt + completion tokens over every session"),
            ("cost_usd", FLOAT, "estimated cost over every session (0 when no price is known)"),
            ("wall_seconds", FLOAT, "time spent over every session"),
            ("merged_from", TEXT, "a merged directory: the runs it merges (JSON list)"),
            ("report", TEXT, "the run's analysis report, when one was found in its directory"),
        ],
    ),
    "instructions": (
        "Accepted machine instructions (machine_instructions.jsonl) with their classification and the 10 "
        "most similar instructions of the pool when they were accepted.",
        ["run", "id"],
        ["run", "is_classification", "classify_method"],
        [
            RUN,
            ("id", TEXT, "machine_N, in order of acceptance"),
            ("instruction", TEXT, "the instruction as accepted"),
            ("request", INT, "the bootstrap request whose answer held it (responses: stage bootstrap)"),
            ("is_classification", BOOL, "the classify stage's decision (empty: not classified yet)"),
            ("classify_answer", TEXT, "the model's answer to the classification prompt"),
            ("classify_method", TEXT, "greedy or calibrated"),
            ("margin", FLOAT, "calibrated: log P(yes) - log P(no)"),
            ("nearest", TEXT, "the most similar pool entry (seed or earlier instruction) at acceptance"),
            ("nearest_score", FLOAT, "its ROUGE-L F-measure (at most 0.7, or it would have been rejected)"),
            ("most_similar", TEXT, "the 10 most similar pool entries with their scores (JSON)"),
        ],
    ),
    "tasks": (
        "The run's tasks (tasks.jsonl): accepted instructions with at least one kept instance.",
        ["run", "id"],
        ["run", "is_classification"],
        [
            RUN,
            ("id", TEXT, "the instruction's id (a merged directory: source run/id)"),
            ("instruction", TEXT, "the instruction"),
            ("is_classification", BOOL, "classification task (its instances were written output-first)"),
            ("n_instances", INT, "kept instances"),
            ("instances", TEXT, "the kept instances (JSON)"),
        ],
    ),
    "instances": (
        "One row per dataset row (dataset.jsonl): each task's kept instances. Full-text search covers "
        "instruction, input and output.",
        None,
        ["run", "is_classification", "method", "rating"],
        [
            RUN,
            ("task_id", TEXT, "the task's id (tasks, instructions)"),
            ("n", INT, "the instance's place among its task's instances"),
            ("instruction", TEXT, "the task's instruction"),
            ("input", TEXT, "the instance's input (empty: the task needs none)"),
            ("output", TEXT, "the instance's output (output-first: the class label)"),
            ("is_classification", BOOL, "classification task"),
            ("method", TEXT, "input_first or output_first"),
            ("source_run", TEXT, "the run whose answer holds this instance (a merged row: its source run)"),
            ("source_id", TEXT, "the task's id in that run"),
            ("rating", TEXT, "quality.judge's rating, A (best) to D (empty: the run was not judged)"),
        ],
    ),
    "rejected": (
        "Everything a stage dropped, with the reason (rejected.jsonl): instructions, parts of answers, "
        "instances, tasks left without instances.",
        None,
        ["run", "stage", "reason"],
        [
            RUN,
            ("stage", TEXT, "bootstrap, classify, instances, dataset, or merge"),
            ("reason", TEXT, "why it was dropped (too_similar, keyword:draw, duplicate_instance, ...)"),
            ("instruction", TEXT, "the rejected instruction, or the instruction a rejected part belongs to"),
            ("blocked_by", TEXT, "too_similar: the pool entry it was too close to"),
            ("score", FLOAT, "too_similar: ROUGE-L F-measure against that entry (above the threshold)"),
            ("text", TEXT, "a rejected part of an answer, or an unusable classification answer"),
            ("input", TEXT, "a rejected instance's input"),
            ("output", TEXT, "a rejected instance's output"),
            ("id", TEXT, "the instruction's id (classify, instances, dataset)"),
            ("request", INT, "the bootstrap request whose answer held it"),
            ("attempt", INT, "classify: which answer for this instruction it was"),
            ("source_run", TEXT, "merge: the run the dropped task came from"),
            ("detail", TEXT, "any other field of the record (JSON)"),
        ],
    ),
    "failures": (
        "Requests that failed after their retries (failures.jsonl, the whole history; a later run retries "
        "them).",
        None,
        ["run", "stage"],
        [
            RUN,
            ("stage", TEXT, "the stage that sent the request"),
            ("key", TEXT, "the instruction's id, or the bootstrap request number"),
            ("error", TEXT, "the last error"),
            ("attempts", INT, "attempts sent"),
            ("prompt_sha256", TEXT, "the prompt's hash (first 16 hex digits)"),
        ],
    ),
    "responses": (
        "The model's raw answers as the stages kept them: bootstrap requests (bootstrap_requests.jsonl), "
        "classification answers (classifications.jsonl), instance answers (instances.jsonl). Unusable "
        "classification answers are in rejected (stage classify, column text).",
        None,
        ["run", "stage", "method", "finish_reason"],
        [
            RUN,
            ("stage", TEXT, "bootstrap, classify or instances"),
            ("key", TEXT, "bootstrap: the request number; otherwise the instruction's id"),
            ("instruction", TEXT, "the instruction asked about (classify, instances)"),
            ("method", TEXT, "classify: greedy or calibrated; instances: input_first or output_first"),
            ("finish_reason", TEXT, "stop, or length when cut off by max_tokens"),
            ("text", TEXT, "the answer as the model wrote it"),
            ("kept", INT, "bootstrap: instructions accepted from it; instances: instances kept"),
            ("error", TEXT, "bootstrap: the request's error, if it failed"),
        ],
    ),
    "unread": (
        "Lines of the run files that could not be read, so no other table holds them: a torn last line "
        "(a write cut short by a kill) or a line that is not a JSON object. Every other line is read.",
        None,
        ["run", "file"],
        [
            RUN,
            ("file", TEXT, "the run file (tasks.jsonl, rejected.jsonl, ...)"),
            ("line", INT, "the line's number in that file"),
            ("why", TEXT, "what is wrong with it"),
        ],
    ),
}

FTS = {
    "instances": ["instruction", "input", "output"],
    "instructions": ["instruction"],
    "tasks": ["instruction"],
    "rejected": ["instruction", "input", "output", "text"],
}
INDEXES = [
    ("instances", ["source_run", "source_id"]),
    ("rejected", ["run", "stage", "reason"]),
    ("rejected", ["run", "stage", "id"]),
    ("responses", ["run", "stage", "key"]),
]


def _item(t: str) -> str:
    """SQL for what a rejected row dropped, in one field: the text, the instance, or the instruction."""
    instance = f"'Input: ' || coalesce({t}.input, '') || char(10) || 'Output: ' || coalesce({t}.output, '')"
    return (
        f"coalesce({t}.text, case when {t}.input is not null or {t}.output is not null then {instance} end, "
        f"{t}.instruction)"
    )


# Every query takes an optional :run (empty: all runs).
QUERIES = {
    "rejections_by_reason": (
        "Rejections by stage and reason, with examples",
        "How many records each stage dropped for each reason, per run, with the first three of each.",
        """
select r.run, r.stage, r.reason, count(*) as rejected,
  (select group_concat(substr(e.item, 1, 200), char(10) || '---' || char(10))
     from (select {item_e} as item from rejected e
           where e.run = r.run and e.stage = r.stage and e.reason = r.reason limit 3) e) as examples
from rejected r
where :run = '' or r.run = :run
group by r.run, r.stage, r.reason
order by r.run, rejected desc, r.stage, r.reason
""",
    ),
    "near_duplicates": (
        "Near-duplicates and the neighbour that blocked them",
        "Instructions rejected as too similar (ROUGE-L above the threshold), side by side with the pool "
        "entry that blocked each, most similar first.",
        """
select run, stage, instruction as rejected_instruction, blocked_by, round(score, 3) as score, source_run
from rejected
where reason = 'too_similar' and (:run = '' or run = :run)
order by score desc, run, rowid
""",
    ),
    "tasks_without_instances": (
        "Accepted instructions that got no instance, with the raw answer",
        "Why each accepted instruction is missing from the dataset: not classified, no instance answer "
        "yet (a failed request), or answered with nothing kept; the model's answer and what was rejected "
        "from it.",
        """
select i.run, i.id, i.instruction, i.is_classification,
  case when a.key is not null then 'answered, nothing kept'
       when i.is_classification is null then 'not classified'
       else 'no instance answer yet' end as status,
  a.method, a.finish_reason, a.text as raw_answer,
  (select group_concat(x.reason || ': ' || substr({item_x}, 1, 200), char(10)) from rejected x
     where x.run = i.run and x.stage in ('instances', 'classify') and x.id = i.id) as rejected_parts,
  (select group_concat(f.error, char(10)) from failures f
     where f.run = i.run and f.key = i.id) as failed_requests
from instructions i
left join responses a on a.run = i.run and a.stage = 'instances' and a.key = i.id
where not exists (select 1 from tasks t where t.run = i.run and t.id = i.id)
  and (:run = '' or i.run = :run)
order by i.run, i.rowid
""",
    ),
    "answer_behind_row": (
        "The answer behind a dataset row",
        "Each dataset row next to the model's whole answer it was parsed from. q: words of the "
        "instruction, input or output (empty: every row).",
        """
select i.run, i.task_id, i.n, i.instruction, i.input, i.output, i.method,
  a.finish_reason, a.text as raw_answer, a.run as answer_run
from instances i
left join responses a on a.run = i.source_run and a.stage = 'instances' and a.key = i.source_id
where (:run = '' or i.run = :run)
  and (:q = '' or i.instruction like '%' || :q || '%' or i.input like '%' || :q || '%'
       or i.output like '%' || :q || '%')
order by i.run, i.rowid
""",
    ),
    "runs_compared": (
        "Runs compared",
        "Per run: instructions, classification tasks, tasks, instances, empty inputs, rejections, "
        "near-duplicates, failed requests, tokens, cost and time, counted from the tables.",
        """
select r.run, r.kind, r.model, r.classify_method,
  (select count(*) from instructions x where x.run = r.run) as instructions,
  (select count(*) from instructions x where x.run = r.run and x.is_classification) as classification,
  (select count(*) from tasks x where x.run = r.run) as tasks,
  (select count(*) from instances x where x.run = r.run) as instances,
  (select count(*) from instances x where x.run = r.run and x.input = '') as empty_inputs,
  (select count(*) from rejected x where x.run = r.run) as rejected,
  (select count(*) from rejected x where x.run = r.run and x.reason = 'too_similar') as too_similar,
  (select count(*) from failures x where x.run = r.run) as failed_requests,
  r.tokens, r.cost_usd, r.wall_seconds
from runs r
where :run = '' or r.run = :run
order by r.run
""",
    ),
}


def _sql(text: str) -> str:
    return text.strip().format(item_e=_item("e"), item_x=_item("x"))


def schema(table: str) -> dict[str, type]:
    return {name: typ for name, typ, _ in TABLES[table][3]}


def primary_key(table: str) -> list[str] | None:
    return TABLES[table][1]


def _home_html(labels: list[str], reports: dict[str, str], unread: int) -> str:
    runs = ", ".join(html.escape(label) for label in labels)
    parts = [f"<p>Run directories: {runs}. Every table has a <code>run</code> column.</p>"]
    if unread:
        parts.append(
            f"<p>{unread} line(s) of the run files could not be read (a torn last line, or a line "
            "that is not a JSON object) and are in no table but <code>unread</code>.</p>"
        )
    if reports:
        links = ", ".join(
            f'<a href="{html.escape(url)}">{html.escape(label)}</a>' for label, url in reports.items()
        )
        parts.append(f"<p>Analysis report: {links}.</p>")
    return "\n".join(parts)


def metadata(database: str, labels: list[str], reports: dict[str, str], unread: int) -> dict:
    """Datasette's metadata for the database of these runs; ``reports``: run label -> report URL;
    ``unread``: how many lines of the run files the tables left out."""
    tables: dict[str, dict[str, Any]] = {
        name: {
            "description": description,
            "columns": {col: text for col, _, text in columns},
            **({"facets": facets} if facets else {}),
        }
        for name, (description, _, facets, columns) in TABLES.items()
    }
    tables["_meta"] = {"hidden": True}
    queries = {
        name: {"title": title, "description": description, "sql": _sql(sql)}
        for name, (title, description, sql) in QUERIES.items()
    }
    home = _home_html(labels, reports, unread)
    return {
        "title": "self-instruct: " + ", ".join(labels),
        "description_html": home,
        "databases": {database: {"description_html": home, "tables": tables, "queries": queries}},
    }
