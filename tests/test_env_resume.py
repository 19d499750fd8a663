"""Values from BATCHCLI_* variables and secrets on resume and retry: recorded, shown, insisted on, never written."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS

from batchcli.journal.rundir import read_run

JOB = PROJECTS / "env_resume" / "job.py"
TOKEN, API_KEY = "tok-5e1f0c93", "key-a7d24b60"
DEFAULTS = ("default-token", "default-api-key")
SECRETS_ENV = {"BATCHCLI_TOKEN": TOKEN, "BATCHCLI_API_KEY": API_KEY}


def flat(text: str) -> str:
    """Output with runs of whitespace collapsed, so wrapping and column padding do not matter."""
    return re.sub(r"\s+", " ", text)


def digest(token: str, api_key: str) -> str:
    """What the job's setup() records for the secrets it was given (see tests/projects/env_resume/job.py)."""
    return hashlib.sha256(f"{token}|{api_key}".encode()).hexdigest()


def secrets_seen(proof: Path) -> list[str]:
    """The digest each setup() recorded, in order: one per session (or worker)."""
    return (proof / "secrets.txt").read_text().split()


def assert_no_secret_written(run_dir: Path) -> None:
    """Neither secret value, nor a default, is in any file of the run directory (journal, WAL, logs, summary)."""
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for value in (TOKEN, API_KEY):
                assert value.encode() not in data, f"{value!r} written to {path.name}"


@pytest.fixture
def proof(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory the job records its secrets' digest in; the test process holds no BATCHCLI_* of this job."""
    for name in ("BATCHCLI_COUNT", "BATCHCLI_TOKEN", "BATCHCLI_API_KEY", "BATCHCLI_STOP_AT", "BATCHCLI_FAIL_EVERY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    path = tmp_path / "proof"
    path.mkdir()
    return path


def stopped_run(run_batchcli: Any, proof: Path, *args: str, **env: str) -> Path:
    """A run of 300 items (BATCHCLI_COUNT) that its own SIGTERM stopped after item 50, secrets from the environment."""
    outcome = run_batchcli(
        "exec", JOB, "-d", "out", "-p", f"proof_dir={proof}", "-p", "stop_at=50", "-p", "concurrency=1", *args,
        BATCHCLI_COUNT="300", **{**SECRETS_ENV, **env},
    )
    assert outcome.exit_code == 130, outcome.output
    summary = outcome.summary
    assert (summary["status"], summary["succeeded"], summary["total"]) == ("stopped", 51, 300), summary
    assert outcome.run_dir is not None
    return outcome.run_dir


def test_resume_processes_the_count_given_by_the_environment_at_exec(run_batchcli: Any, cli: Any, proof: Path) -> None:
    """BATCHCLI_COUNT given at exec is recorded: resume without it processes that count, and show says where it came from."""
    run_dir = stopped_run(run_batchcli, proof)
    info = read_run(run_dir)
    assert info.params["count"] == ["300"]
    assert set(info.environment) == {"count", "token", "api_key"}
    assert info.secrets == ["api_key", "token"]

    shown = flat(cli("show", run_dir).output)
    assert "count=300 (from the environment: BATCHCLI_COUNT)" in shown
    assert "stop_at=50 " in shown and "stop_at=50 (from" not in shown  # -p values carry no origin
    assert "token=******** (secret, from the environment: BATCHCLI_TOKEN; give it again to resume or retry)" in shown
    assert "api_key=******** (secret, from the environment: BATCHCLI_API_KEY; give it again" in shown

    resumed = run_batchcli("resume", run_dir, **SECRETS_ENV)  # no BATCHCLI_COUNT this time
    assert resumed.exit_code == 0, resumed.output
    summary = resumed.summary
    assert (summary["status"], summary["succeeded"], summary["failed"], summary["total"]) == ("finished", 300, 0, 300)
    assert summary["params"]["count"] == 300
    assert secrets_seen(proof) == [digest(TOKEN, API_KEY)] * 2
    assert_no_secret_written(run_dir)
    assert "Traceback" not in resumed.output


def test_p_on_resume_wins_over_a_recorded_environment_value_and_a_new_variable_changes_nothing(
    run_batchcli: Any, cli: Any, proof: Path
) -> None:
    """On resume -p overrides a value recorded from the environment, and is recorded in its place; a BATCHCLI_*
    variable set since is ignored."""
    run_dir = stopped_run(run_batchcli, proof)

    resumed = run_batchcli("resume", run_dir, "-p", "count=120", BATCHCLI_COUNT="999", **SECRETS_ENV)
    assert resumed.exit_code == 0, resumed.output
    summary = resumed.summary
    assert (summary["status"], summary["succeeded"], summary["total"]) == ("finished", 120, 120)

    # The value given on resume is the run's from then on: show listed the first session's count=300 (from the
    # environment) while summary.json said 120, and a later resume went back to 300.
    info = read_run(run_dir)
    assert info.params["count"] == ["120"] and "count" not in info.environment
    assert set(info.environment) == {"token", "api_key"} and info.secrets == ["api_key", "token"]
    shown = flat(cli("show", run_dir).output)
    assert "count=120 " in shown and "count=300" not in shown


def test_resume_insists_on_every_secret_given_by_the_environment_and_never_uses_a_default(
    run_batchcli: Any, cli: Any, proof: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret param and a Secret config field, both with defaults and given by BATCHCLI_*, must be given again to resume."""
    run_dir = stopped_run(run_batchcli, proof)

    refused = cli("resume", run_dir)
    text = flat(refused.output)
    assert refused.exit_code == 2, refused.output
    assert f"Run {str(run_dir)!r} was started with the secret params 'api_key', 'token'" in text
    assert "their defaults are not used instead" in text
    assert f"batchcli resume {run_dir} -p api_key=... -p token=... (or set BATCHCLI_API_KEY, BATCHCLI_TOKEN)." in text
    assert "Traceback" not in refused.output

    monkeypatch.setenv("BATCHCLI_TOKEN", TOKEN)
    one_left = cli("resume", run_dir)
    text = flat(one_left.output)
    assert one_left.exit_code == 2, one_left.output
    assert "the secret param 'api_key'," in text and "'token'" not in text
    assert "-p api_key=... (or set BATCHCLI_API_KEY)." in text
    assert "Traceback" not in one_left.output
    assert read_run(run_dir).sessions == 1  # refused before anything ran

    # One by the environment, one by -p: either way works.
    resumed = run_batchcli("resume", run_dir, "-p", f"api_key={API_KEY}", BATCHCLI_TOKEN=TOKEN)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.summary["succeeded"] == 300
    assert secrets_seen(proof) == [digest(TOKEN, API_KEY)] * 2
    assert digest(*DEFAULTS) not in secrets_seen(proof)
    assert_no_secret_written(run_dir)


def test_retry_insists_on_secrets_and_keeps_the_environment_values(
    run_batchcli: Any, cli: Any, proof: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retry asks again for env-given secrets, takes env-given values from the journal, and records them in its own run."""
    first = run_batchcli(
        "exec", JOB, "-d", "out", "-p", f"proof_dir={proof}",
        BATCHCLI_COUNT="30", BATCHCLI_FAIL_EVERY="10", **SECRETS_ENV,
    )
    assert first.exit_code == 1, first.output
    assert (first.summary["succeeded"], first.summary["failed"], first.summary["total"]) == (27, 3, 30)
    parent = first.run_dir
    assert parent is not None

    refused = cli("retry", parent)
    text = flat(refused.output)
    assert refused.exit_code == 2, refused.output
    assert f"batchcli retry {parent} -p api_key=... -p token=... (or set BATCHCLI_API_KEY, BATCHCLI_TOKEN)." in text
    assert "Traceback" not in refused.output
    assert len(list((parent.parent).iterdir())) == 1  # no retry run was started

    # fail_every came from the environment: the journal's value holds, so the same three fail again...
    again = run_batchcli("retry", parent, **SECRETS_ENV)
    assert again.exit_code == 1, again.output
    assert (again.summary["succeeded"], again.summary["failed"]) == (0, 3)
    # ...unless -p says otherwise.
    retried = run_batchcli("retry", parent, "-p", "fail_every=0", **SECRETS_ENV)
    assert retried.exit_code == 0, retried.output
    assert (retried.summary["succeeded"], retried.summary["failed"]) == (3, 0)
    assert secrets_seen(proof) == [digest(TOKEN, API_KEY)] * 3

    retry_run = retried.run_dir
    assert retry_run is not None and retry_run != parent
    info = read_run(retry_run)
    assert info.params["count"] == ["30"] and info.params["fail_every"] == ["0"]
    assert set(info.environment) == {"count", "token", "api_key"}  # fail_every came from -p this time
    assert info.secrets == ["api_key", "token"]
    shown = flat(cli("show", retry_run).output)
    assert "count=30 (from the environment: BATCHCLI_COUNT)" in shown
    assert "fail_every=0 " in shown and "fail_every=0 (from" not in shown
    for run_dir in (parent, again.run_dir, retry_run):
        assert run_dir is not None
        assert_no_secret_written(run_dir)


def test_process_workers_get_environment_values_from_the_driver(run_batchcli: Any, proof: Path) -> None:
    """Secrets and params from BATCHCLI_* reach process workers in the run's wiring, not through their own environment."""
    outcome = run_batchcli(
        "exec", JOB, "-d", "out", "-p", f"proof_dir={proof}", "-p", "executor=process", "-p", "workers=1",
        BATCHCLI_COUNT="20", **SECRETS_ENV,
    )
    assert outcome.exit_code == 0, outcome.output
    assert (outcome.summary["succeeded"], outcome.summary["total"]) == (20, 20)
    assert secrets_seen(proof) == [digest(TOKEN, API_KEY)]  # set up once, in the one worker
    assert outcome.run_dir is not None
    assert_no_secret_written(outcome.run_dir)


def test_secrets_left_at_their_defaults_are_not_asked_for(run_batchcli: Any, proof: Path) -> None:
    """A secret given by neither -p nor the environment ran with its default from the start: resume keeps it."""
    outcome = run_batchcli(
        "exec", JOB, "-d", "out", "-p", f"proof_dir={proof}", "-p", "stop_at=50", "-p", "concurrency=1",
        BATCHCLI_COUNT="300",
    )
    assert outcome.exit_code == 130, outcome.output
    assert outcome.run_dir is not None
    assert read_run(outcome.run_dir).secrets == []

    resumed = run_batchcli("resume", outcome.run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert (resumed.summary["succeeded"], resumed.summary["total"]) == (300, 300)
    assert secrets_seen(proof) == [digest(*DEFAULTS)] * 2


def test_a_journal_from_before_environment_values_were_recorded_still_shows_and_resumes(
    run_batchcli: Any, cli: Any, proof: Path
) -> None:
    """A journal without the run.environment column (an earlier batchcli's) reads as having no environment values."""
    run_dir = stopped_run(run_batchcli, proof)
    with sqlite3.connect(run_dir / "journal.sqlite") as conn:
        conn.execute("ALTER TABLE run DROP COLUMN environment")
    conn.close()
    assert read_run(run_dir).environment == ()

    shown = cli("show", run_dir)
    assert shown.exit_code == 0, shown.output
    assert "count=300 " in flat(shown.output) and "(from the environment" not in shown.output
    resumed = run_batchcli("resume", run_dir, **SECRETS_ENV)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.summary["total"] == 300
