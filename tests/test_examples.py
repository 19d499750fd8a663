"""The examples in ``examples/`` run as documented and produce the expected records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUICKSTART = EXAMPLES / "quickstart.py"
REINDEX = EXAMPLES / "reindex"


def test_quickstart_succeeds_without_flaky_failures(cli) -> None:
    """The single-file quick start processes every id and exits 0 when no connection drops and no record is malformed."""
    result = cli("exec", QUICKSTART, "-d", "out", "-p", "count=60", "-p", "failure_rate=0")
    assert result.exit_code == 0, result.output
    summary = result.summary
    assert (summary["succeeded"], summary["failed"], summary["total"]) == (60, 0, 60)
    assert summary["job"] == "quickstart"
    assert "Finished: 60 succeeded, 0 failed of 60" in result.output


def test_quickstart_records_its_malformed_users(cli) -> None:
    """With malformed_every=97 the quick start fails every 97th user at once (a ValueError) and records it."""
    result = cli(
        "exec", QUICKSTART, "-d", "out",
        "-p", "count=200", "-p", "failure_rate=0", "-p", "backoff_s=0", "-p", "malformed_every=97",
    )
    assert result.exit_code == 1, result.output
    assert (result.summary["succeeded"], result.summary["failed"]) == (198, 2)
    failed = sorted(result.failed, key=lambda f: f["ordinal"])
    assert [f["input"] for f in failed] == [{"value": 97}, {"value": 194}]
    assert all(f["error_type"] == "ValueError" and f["attempts"] == 1 for f in failed)
    assert "user 97 has a malformed record" in failed[0]["error_message"]


def test_quickstart_retries_dropped_connections(cli) -> None:
    """With every attempt dropping its connection, the quick start retries each item max_retries times, then fails it."""
    result = cli(
        "exec", QUICKSTART, "-d", "out",
        "-p", "count=5", "-p", "failure_rate=1", "-p", "backoff_s=0", "-p", "max_retries=2",
    )
    assert result.exit_code == 1
    assert result.summary["failed"] == 5
    assert {(f["error_type"], f["attempts"]) for f in result.failed} == {("ConnectionResetError", 3)}


@pytest.mark.parametrize(
    ("config", "index", "label_args", "label"),
    [
        ("config_dev", "records-dev", (), "manual"),
        ("config_prod", "records", ("-p", "batch_label=nightly"), "nightly"),
    ],
)
def test_reindex_runs_with_each_configuration(cli, config, index, label_args, label) -> None:
    """The directory example runs with -c config_dev and -c config_prod, writing the index the configuration names."""
    result = cli("exec", REINDEX, "-c", config, "-d", "out", "-p", "generate=40", *label_args)
    assert result.exit_code == 0, result.output
    summary = result.summary
    assert (summary["succeeded"], summary["failed"], summary["total"]) == (40, 0, 40)
    assert summary["configuration"] == {"config_dev": "DevConfig", "config_prod": "ProdConfig"}[config]
    lines = [json.loads(line) for line in (result.run_dir / f"{index}.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == list(range(40))
    assert {line["label"] for line in lines} == {label}


def test_reindex_reads_a_records_file_and_fails_a_record_without_id(cli, tmp_path) -> None:
    """The directory example streams a records file given as a Path param and records the line it cannot index."""
    records = tmp_path / "records.jsonl"
    records.write_text('{"id": 1, "title": "a"}\n\n{"title": "no id"}\n{"id": 3, "title": "c"}\n')
    result = cli("exec", REINDEX, "-c", "config_dev", "-d", "out", "-p", f"records={records}")
    assert result.exit_code == 1, result.output
    assert (result.summary["succeeded"], result.summary["failed"], result.summary["total"]) == (2, 1, 3)
    (failure,) = result.failed
    assert failure["input"] == {"title": "no id"}
    assert failure["error_type"] == "KeyError"
    assert "indexer.py" in failure["traceback"]


def test_reindex_without_c_asks_for_a_configuration(cli) -> None:
    """The directory example has two configurations, so running it without -c names both and asks for one."""
    result = cli("exec", REINDEX, "-d", "out")
    assert result.exit_code == 2
    assert "config_dev, config_prod" in result.output
    assert "-c NAME" in result.output
    assert "Traceback" not in result.output
