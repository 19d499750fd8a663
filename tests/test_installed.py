"""Installed jobs: found through the batchcli.jobs entry-point group, listed, run by name; paths win over names."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS, ROOT

PACKAGE_DIR = PROJECTS / "ux_installed"

ENTRY_POINTS = """\
[batchcli.jobs]
squares = ux_demo_jobs.squares
ghost = ux_demo_jobs.no_such_module
needy = ux_demo_jobs.needs_missing
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A directory holding the dist-info of an installed distribution that registers two jobs."""
    site = tmp_path / "site"
    info = site / "ux_demo_jobs-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ux-demo-jobs\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


@pytest.fixture
def installed(site: Path) -> Path:
    """The distribution importable in this process (importlib.metadata scans sys.path)."""
    sys.path[:0] = [str(site), str(PACKAGE_DIR)]
    return site


def child_env(site: Path) -> dict[str, str]:
    """For a child process: batchcli, the dist-info and the package on PYTHONPATH."""
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(site), str(PACKAGE_DIR)])}


def squares(outcome: Any) -> list[str]:
    assert outcome.run_dir is not None, outcome.output
    return (outcome.run_dir / "squares.txt").read_text().split("\n")[:-1]


def test_list_shows_each_job_with_module_package_and_description(cli: Any, installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """batchcli list names every installed job, its module, its distribution and its docstring's first line."""
    monkeypatch.setenv("COLUMNS", "200")
    outcome = cli("list")
    assert outcome.exit_code == 0
    line = next(line for line in outcome.output.splitlines() if line.startswith("squares"))
    assert line.split()[:3] == ["squares", "ux_demo_jobs.squares", "ux-demo-jobs"]
    assert "Squares numbers and writes them down: an installed demo job." in line
    ghost = next(line for line in outcome.output.splitlines() if line.startswith("ghost"))
    assert "module not found: reinstall the package that provides it" in ghost


def test_list_without_jobs_says_how_to_register_one(cli: Any) -> None:
    """With nothing installed, list explains the entry-point group."""
    outcome = cli("list")
    assert outcome.exit_code == 0
    assert '[project.entry-points."batchcli.jobs"]' in outcome.output


def test_exec_runs_an_installed_job_with_its_configurations(cli: Any, installed: Path) -> None:
    """exec NAME imports the job's module and finds the configurations in its package's config/."""
    outcome = cli("exec", "squares", "-c", "config_prod", "-d", "out", "-p", "count=3")
    assert outcome.exit_code == 0, outcome.output
    assert squares(outcome) == ["prod: 1", "prod: 4", "prod: 9"]
    assert outcome.summary["job"] == "squares"


def test_exec_an_installed_job_in_a_real_process(run_batchcli: Any, site: Path) -> None:
    """A fresh process discovers the entry point from the dist-info on its path and runs the job."""
    outcome = run_batchcli("exec", "squares", "-c", "config_dev", "-d", "out", **child_env(site))
    assert outcome.exit_code == 0, outcome.output
    assert squares(outcome) == ["dev: 1", "dev: 16", "dev: 4", "dev: 9"]
    listing = run_batchcli("list", **child_env(site))
    assert "ux_demo_jobs.squares" in listing.output


def test_help_of_an_installed_job(cli: Any, installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """exec NAME --help lists the installed job's params and fields."""
    monkeypatch.setenv("COLUMNS", "200")
    outcome = cli("exec", "squares", "-c", "config_dev", "--help")
    assert outcome.exit_code == 0, outcome.output
    assert "How many numbers." in outcome.output
    assert "Written before each square." in outcome.output


def test_a_job_whose_module_is_gone_says_to_reinstall(cli: Any, installed: Path) -> None:
    """An entry point naming a missing module exits 2 saying which module and what to do."""
    outcome = cli("exec", "ghost", "-d", "out")
    assert outcome.exit_code == 2
    text = " ".join(outcome.output.split())
    assert "The installed job 'ghost' points at module 'ux_demo_jobs.no_such_module', which cannot be imported" in text
    assert "Reinstall the package that provides it." in text


def test_a_job_whose_module_imports_a_missing_dependency_names_the_dependency(cli: Any, installed: Path) -> None:
    """The job's module is installed; a package it imports is not. It was told to reinstall the job's package, which
    would not help: the message names the missing dependency and how to install it."""
    outcome = cli("exec", "needy", "-d", "out")
    text = " ".join(outcome.output.split())
    assert outcome.exit_code == 2, text
    assert "The installed job 'needy' (module 'ux_demo_jobs.needs_missing') imports 'no_such_dependency_xyz'" in text
    assert "pip install no_such_dependency_xyz" in text and "Reinstall" not in text


def test_a_path_wins_over_a_job_of_the_same_name_with_a_note(cli: Any, installed: Path, tmp_path: Path) -> None:
    """When NAME is both a path and a job, the path runs and a note says how to reach the job."""
    local = tmp_path / "squares"
    local.mkdir()
    (local / "job.py").write_text((PROJECTS / "ux_types" / "job.py").read_text())
    outcome = cli("exec", "squares", "-d", "out")
    assert outcome.exit_code == 0, outcome.output
    assert (outcome.run_dir / "values.json").exists()  # the local project ran, not the installed job
    text = " ".join(outcome.output.split())
    assert "Note: 'squares' is both a path and an installed job (module ux_demo_jobs.squares); running the path." in text
    assert "batchcli exec ux_demo_jobs.squares" in text


def test_exec_takes_a_module_name(cli: Any, installed: Path) -> None:
    """An importable module name runs as a job too (the way around a shadowing path)."""
    outcome = cli("exec", "ux_demo_jobs.squares", "-c", "config_dev", "-d", "out", "-p", "count=2")
    assert outcome.exit_code == 0, outcome.output
    assert squares(outcome) == ["dev: 1", "dev: 4"]


def test_an_unknown_name_is_a_clear_error(cli: Any) -> None:
    """A name that is no path, job or module exits 2 and lists what exec accepts."""
    outcome = cli("exec", "no_such_job_anywhere", "-d", "out")
    assert outcome.exit_code == 2
    assert "Path 'no_such_job_anywhere' does not exist." in " ".join(outcome.output.split())


def test_a_job_name_two_packages_register_is_listed_twice_and_refused(
    cli: Any, installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two installed packages registering `squares`: one silently hid the other (and not the one Python's import
    order would pick). `list` shows both; exec by that name says which packages and how to pick one."""
    other = installed / "other_jobs-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other-jobs\nVersion: 1.0\n")
    (other / "entry_points.txt").write_text("[batchcli.jobs]\nsquares = other_jobs.squares\n")
    monkeypatch.setenv("COLUMNS", "200")
    listed = cli("list").output
    assert "ux_demo_jobs.squares" in listed and "other_jobs.squares" in listed
    refused = cli("exec", "squares", "-d", "out")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "The job name 'squares' is registered by several installed packages" in said
    assert "other-jobs (other_jobs.squares)" in said and "ux-demo-jobs (ux_demo_jobs.squares)" in said, said
    assert cli("exec", "ux_demo_jobs.squares", "-c", "config_dev", "-d", "out").exit_code == 0  # by module name


def test_a_malformed_registration_is_listed_as_broken_and_breaks_nothing_else(
    cli: Any, installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry point whose value is no module name (a package's typo) made importlib raise while batchcli read the
    group, so `list` and every exec, even of a path, ended in a traceback. It is listed as broken, with the fix;
    exec of its name says so; every other job and path runs."""
    broken = installed / "broken_jobs-1.0.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-jobs\nVersion: 1.0\n")
    (broken / "entry_points.txt").write_text("[batchcli.jobs]\nbad = not a module!\n")
    monkeypatch.setenv("COLUMNS", "250")
    listed = cli("list")
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.output.splitlines() if line.startswith("bad"))
    assert "cannot be loaded" in line and "'not a module!'" in line and "broken-jobs" in line
    assert any(line.startswith("squares") for line in listed.output.splitlines())
    refused = cli("exec", "bad", "-d", tmp_path / "out")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "The installed job 'bad'" in said and "Traceback" not in refused.output, said
    assert cli("exec", "squares", "-c", "config_dev", "-d", tmp_path / "out").exit_code == 0
    by_path = cli("exec", PROJECTS / "unattended" / "job.py", "-d", tmp_path / "out", "-p", "count=3", "-p", "delay_s=0",
                  "-p", f"ledger={tmp_path / 'ledger.txt'}", "--no-shell")  # fmt: skip
    assert by_path.exit_code == 0, by_path.output


def test_resume_of_an_installed_jobs_run_loads_that_job_even_where_a_path_of_its_name_exists_now(
    cli: Any, installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal names an installed job by its name; resume resolved that name again with "the path wins", so a
    directory of that name made since (here, where resume runs) was loaded instead: another job's code finished the
    run. The run's own job finishes it now."""
    monkeypatch.chdir(tmp_path)
    started = cli("exec", "squares", "-c", "config_dev", "-d", tmp_path / "out", "--limit", "2")
    assert started.exit_code == 0, started.output
    local = tmp_path / "squares"
    local.mkdir()
    (local / "job.py").write_text((PROJECTS / "ux_types" / "job.py").read_text())
    resumed = cli("resume", started.run_dir, "--all")
    assert resumed.exit_code == 0, resumed.output  # before: "Unknown configuration 'config_dev'" (the local project)
    assert not (started.run_dir / "values.json").exists()  # before: the local project's service ran
    assert squares(started) == ["dev: 16", "dev: 9"]  # the resumed session's items, 3 and 4, by the installed job
