"""`batchcli init NAME` makes a project that runs at once and whose generated test passes; it never overwrites."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import subprocess_env

FILES = [
    ".gitignore",
    "README.md",
    "config/base.py",
    "config/config_dev.py",
    "config/config_prod.py",
    "service.py",
    "source.py",
    "tests/test_hello_job.py",
]


def flat(text: str) -> str:
    return " ".join(text.split())


def test_init_writes_the_project_files(cli: Any, tmp_path: Path) -> None:
    """init creates the source, service, configurations, README and test, and says how to run them."""
    outcome = cli("init", "hello_job")
    assert outcome.exit_code == 0, outcome.output
    root = tmp_path / "hello_job"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == FILES
    assert "batchcli exec hello_job -c config_dev" in outcome.output
    assert "hello_job" in (root / "README.md").read_text()


def test_the_new_project_runs_at_once(cli: Any) -> None:
    """exec NAME -c config_dev succeeds right after init, with the dev configuration's values."""
    assert cli("init", "hello_job").exit_code == 0
    outcome = cli("exec", "hello_job", "-c", "config_dev", "-d", "out")
    assert outcome.exit_code == 0, outcome.output
    assert outcome.summary["succeeded"] == 10
    assert outcome.summary["configuration"] == "DevConfig"


def test_the_new_project_runs_in_prod_in_a_real_process(cli: Any, run_batchcli: Any) -> None:
    """A nested path works, and the prod configuration runs in a real process with a -p override."""
    assert cli("init", "jobs/nightly").exit_code == 0
    outcome = run_batchcli("exec", "jobs/nightly", "-c", "config_prod", "-d", "out", "-p", "count=3")
    assert outcome.exit_code == 0, outcome.output
    assert outcome.summary["succeeded"] == 3


def test_an_environment_built_on_another_keeps_both_selectable(cli: Any, tmp_path: Path) -> None:
    """A staging config derived from the prod one made `-c config_prod` an "Unknown configuration": only configs no
    other derives from were choices. Each config/config_*.py module's own stays one; a shared base does not."""
    assert cli("init", "app").exit_code == 0
    (tmp_path / "app" / "config" / "config_staging.py").write_text(
        "from dataclasses import dataclass\n\nfrom .config_prod import ProdConfig\n\n\n"
        "@dataclass(kw_only=True)\nclass StagingConfig(ProdConfig):\n    greeting: str = 'Hi from staging'\n"
    )
    for name, chosen in (("config_prod", "ProdConfig"), ("ProdConfig", "ProdConfig"), ("config_staging", "StagingConfig")):
        outcome = cli("exec", "app", "-c", name, "-d", "out", "-p", "count=2")
        assert outcome.exit_code == 0, outcome.output
        assert outcome.summary["configuration"] == chosen
    unknown = cli("exec", "app", "-c", "base", "-d", "out")
    assert unknown.exit_code == 2 and "Available: config_dev, config_prod, config_staging." in flat(unknown.output)


def test_the_generated_test_passes_under_pytest(cli: Any, tmp_path: Path) -> None:
    """The generated test file, run by pytest in a child process, passes through batchcli.testing."""
    assert cli("init", "hello_job").exit_code == 0
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "hello_job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_help_of_the_new_project_documents_it(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated code's docstrings show in exec NAME --help."""
    monkeypatch.setenv("COLUMNS", "200")
    cli("init", "hello_job")
    outcome = cli("exec", "hello_job", "-c", "config_dev", "--help")
    assert "How many numbers to yield." in outcome.output
    assert "How each item is greeted." in outcome.output


def test_init_never_overwrites(cli: Any, tmp_path: Path) -> None:
    """An existing directory is refused with exit code 2 and left untouched."""
    existing = tmp_path / "hello_job"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    outcome = cli("init", "hello_job")
    assert outcome.exit_code == 2
    assert "'hello_job' already exists; batchcli init never overwrites anything." in flat(outcome.output)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]
    assert (existing / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("my-job", "'my-job' cannot be a project name: batchcli imports the directory as a Python package"),
        ("my-job", "Try 'my_job'."),
        ("class", "Try 'job_class'."),
        ("json", "'json' is already the name of an importable module"),
    ],
)
def test_init_refuses_names_that_cannot_be_imported(cli: Any, tmp_path: Path, name: str, message: str) -> None:
    """A name that is no identifier, a keyword or an existing module is refused with a better name."""
    outcome = cli("init", name)
    assert outcome.exit_code == 2
    assert message in flat(outcome.output)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_init_refuses_a_name_that_is_no_new_directory(cli: Any, tmp_path: Path, name: str) -> None:
    """An empty name answered "'.' already exists", as if the name had been taken, not left out."""
    outcome = cli("init", name)
    assert outcome.exit_code == 2
    assert "names no new directory (an empty name is the one you are in): give the new project's name" in flat(outcome.output)
    assert list(tmp_path.iterdir()) == []


def test_init_that_cannot_write_its_files_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    """A write that fails halfway (here the file-size limit, EFBIG; a full disk is ENOSPC) ended in a traceback and left
    a half-made project, which init then refused to redo ("already exists"). One paragraph now, exit 2, nothing left;
    and init succeeds once the writes can."""
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))  # the templates are larger

    env = subprocess_env(PYTHONDONTWRITEBYTECODE="1")  # no .pyc cut short under the limit for later children
    init = [sys.executable, "-m", "batchcli", "init", "fresh_job"]
    failed = subprocess.run(init, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env, preexec_fn=small_files)
    said = flat(failed.stderr)
    assert failed.returncode == 2, failed.stderr
    assert "Cannot write the project 'fresh_job' (File too large" in said and "nothing was left behind" in said
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "fresh_job").exists()
    again = subprocess.run(init, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "fresh_job" / "config").is_dir()
