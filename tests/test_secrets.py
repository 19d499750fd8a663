"""Secrets reach the job's code but are never written: not to any file of the run directory, nor to the output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS

from batchcli.load.secret import Secret, masked_values

SECRETS = PROJECTS / "ux_secrets" / "job.py"
TOKEN, PASSWORD, EXTRA1, EXTRA2 = "tok-7f3a9c51", "pw-e81d22b7", "xt-44aa9e01", "xt-90cc1f3d"
ALL = (TOKEN, PASSWORD, EXTRA1, EXTRA2)


def leaks(outcome: Any) -> list[str]:
    """Every place a secret value appears: the output, or a file anywhere under the run directory."""
    found = [f"output: {s}" for s in ALL if s in outcome.output]
    for path in sorted(outcome.run_dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {s}" for s in ALL if s.encode() in data]
    return found


def proof(run_dir: Path) -> str:
    return (run_dir / "proof.txt").read_text()


EXPECTED_PROOF = hashlib.sha256(f"{TOKEN}|{PASSWORD}|{EXTRA1},{EXTRA2}".encode()).hexdigest()


@pytest.mark.parametrize("verbosity", [[], ["-vv"]])
def test_secrets_from_p_never_appear_in_the_run_directory_or_output(cli: Any, verbosity: list[str]) -> None:
    """Secret params and fields given with -p reach the service intact and are written nowhere, even at debug level."""
    outcome = cli(
        "exec", SECRETS, "-d", "out", *verbosity,
        "-p", f"api_token={TOKEN}", "-p", f"db.password={PASSWORD}", "-p", f"extra_tokens={EXTRA1},{EXTRA2}",
    )
    assert outcome.exit_code == 1, outcome.output  # item 2 fails: failed.jsonl is written too
    assert proof(outcome.run_dir) == EXPECTED_PROOF
    assert outcome.failed and outcome.failed[0]["input"] == 2
    # The job's own exception quoted the token: failed.jsonl, the journal and the log have it masked.
    assert outcome.failed[0]["error_message"] == "item 2 rejected by the API: 401 for /items?api_key=********"
    assert "api_key=********" in outcome.failed[0]["traceback"]
    assert leaks(outcome) == []
    params = outcome.summary["params"]
    assert params["api_token"] == params["db.password"] == params["extra_tokens"] == Secret.mask
    log = (outcome.run_dir / "batchcli.log").read_text()
    assert "Secret('********')" in log  # the service's own log line, masked by Secret's repr
    assert "calling the API with token ********" in log  # with %s too, where the str of a Secret is its value
    assert "connecting as batch with ********" in log  # and by name, from a dict of arguments
    assert "session opened for ********" in log  # and in a message the job formatted itself


@pytest.mark.parametrize("how", [["-p", "executor=async"], ["-p", "executor=process"], ["--log-format", "json"]])
def test_a_setup_that_fails_quoting_a_secret_shows_it_masked_everywhere(cli: Any, how: list[str]) -> None:
    """The error that ends the run (setup() refused, its message quoting the token) is written masked to the
    output, the log, summary.json and the journal: only item failures were masked, and the crash wrote the token
    in all four."""
    outcome = cli(
        "exec", SECRETS, "-d", "out", *how, "-p", "refused=true",
        "-p", f"api_token={TOKEN}", "-p", f"db.password={PASSWORD}", "-p", f"extra_tokens={EXTRA1},{EXTRA2}",
    )  # fmt: skip
    assert outcome.exit_code == 3, outcome.output
    assert leaks(outcome) == []
    assert "login refused for token ********" in " ".join(outcome.output.split())
    assert "login refused for token ********" in (outcome.run_dir / "batchcli.log").read_text()
    assert outcome.summary["fatal"]["message"].endswith("login refused for token ********")
    assert "login refused for token ********" in outcome.summary["fatal"]["traceback"]


def test_secrets_logged_or_raised_in_worker_processes_are_masked_too(cli: Any) -> None:
    """With executor=process the job logs and raises in its workers, which format each record before it travels
    to the run's log: the token in a log argument and in an exception's message is masked there as well."""
    outcome = cli(
        "exec", SECRETS, "-d", "out", "-p", "executor=process", "-p", "max_retries=0",
        "-p", f"api_token={TOKEN}", "-p", f"db.password={PASSWORD}", "-p", f"extra_tokens={EXTRA1},{EXTRA2}",
    )  # fmt: skip
    assert outcome.exit_code == 1, outcome.output
    assert outcome.failed[0]["error_message"] == "item 2 rejected by the API: 401 for /items?api_key=********"
    assert "calling the API with token ********" in (outcome.run_dir / "batchcli.log").read_text()
    assert leaks(outcome) == []


def test_secrets_from_the_environment_are_never_written(run_batchcli: Any) -> None:
    """Secrets given as BATCHCLI_* variables to a real process are used and written nowhere."""
    outcome = run_batchcli(
        "exec", SECRETS, "-d", "out", "-vv",
        BATCHCLI_API_TOKEN=TOKEN, BATCHCLI_DB__PASSWORD=PASSWORD, BATCHCLI_EXTRA_TOKENS=f"{EXTRA1},{EXTRA2}",
    )
    assert outcome.exit_code == 1, outcome.output
    assert proof(outcome.run_dir) == EXPECTED_PROOF
    assert leaks(outcome) == []
    assert outcome.summary["params"]["db.password"] == Secret.mask


def test_a_missing_secret_says_how_to_give_it(cli: Any) -> None:
    """A required secret that is not given names -p and the environment variable, the safer way."""
    outcome = cli("exec", SECRETS, "-d", "out")
    assert outcome.exit_code == 2
    assert "Missing required param: api_token. Give -p api_token=... (or set BATCHCLI_API_TOKEN in the environment)." in " ".join(
        outcome.output.split()
    )


def test_help_masks_secret_defaults(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """exec PATH --help shows a secret param's default as the mask, never its value."""
    monkeypatch.setenv("COLUMNS", "200")
    outcome = cli("exec", SECRETS, "--help")
    assert outcome.exit_code == 0, outcome.output
    assert "fallback_key" in outcome.output
    assert "default-key-0451" not in outcome.output
    assert Secret.mask in outcome.output
    # A secret with no value is shown as none or empty: the mask said one was set.
    rows = {line.split()[1]: line for line in outcome.output.splitlines() if len(line.split()) > 2}
    assert "(empty)" in rows["extra_tokens"] and Secret.mask not in rows["extra_tokens"]
    assert masked_values({"password": None, "tokens": []}, {"password": Secret | None, "tokens": list[Secret]}) == {
        "password": None, "tokens": []
    }


def test_masked_values_masks_by_declared_type_and_by_value() -> None:
    """masked_values (for the journal and banners) hides raw -p strings of secret names and Secret values anywhere."""
    annotations = {"token": Secret, "ids": list[int], "maybe": Secret | None}
    values = {"token": ("abc",), "ids": ("1,2",), "maybe": ("x",), "other": [Secret("y")], "plain": "z"}
    assert masked_values(values, annotations) == {
        "token": Secret.mask,
        "ids": ("1,2",),
        "maybe": Secret.mask,
        "other": Secret.mask,
        "plain": "z",
    }


def test_summary_is_valid_json_with_masked_params(cli: Any) -> None:
    """summary.json stays plain JSON with the secret names present and masked."""
    outcome = cli("exec", SECRETS, "-d", "out", "-p", f"api_token={TOKEN}")
    data = json.loads((outcome.run_dir / "summary.json").read_text())
    assert data["params"] == {"api_token": Secret.mask}


def test_storable_wiring_drops_secrets_and_a_rebuild_asks_for_them(cli: Any) -> None:
    """Wiring.without(job.secret_names) keeps no secret, and rebuilding from it names the missing secret and its variable."""
    from batchcli.load.wiring import Wiring, build_job
    from batchcli.errors import UsageError
    from batchcli.load.project import load_project

    wiring = Wiring(str(SECRETS), None, {"api_token": (TOKEN,), "db.password": (PASSWORD,), "db.user": ("svc",)})
    job = build_job(load_project(str(SECRETS)), wiring, environ={})
    # notify_url is the built-in secret field (webhook URLs hold tokens).
    assert job.secret_names == {"api_token", "fallback_key", "extra_tokens", "db.password", "notify_url"}
    stored = wiring.without(job.secret_names)
    assert dict(stored.values) == {"db.user": ("svc",)}
    with pytest.raises(UsageError, match="Missing required param: api_token. Give -p api_token=... \\(or set BATCHCLI_API_TOKEN"):
        build_job(load_project(str(SECRETS)), stored, environ={})
    rebuilt = build_job(load_project(str(SECRETS)), stored, environ={"BATCHCLI_API_TOKEN": TOKEN})
    assert rebuilt.params["api_token"] == TOKEN
    assert job.public_params()["api_token"] == Secret.mask


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_item_that_holds_a_secret_is_shown_masked_in_failure_lines_and_by_dry_run(cli: Any, log_format: str) -> None:
    """A failure line showed the item's repr as it was: a URL with its key, on the console and in the log, while
    its message beside it was masked; and --dry-run listed it among the first items. The item itself is kept as
    given in failed.jsonl, which retry processes again."""
    urls = PROJECTS / "ux_secrets" / "urls.py"
    outcome = cli("exec", urls, "-d", "out", "--log-format", log_format, "-p", f"token={TOKEN}")
    assert outcome.exit_code == 1, outcome.output
    log = (outcome.run_dir / "batchcli.log").read_text()
    assert TOKEN not in outcome.output and TOKEN not in log
    if log_format == "json":  # the log file and, with no terminal, the output: a line per failure each
        for text in (log, outcome.output):
            failed = [json.loads(line) for line in text.splitlines() if '"item_failed"' in line]
            assert [f["item"] for f in failed] == ["'https://api.example/items/1?key=********'"]
    else:
        flat = " ".join(outcome.output.split())
        assert "Item #1 ('https://api.example/items/1?key=********')" in flat, flat
        assert "Item #1 ('https://api.example/items/1?key=********') failed after 1 attempt" in log
    assert outcome.failed[0]["input"] == f"https://api.example/items/1?key={TOKEN}"
    dry = cli("exec", urls, "--dry-run", "-p", f"token={TOKEN}")
    assert dry.exit_code == 0 and TOKEN not in dry.output
    assert "https://api.example/items/0?key=********" in dry.output


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_secret_quoted_by_the_jobs_own_checks_is_masked_in_the_error(cli: Any, log_format: str) -> None:
    """A configuration check or a constructor that refused a secret, quoting it, had it printed in the error as it
    was ("Invalid configuration Checked: api_key sk... must start with sk-"); a setup() error was already masked."""
    job = PROJECTS / "secret_checks" / "job.py"
    refused = cli("exec", job, "--log-format", log_format, "-p", "api_key=pk-4f1e9a2b77")
    assert refused.exit_code == 2, refused.output
    assert "pk-4f1e9a2b77" not in refused.output and "api_key ******** must start with sk-" in refused.output
    failed = cli("exec", job, "--log-format", log_format, "-p", "token=bad-9c1d7e4f")
    assert failed.exit_code != 0, failed.output
    assert "bad-9c1d7e4f" not in failed.output and "auth failed for token ********" in failed.output
