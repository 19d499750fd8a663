"""`batchcli exec PATH --help` lists a job's params and configuration fields; completion knows them too."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS, subprocess_env
from joblog import wait_for

NESTED = PROJECTS / "ux_nested"
TYPES = PROJECTS / "ux_types" / "job.py"
BROKEN = PROJECTS / "ux_broken" / "job.py"


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that every row of the tables stays on one line."""
    monkeypatch.setenv("COLUMNS", "220")


def row(output: str, name: str) -> list[str]:
    """The cells of the table row for ``name``, split at runs of two or more spaces."""
    for line in output.splitlines():
        cells = [c for c in re.split(r"\s{2,}", line.strip(" │")) if c]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name!r} in:\n{output}")


def test_plain_exec_help_still_works(cli: Any) -> None:
    """exec --help without a PATH is typer's help, options and environment prefix included."""
    outcome = cli("exec", "--help")
    assert outcome.exit_code == 0
    assert "--param" in outcome.output and "--config" in outcome.output
    assert "BATCHCLI_<NAME>" in outcome.output
    assert "Params of" not in outcome.output


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("resume", "batchcli resume [OPTIONS] RUN_DIR"),
        ("retry", "batchcli retry [OPTIONS] RUN_DIR"),
        ("show", "batchcli show [OPTIONS] RUN_DIR"),
        ("ctl", "batchcli ctl [OPTIONS] RUN_DIR COMMAND..."),
        ("exec", "batchcli exec [OPTIONS] [PATH]"),
    ],
)
def test_usage_lines_name_arguments_without_placeholder_braces(cli: Any, command: str, usage: str) -> None:
    """A command's usage line names a required argument as RUN_DIR, never typer's ``{run_dir}``."""
    outcome = cli(command, "--help")
    assert outcome.exit_code == 0, outcome.output
    assert usage in outcome.output
    assert not re.search(r"\{\w+\}", outcome.output), outcome.output


def test_exec_without_path_is_still_a_usage_error(cli: Any) -> None:
    """exec with no PATH and no --help exits 2 saying PATH is missing."""
    outcome = cli("exec")
    assert outcome.exit_code == 2
    assert "Missing argument 'PATH'" in outcome.output


@pytest.mark.parametrize("command", ["show", "resume", "retry", "results", "watch"])
def test_a_missing_run_dir_is_named_as_the_usage_line_names_it(cli: Any, command: str) -> None:
    """A command without its RUN_DIR says ``Missing argument 'RUN_DIR'``, as its usage line spells it."""
    outcome = cli(command)
    assert outcome.exit_code == 2
    assert "Missing argument 'RUN_DIR'" in outcome.output, outcome.output


def test_help_lists_params_with_type_default_and_args_description(cli: Any) -> None:
    """Params show their type, default or 'required', and the Args: description (continuation lines joined)."""
    outcome = cli("exec", NESTED, "-c", "config_dev", "--help")
    assert outcome.exit_code == 0, outcome.output
    assert "--param" in outcome.output  # typer's own help comes first
    assert row(outcome.output, "table") == ["table", "str", "required", "The table to read them from, spelled as in the database."]
    assert row(outcome.output, "rows") == ["rows", "int", "3", "How many rows to copy."]


def test_help_lists_nested_fields_with_docstrings_and_comments(cli: Any) -> None:
    """Configuration fields, nested ones dotted, show the chosen configuration's defaults and their descriptions."""
    outcome = cli("exec", NESTED, "-c", "config_dev", "--help")
    assert "Fields of DevConfig (-c config_dev" in outcome.output
    assert row(outcome.output, "db.host") == ["db.host", "str", "localhost", "The database server."]
    assert row(outcome.output, "db.port") == ["db.port", "int", "6543"]
    assert row(outcome.output, "db.pool.timeout") == ["db.pool.timeout", "duration", "30s", "how long to wait for a free connection"]
    assert row(outcome.output, "cache.url") == ["cache.url", "str", "required", "Where the cache listens."]
    assert row(outcome.output, "label") == ["label", "str", "sync", "stored with every copied row"]
    assert row(outcome.output, "concurrency")[:3] == ["concurrency", "int", "10"]


def test_help_without_c_asks_for_one_when_there_are_several(cli: Any) -> None:
    """Without -c a project with several configurations still lists params and says how to see the fields."""
    outcome = cli("exec", NESTED, "--help")
    assert outcome.exit_code == 0
    assert row(outcome.output, "rows")[:3] == ["rows", "int", "3"]
    text = " ".join(outcome.output.split())
    assert "several configurations (config_dev, config_prod)" in text
    assert "Add -c NAME to --help to list its fields." in text


def test_help_describes_every_type(cli: Any) -> None:
    """Each param type is named in words, with defaults as they would be typed."""
    outcome = cli("exec", TYPES, "--help")
    assert row(outcome.output, "wait")[1:3] == ["duration", "1s"]
    assert row(outcome.output, "mode")[1:3] == ["one of 'fast', 'slow'", "fast"]
    assert row(outcome.output, "ids")[1:3] == ["list of int", "(empty)"]
    assert row(outcome.output, "limits")[1:3] == ["dict of str to int", "(empty)"]
    assert row(outcome.output, "pair")[1:3] == ["tuple (int, str) or none", "none"]
    assert row(outcome.output, "flag")[1:3] == ["bool", "false"]


def test_help_for_a_project_that_fails_to_load(cli: Any) -> None:
    """A project that cannot load still prints the normal help, then the load error, and exits 2."""
    outcome = cli("exec", BROKEN, "--help")
    assert outcome.exit_code == 2
    assert "--param" in outcome.output
    assert "BROKEN_ON_PURPOSE" in outcome.output


SLOW_IMPORT = """
import time
from pathlib import Path

Path({marker!r}).touch()
time.sleep(60)  # a network share, a database driver that connects at import
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_help_while_the_project_loads(tmp_path: Path, signum: signal.Signals) -> None:
    """`exec PATH --help` runs the project's imports to list its params: Ctrl-C or SIGTERM there ends it at once
    (exit 130 or 143, one line). The start-up handler used to keep both until the import was done."""
    marker = tmp_path / "importing"
    job = tmp_path / "slow_job.py"
    job.write_text(SLOW_IMPORT.format(marker=str(marker)))
    proc = subprocess.Popen([sys.executable, "-m", "batchcli", "exec", str(job), "--help"], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(marker.exists, "the project's import to start")
        proc.send_signal(signum)
        said = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, said
    assert f"Stopped: {signum.name} ended `batchcli exec --help` before it finished." in said
    assert "Traceback" not in said


def test_help_with_an_unknown_configuration_names_the_choices(cli: Any) -> None:
    """--help with a wrong -c says which configurations exist."""
    outcome = cli("exec", NESTED, "-c", "config_qa", "--help")
    assert outcome.exit_code == 2
    said = " ".join(outcome.output.split())
    assert "Unknown configuration 'config_qa' (did you mean 'config_dev'?): there is no config/config_qa.py. " \
        "Available: config_dev, config_prod." in said, said


def test_a_mistyped_configuration_is_named_with_a_guess_not_hidden_by_a_broken_sibling(cli: Any, tmp_path: Path) -> None:
    """-c config_dve in a project whose config/ also holds a module that does not import: the error was that
    module's ImportError, and the typo went unmentioned. Now the typo, with the closest name."""
    project = tmp_path / "proj"
    shutil.copytree(NESTED, project)
    (project / "config" / "config_broken.py").write_text("import no_such_module_here\n")
    outcome = cli("exec", project, "-c", "config_dve")
    said = " ".join(outcome.output.split())
    assert outcome.exit_code == 2 and "Unknown configuration 'config_dve' (did you mean 'config_dev'?)" in said, said
    assert "no_such_module_here" not in said and "Traceback" not in said


def complete(*words: str) -> list[str]:
    """Ask a real `python -m batchcli` process for bash completions of ``words`` (the last one incomplete)."""
    env = subprocess_env(_BATCHCLI_COMPLETE="complete_bash", COMP_WORDS=" ".join(["batchcli", *words]), COMP_CWORD=str(len(words)))
    proc = subprocess.run([sys.executable, "-m", "batchcli"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout.split()


def test_completion_offers_param_names_after_p() -> None:
    """Completing after -p offers the project's params and fields as name=, filtered by what is typed."""
    names = complete("exec", str(NESTED), "-c", "config_dev", "-p", "")
    assert "table=" in names and "db.pool.size=" in names and "concurrency=" in names
    assert complete("exec", str(NESTED), "-c", "config_dev", "-p", "db.p") == ["db.port=", "db.pool.size=", "db.pool.timeout="]


def test_completion_offers_configuration_names() -> None:
    """Completing after -c offers the project's configurations."""
    assert complete("exec", str(NESTED), "-c", "") == ["config_dev", "config_prod"]


def test_completion_never_breaks_on_a_project_that_cannot_load() -> None:
    """A broken, missing or absent PATH completes nothing, without an error."""
    assert complete("exec", str(BROKEN), "-p", "") == []
    assert complete("exec", "no/such/path", "-p", "") == []
    assert complete("exec", "-p", "") == []
