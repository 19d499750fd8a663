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


def _project(tmp_path: Path, config_body: str, source_init: str = "") -> Path:
    """A one-file job whose configuration class has ``config_body``; its Source's constructor ``source_init``."""
    path = tmp_path / "job.py"
    init = f"    def __init__(self, {source_init}) -> None:\n        pass\n" if source_init else ""
    path.write_text(
        "from dataclasses import dataclass\n"
        "from batchcli import Configuration, Param, Service, Source, inject\n\n\n"
        "@inject\n@dataclass(kw_only=True)\nclass JobConfig(Configuration):\n" + config_body + "\n\n"
        "@inject\nclass Numbers(Source[int]):\n" + init + "    def __iter__(self):\n        yield from range(3)\n\n\n"
        "@inject\nclass Nothing(Service[int]):\n    async def process(self, item: int) -> None:\n        pass\n"
    )
    return path


def test_a_configuration_with_its_own_post_init_is_still_checked(cli, tmp_path: Path) -> None:
    """A subclass's __post_init__ that does not call Configuration's (the usual way to write a dataclass check)
    skipped every check: max_retries=-5 ran, and concurrency=0 crashed the run after its directory was made."""
    job = _project(tmp_path, '    region: str = "eu"\n\n    def __post_init__(self) -> None:\n'
                             '        if not self.region:\n            raise ValueError("region must not be empty")\n')  # fmt: skip
    for given, said in [("max_retries=-5", "max_retries must be 0 or more, got -5."),
                        ("concurrency=0", "concurrency must be 1 to 10,000 items in flight at once, got 0")]:  # fmt: skip
        result = cli("exec", job, "-d", "out", "-p", given)
        assert result.exit_code == 2 and result.run_dir is None, result.output
        assert f"Invalid configuration JobConfig: {said}" in " ".join(result.output.split())
    assert cli("exec", job, "-d", "out").exit_code == 0  # its own check still runs, and passes


@pytest.mark.parametrize(
    ("declared", "said"),
    [
        ('    concurrency: int = "ten"  # type: ignore[assignment]', "concurrency must be a whole number, got 'ten' (a str)"),
        ('    backoff_s: float = "1.5"  # type: ignore[assignment]', "backoff_s must be a number, got '1.5' (a str)"),
        ("    dask_address: str | None = 8786  # type: ignore[assignment]", "dask_address must be text or none, got 8786 (an int)"),
    ],
)
def test_a_built_in_field_given_a_default_of_the_wrong_type_is_named(cli, tmp_path: Path, declared: str, said: str) -> None:
    """A default of the wrong type in a configuration class was a TypeError from inside the dataclass's generated
    code ('<=' not supported between 'int' and 'str'), naming no field."""
    result = cli("exec", _project(tmp_path, declared), "-d", "out")
    assert result.exit_code == 2 and result.run_dir is None, result.output
    out = " ".join(result.output.split())
    assert f"Invalid configuration JobConfig: {said}" in out and "Traceback" not in out
    assert "Give it one in the configuration class" in out


@pytest.mark.parametrize("source_init", ["concurrency: Param[str] = 'x'", "concurrency: Param[int] = 3", "region: Param[str] = 'us'"])
def test_a_param_with_the_name_of_a_configuration_field_is_refused(cli, tmp_path: Path, source_init: str) -> None:
    """A Param named like a field got its own default while the run used the field's (the Source saw 3, the run went
    at concurrency=10), and a Param[str] named concurrency made -p concurrency=4 fail inside the dataclass."""
    job = _project(tmp_path, '    region: str = "eu"\n', source_init)
    name = source_init.split(":")[0]
    for given in ([], ["-p", f"{name}=4"]):
        result = cli("exec", job, "-d", "out", *given)
        assert result.exit_code == 2 and result.run_dir is None, result.output
        out = " ".join(result.output.split())
        assert f"Param '{name}' of Numbers has the name of a configuration field (JobConfig.{name})" in out
        assert f"(config: JobConfig) and use config.{name}" in out and "Traceback" not in out
