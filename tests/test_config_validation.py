"""Every built-in configuration field refuses negative, NaN and infinite values with a message naming the value, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

PROJECTS = Path(__file__).resolve().parent / "projects"
RETRIES = PROJECTS / "retries" / "retries_job.py"


def rejected(result: Any) -> str:
    """The output of a run batchcli refused to start, after the checks every refusal must pass."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Error: Invalid configuration:" in result.output  # the default class is not named
    assert result.run_dir is None
    return " ".join(result.output.split())


@pytest.mark.parametrize("field", ["backoff_s", "backoff_max_s", "stop_timeout_s", "write_retry_s"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf"])
def test_seconds_fields_refuse_negative_nan_and_infinite(cli, field: str, value: str) -> None:
    """backoff_s, backoff_max_s, stop_timeout_s and write_retry_s must be finite and 0 or more; the message names
    value and form."""
    out = rejected(cli("exec", RETRIES, "-d", "out", "-p", f"{field}={value}"))
    shown = {"-1": "-1.0"}.get(value, value)
    assert f"{field} must be a finite number of seconds, 0 or more, got {shown}: e.g. {field}=1.5." in out


@pytest.mark.parametrize("field, unit", [("rate_limit", "items per second, e.g. 50"), ("item_timeout_s", "seconds, e.g. 30")])
@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf"])
def test_optional_limits_refuse_nan_and_infinite_too(cli, field: str, unit: str, value: str) -> None:
    """rate_limit and item_timeout_s must be positive and finite, or none; NaN no longer slips through."""
    out = rejected(cli("exec", RETRIES, "-d", "out", "-p", f"{field}={value}"))
    shown = {"0": "0.0", "-2": "-2.0"}.get(value, value)
    assert f"{field} must be positive or none, got {shown}: {unit}, or none for no limit" in out


def test_a_rate_limit_below_one_item_a_day_is_refused(cli) -> None:
    """rate_limit=1e-300 was taken as positive: each start slot lay beyond any wait, and the run never moved."""
    out = rejected(cli("exec", RETRIES, "-d", "out", "-p", "rate_limit=1e-300"))
    assert "rate_limit must be positive or none, got 1e-300" in out and "the lowest is 1.15741e-05, one item a day" in out
    assert cli("exec", RETRIES, "-d", "out", "-p", "rate_limit=0.0000116", "--dry-run").exit_code == 0  # just above


def test_backoff_max_below_backoff(cli) -> None:
    """backoff_max_s below backoff_s is refused, naming both values and which to change."""
    out = rejected(cli("exec", RETRIES, "-d", "out", "-p", "backoff_s=5", "-p", "backoff_max_s=2"))
    assert "backoff_max_s (2.0) must be at least backoff_s (5.0)" in out
    assert "Raise backoff_max_s or lower backoff_s." in out


def test_zero_delays_are_still_allowed(cli) -> None:
    """backoff_s=0, backoff_max_s=0 and stop_timeout_s=0 are valid: retry at once, cancel at once on a stop."""
    result = cli("exec", RETRIES, "-d", "out", "-p", "backoff_s=0", "-p", "backoff_max_s=0", "-p", "stop_timeout_s=0")
    assert result.exit_code == 1, result.output  # the project's two unretryable items fail; the run itself went
    assert result.summary["succeeded"] == 2


@pytest.mark.parametrize("value", ["-1", str(10**20), "1000001"])
def test_breaker_window_is_refused_outside_0_to_a_million(cli, tmp_path: Path, value: str) -> None:
    """A window past 2**62 sized a deque that raised OverflowError: a traceback, exit 1, and a run directory left
    without a journal. The bound is checked with the other fields, before anything is made."""
    out = rejected(cli("exec", RETRIES, "-d", tmp_path / "out", "-p", f"breaker_window={value}"))
    assert f"breaker_window must be" in out and f"got {value}" in out and "or 0 to turn" in out
    assert not (tmp_path / "out").exists()
