"""A recorded failure tells its whole story, as Python prints it: the exception it was raised from or while
handling another, an exception group's sub-exceptions; and a recursion's thousand frames are counted, not kept.

Each of these was lost (or, for recursion, kept 135 KB a failure three times over) in failed.jsonl, the log file
and the journal, where a user reads why an item failed the morning after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS

JOB = PROJECTS / "tracebacks" / "job.py"


def run(cli: Any, *params: str) -> Any:
    args = ["exec", JOB, "-d", "out", "--no-shell", "-p", "breaker_window=0"]
    for param in params:
        args += ["-p", param]
    return cli(*args)


def recorded(run_dir: Path) -> list[str]:
    """The traceback of each failure, from failed.jsonl; and each must be in the log file too."""
    tracebacks = [json.loads(line)["traceback"] for line in (run_dir / "failed.jsonl").read_text().splitlines()]
    log = (run_dir / "batchcli.log").read_text()
    for text in tracebacks:
        assert text in log
    return tracebacks


@pytest.mark.parametrize("executor", ["async", "process"])
def test_an_exception_raised_from_another_keeps_both(cli, executor: str) -> None:
    result = run(cli, "how=cause", f"executor={executor}", "workers=1")
    assert result.exit_code == 1, result.output
    for n, text in enumerate(sorted(recorded(result.run_dir))):
        cause = text.index(f"ConnectionRefusedError: db host refused item {n}")
        joint = text.index("The above exception was the direct cause of the following exception:")
        assert cause < joint < text.index("RuntimeError: could not enrich the item"), text
        assert text.count("Traceback (most recent call last):") == 2


def test_an_exception_raised_while_handling_another_keeps_both(cli) -> None:
    result = run(cli, "how=context")
    text = recorded(result.run_dir)[0]
    assert text.index("KeyError: 'email'") < text.index("During handling of the above exception") < text.index(
        "ValueError: the record is malformed"
    ), text


def test_an_exception_group_shows_what_it_holds(cli) -> None:
    """A TaskGroup's failure was only "ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)"."""
    result = run(cli, "how=group")
    text = recorded(result.run_dir)[0]
    group = text.index("ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)")
    assert group < text.index("  +---------------- 1 ----------------") < text.index("  | KeyError: 'email'"), text
    assert "in lookup" in text


def test_a_chain_that_holds_itself_ends(cli) -> None:
    result = run(cli, "how=cycle", "count=1")
    text = recorded(result.run_dir)[0]
    assert text.count("ValueError: first") == 1 and text.count("ValueError: second") == 1, text
    assert text.startswith("ValueError: second\n"), text  # never raised: no frames, so no "Traceback" header


def test_a_recursion_is_counted_not_kept_frame_by_frame(cli) -> None:
    result = run(cli, "how=recursion")
    text = recorded(result.run_dir)[0]
    assert text.count("in deeper") == 3, text[:2000]
    assert "more times]" in text and "RecursionError" in text
    assert len(text) < 2_000  # it was about 135,000 characters


def test_each_failure_names_its_own_code_when_code_objects_come_and_go(cli) -> None:
    """Frames' text is cached by the ids of their code objects: a freed one's id, taken by the next item's new
    function, must not bring back the earlier function's frames."""
    result = run(cli, "how=fresh_code", "count=300", "workers=1")
    assert result.exit_code == 1, result.output
    for text in recorded(result.run_dir):
        n = text.rsplit("ValueError: item ", 1)[1]
        assert f'File "<check {n}>", line 2, in check_{n}' in text, text


def test_a_source_that_breaks_raising_from_another_shows_both(cli) -> None:
    result = run(cli, "source_breaks=true", "how=none")
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 3, said
    assert "FileNotFoundError" in said and "next-page.csv" in said, said
    assert said.index("next-page.csv") < said.index("direct cause") < said.index("could not read the next page"), said


@pytest.mark.parametrize("executor", ["async", "process"])
def test_an_exception_group_of_retryable_errors_is_retried(cli, executor: str) -> None:
    """A process that fans out with a TaskGroup got a connection reset wrapped in an ExceptionGroup, which is not a
    ConnectionError: the item failed at once. A group all of whose exceptions are retryable is retried now; one that
    also holds a bad record fails at once, as the bad record alone would."""
    done = run(cli, "how=reset_in_group", f"executor={executor}", "workers=1", "backoff_s=0", "count=3")
    assert done.exit_code == 0, done.output
    assert done.summary["succeeded"] == 3
    mixed = run(cli, "how=reset_and_bad_in_group", f"executor={executor}", "workers=1", "backoff_s=0", "count=3")
    assert mixed.exit_code == 1, mixed.output
    assert [f["attempts"] for f in mixed.failed] == [1, 1, 1]


def test_an_exception_group_of_throttles_is_a_throttle(cli) -> None:
    """Every call of a fan-out refused for now: a throttle (retried without spending an attempt, after the longest
    Retry-After any asked), not a failure."""
    done = run(cli, "how=throttled_in_group", "max_retries=0", "count=2")
    assert done.exit_code == 0, done.output
    assert done.summary["succeeded"] == 2
    log = (done.run_dir / "batchcli.log").read_text()
    assert "0.4" in log and "throttl" in log.lower(), log

