"""Nested configuration: dataclass fields at any depth set with -p db.host=..., with the same casting and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import PROJECTS

NESTED = PROJECTS / "ux_nested"


def settings(outcome: Any) -> dict[str, Any]:
    assert outcome.exit_code == 0, outcome.output
    return json.loads((outcome.run_dir / "config.json").read_text())  # type: ignore[no-any-return]


def flat(text: str) -> str:
    return " ".join(text.split())


def test_dotted_names_override_nested_fields_and_keep_the_rest(cli: Any) -> None:
    """-p db.port and db.pool.size are cast and set; the other nested fields keep the configuration's defaults."""
    config = settings(
        cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t", "-p", "db.port=7000", "-p", "db.pool.size=9")
    )
    assert config["type"] == "DevConfig"
    assert config["db"] == {"host": "localhost", "port": 7000, "pool": {"size": 9, "timeout": "0:00:30"}}
    assert config["cache"] is None
    assert config["label"] == "sync"


def test_untouched_groups_keep_their_default_factory(cli: Any) -> None:
    """Without overrides each configuration's own default instance is used (db.internal in the base)."""
    config = settings(cli("exec", NESTED, "-c", "config_prod", "-d", "out", "-p", "table=t", "-p", "region=eu"))
    assert config["db"] == {"host": "db.internal", "port": 5432, "pool": {"size": 5, "timeout": "0:00:30"}}
    config = settings(cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t", "-p", "db.pool.timeout=5m"))
    assert config["db"] == {"host": "localhost", "port": 6543, "pool": {"size": 5, "timeout": "0:05:00"}}


def test_unknown_nested_name_suggests_the_real_one(cli: Any) -> None:
    """A misspelt nested name exits 2 and suggests the dotted name it resembles."""
    outcome = cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t", "-p", "db.hots=x")
    assert outcome.exit_code == 2
    assert "Unknown param or configuration name: 'db.hots' (did you mean 'db.host'" in flat(outcome.output)
    assert "db.pool.size" in outcome.output


def test_bad_nested_value_names_the_dotted_field(cli: Any) -> None:
    """A nested value that does not cast names the dotted field and the fix."""
    outcome = cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t", "-p", "db.pool.size=big")
    assert outcome.exit_code == 2
    assert "Param 'db.pool.size' expects int, got 'big'. Use a whole number, e.g. 42." in flat(outcome.output)


def test_nested_post_init_checks_run_on_overrides(cli: Any) -> None:
    """A nested dataclass's own validation rejects an override, as a usage error."""
    outcome = cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t", "-p", "db.port=70000")
    assert outcome.exit_code == 2
    assert "Invalid configuration DevConfig: port must be between 1 and 65535, got 70000" in flat(outcome.output)


def test_a_group_name_alone_says_to_set_its_fields(cli: Any) -> None:
    """-p db=... is refused with the list of db's fields and an example."""
    outcome = cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t", "-p", "db=localhost")
    assert outcome.exit_code == 2
    assert "'db' is a group of configuration fields (db.host, db.port, db.pool.size, db.pool.timeout)" in flat(outcome.output)
    assert "e.g. -p db.host=..." in flat(outcome.output)


def test_an_optional_group_is_built_when_one_of_its_fields_is_set(cli: Any) -> None:
    """cache is None by default; -p cache.url builds it with its other defaults."""
    config = settings(cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t", "-p", "cache.url=redis://c"))
    assert config["cache"] == {"url": "redis://c", "ttl_s": 60}


def test_an_optional_group_needs_its_required_fields_once_set(cli: Any) -> None:
    """Setting cache.ttl_s alone reports cache.url as missing, with how to give it."""
    outcome = cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t", "-p", "cache.ttl_s=5")
    assert outcome.exit_code == 2
    assert "Missing required value: cache.url. Give -p cache.url=... (or set BATCHCLI_CACHE__URL" in flat(outcome.output)


def test_missing_params_and_fields_are_listed_together(cli: Any) -> None:
    """A required param and a required configuration field missing at once are reported in one message."""
    outcome = cli("exec", NESTED, "-c", "config_prod", "-d", "out")
    assert outcome.exit_code == 2
    text = flat(outcome.output)
    assert "Missing required values: table, region. Give -p table=... -p region=..." in text
    assert "BATCHCLI_TABLE, BATCHCLI_REGION" in text


def test_nested_fields_come_from_the_environment(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCHCLI_DB__HOST sets db.host, and -p wins over the environment for db.port."""
    monkeypatch.setenv("BATCHCLI_DB__HOST", "env-host")
    monkeypatch.setenv("BATCHCLI_DB__PORT", "1111")
    monkeypatch.setenv("BATCHCLI_TABLE", "from_env")
    config = settings(cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "db.port=2222"))
    assert config["db"]["host"] == "env-host"
    assert config["db"]["port"] == 2222


def test_a_bad_environment_value_names_the_variable(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value from the environment that does not cast says which variable holds it."""
    monkeypatch.setenv("BATCHCLI_DB__POOL__SIZE", "lots")
    outcome = cli("exec", NESTED, "-c", "config_dev", "-d", "out", "-p", "table=t")
    assert outcome.exit_code == 2
    text = flat(outcome.output)
    assert "Param 'db.pool.size' expects int, got 'lots'" in text
    assert "The value comes from the environment variable BATCHCLI_DB__POOL__SIZE." in text
