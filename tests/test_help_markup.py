"""Text from docstrings, defaults, installed packages and batchcli itself reaches the terminal literally, never as rich markup."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS

MARKUP = PROJECTS / "help_markup"
JOB = MARKUP / "markup_job.py"


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that every row of the tables stays on one line."""
    monkeypatch.setenv("COLUMNS", "240")


def test_exec_help_shows_brackets_in_docstrings_and_defaults_literally(cli: Any) -> None:
    """exec PATH --help on docstrings holding [/], [bold] and [dask] prints them as written instead of crashing."""
    outcome = cli("exec", JOB, "--help")
    assert outcome.exit_code == 0, outcome.output
    assert "Traceback" not in outcome.output and "MarkupError" not in outcome.output
    assert "Prepended to each name, e.g. [bold]NAME[/] or [/] alone." in outcome.output
    assert "Keep names matching this; write [/] to close, [bold] to shout, like pip install 'x[dask]'." in outcome.output
    assert "[x]" in outcome.output and "[a-z]+" in outcome.output  # defaults, too


def test_builtin_executor_help_keeps_the_dask_extra(cli: Any) -> None:
    """The built-in executor field's help shows pip install 'batchcli[dask]', not 'batchcli'."""
    outcome = cli("exec", JOB, "--help")
    assert outcome.exit_code == 0, outcome.output
    text = " ".join(outcome.output.replace("│", " ").split())
    assert "pip install 'batchcli[dask]'" in text


def test_retry_help_shows_its_default(cli: Any) -> None:
    """retry --help shows '[default: RUN_DIR's]' for -d instead of swallowing it as a markup tag."""
    outcome = cli("retry", "--help")
    assert outcome.exit_code == 0, outcome.output
    assert "Directory that holds the run directories. [default: RUN_DIR's]" in outcome.output


def test_list_shows_brackets_in_an_installed_jobs_description(cli: Any, tmp_path: Path) -> None:
    """batchcli list prints an installed job's docstring with brackets literally."""
    info = tmp_path / "site" / "markup_jobs-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: markup-jobs\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[batchcli.jobs]\nmarkup = markup_job\n")
    sys.path[:0] = [str(tmp_path / "site"), str(MARKUP)]  # the isolated fixture restores sys.path
    outcome = cli("list")
    assert outcome.exit_code == 0, outcome.output
    assert "Traceback" not in outcome.output
    assert "which rich would read as markup: [/] [bold] [dask]." in outcome.output
