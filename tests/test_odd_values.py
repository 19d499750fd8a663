"""Keys, failed inputs and results of shapes the journal, failed.jsonl and the exports must still keep: a key past
64 bits, a value that holds itself, a value nested deeper than the interpreter's stack. Each crashed the recorder
(every session, so resume could never finish the run) or the export, with batchcli's traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS

import batchcli

JOB = PROJECTS / "odd_values" / "odd_values_job.py"


def run(cli: Any, tmp_path: Path, *params: str) -> Any:
    args = ["exec", JOB, "-d", "out", "--no-shell", "-p", f"ledger={tmp_path / 'ledger'}", "-p", "max_retries=0"]
    for param in params:
        args += ["-p", param]
    return cli(*args)


def ledger(tmp_path: Path) -> list[int]:
    path = tmp_path / "ledger"
    return sorted(int(n) for n in path.read_text().split()) if path.exists() else []


def failed_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "failed.jsonl").read_text().splitlines()]


def test_keys_past_64_bits_are_journaled_retried_and_exported(cli, tmp_path: Path) -> None:
    """A 65-bit item_key failed every flush ("Python int too large to convert to SQLite INTEGER"): each session
    crashed with nothing recorded, after doing the work, and resume did it all again."""
    ran = run(cli, tmp_path, "mode=big_keys", "fail=7")
    assert ran.exit_code == 1, ran.output
    assert "Traceback" not in ran.output and "Recording the run failed" not in ran.output, ran.output
    with sqlite3.connect(ran.run_dir / "journal.sqlite") as conn:
        keys = {k for (k,) in conn.execute("SELECT key FROM done_keys")}
    assert keys == {str(2**64 + n) for n in range(10) if n != 7}
    (failure,) = failed_lines(ran.run_dir)
    assert failure["input"] == {"id": 7}
    again = cli("retry", ran.run_dir, "-d", "out", "--no-shell")
    assert again.exit_code == 1 and "1 failed" in again.output, again.output  # still refused, and recorded
    exported = cli("results", ran.run_dir)
    rows = [json.loads(line) for line in exported.output.splitlines()]
    assert [(r["key"], r["result"]["id"]) for r in rows] == [(str(2**64 + n), n) for n in range(10) if n != 7]
    assert ledger(tmp_path) == [n for n in range(10) if n != 7]


def test_a_failed_input_that_holds_itself_is_recorded_and_retried(cli, tmp_path: Path) -> None:
    """json_form recursed for ever on it: the run crashed with batchcli's traceback, and its failures were lost."""
    ran = run(cli, tmp_path, "mode=cycles")
    assert ran.exit_code == 1, ran.output
    assert "Traceback" not in ran.output, ran.output
    failures = failed_lines(ran.run_dir)
    assert [f["ordinal"] for f in failures] == [0, 3, 6, 9]
    assert failures[1]["input"] == "{'id': 3, 'self': {...}}"
    assert ledger(tmp_path) == [1, 2, 4, 5, 7, 8]
    retried = cli("retry", ran.run_dir, "-d", "out", "--no-shell")
    assert "Finished: 0 succeeded, 4 failed of 4" in " ".join(retried.output.split()), retried.output


@pytest.mark.parametrize("returns, shown", [("cycle", "{'id': 4, 'self': {...}}"), ("deep", "<list object; repr() raised RecursionError>")])
def test_a_result_too_tangled_for_json_is_exported_as_its_repr(cli, tmp_path: Path, returns: str, shown: str) -> None:
    """A result that holds itself (or is nested 1,200 deep) was kept, and then every export crashed at it."""
    ran = run(cli, tmp_path, "mode=big_keys", f"returns={returns}", "count=6")
    assert ran.exit_code == 0, ran.output
    exported = cli("results", ran.run_dir)
    assert exported.exit_code == 0, exported.output
    rows = {r["ordinal"]: r["result"] for r in map(json.loads, exported.output.splitlines())}
    assert rows[4] == shown and rows[5] == {"id": 5} and len(rows) == 6
    as_csv = cli("results", ran.run_dir, "--format", "csv")
    assert as_csv.exit_code == 0 and shown.replace('"', '""') in as_csv.output, as_csv.output


def test_a_dict_whose_keys_are_alike_as_json_text_is_written_as_pairs(cli, tmp_path: Path) -> None:
    """{1: .., "1": ..} was written as one JSON key "1" holding only the later value, in failed.jsonl and in an export
    that goes through the JSON form (a tuple key): the earlier value was lost."""
    ran = run(cli, tmp_path, "mode=keys_alike", "returns=keys_alike", "count=6")
    assert ran.exit_code == 1, ran.output
    [failure] = failed_lines(ran.run_dir)
    assert failure["ordinal"] == 5 and failure["input"] == [["id", 5], [1, "the int"], ["1", "the str"]], failure
    exported = cli("results", ran.run_dir)
    assert exported.exit_code == 0, exported.output
    rows = {r["ordinal"]: r["result"] for r in map(json.loads, exported.output.splitlines())}
    assert rows[4] == [[1, "the int"], ["1", "the str"], [[1, 2], "a tuple"]] and rows[3] == {"id": 3}
    kept = {row.ordinal: row.value for row in batchcli.read_results(ran.run_dir)}
    assert kept[4] == {1: "the int", "1": "the str", (1, 2): "a tuple"}  # read_results gives the dict itself


@pytest.mark.parametrize("executor", ["async", "process"])
def test_ints_past_4300_digits_are_recorded_retried_and_exported(cli, tmp_path: Path, executor: str) -> None:
    """An int longer than `str()` writes (4300 digits) as a failed input stopped the recorder ("Exceeds the limit"):
    the run crashed with 0 succeeded, and so did every resume; its retry line, and `results`, raised the same."""
    long = 10**5000
    ran = cli(
        "exec", JOB, "-d", "out", "--no-shell", "-v", "-p", f"ledger={tmp_path / 'ledger'}", "-p", "mode=long_ints",
        "-p", "fail=3,6", "-p", "flaky=1,4", "-p", "backoff_s=0.01", "-p", f"executor={executor}",
    )  # fmt: skip
    assert ran.exit_code == 1, ran.output
    assert "Traceback" not in ran.output and "Exceeds the limit" not in ran.output, ran.output
    assert "Finished: 8 succeeded, 2 failed of 10" in " ".join(ran.output.split())
    log = (ran.run_dir / "batchcli.log").read_text()
    # Once per flaky item, or twice when its retry ran in the other worker process (each has its own `flaky`).
    assert 2 <= log.count("Retrying item <int object>") <= 4 and "Exceeds the limit" not in log
    digits = {n: "1" + "0" * 4999 + str(n) for n in range(10)}  # 10**5000 + n, written out
    assert sorted((f["ordinal"], f["input"]) for f in failed_lines(ran.run_dir)) == [(3, digits[3]), (6, digits[6])]
    exported = cli("results", ran.run_dir)
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in exported.output.splitlines()]
    assert [r["key"] for r in rows] == [0, 1, 2, 4, 5, 7, 8, 9]
    assert rows[1]["result"] == digits[1] and rows[2]["result"] == {"id": 2, "value": digits[2]}
    assert cli("results", ran.run_dir, "--format", "csv").exit_code == 0
    values = {r.key: r.value for r in batchcli.read_results(ran.run_dir)}
    assert values[1] == long + 1 and values[2] == {"id": 2, "value": long + 2}  # the values themselves, exactly
    again = cli("retry", ran.run_dir, "-d", "out", "--no-shell", "-p", "fail=")
    assert again.exit_code == 0 and "Finished: 2 succeeded, 0 failed of 2" in " ".join(again.output.split())
    assert ledger(tmp_path) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_an_int_just_under_the_digit_limit_is_exported_as_a_number_on_every_path(cli) -> None:
    """An int of 4,250 digits is written as a JSON number, whether the export encodes its value whole or part by part
    (beside bytes): the second path cut at 14,000 bits (4,215 digits) and wrote such an int as a string."""
    results = Path(__file__).resolve().parent / "projects" / "results"
    ran = cli("exec", results / "near_limit.py", "-d", "out")
    assert ran.exit_code == 0, ran.output
    exported = cli("results", ran.run_dir)
    assert exported.exit_code == 0, exported.output
    big = 10**4250
    rows = [json.loads(line) for line in exported.output.splitlines()]
    assert [r["result"] for r in rows] == [big, {"n": big + 1}, {"n": big + 2, "b": "b'x'"}]


def test_a_failed_input_nested_past_the_stack_is_recorded(cli, tmp_path: Path) -> None:
    ran = run(cli, tmp_path, "mode=deep")
    assert ran.exit_code == 1, ran.output
    assert "Traceback" not in ran.output, ran.output
    (failure,) = failed_lines(ran.run_dir)
    assert (failure["ordinal"], failure["input"]) == (2, "<list object; repr() raised RecursionError>")
    assert ledger(tmp_path) == [0, 1, 3, 4, 5, 6, 7, 8, 9]


def test_a_failed_input_whose_class_cannot_rebuild_it_is_named_and_can_be_left_out(cli) -> None:
    """Its __reduce__ raises when loaded: retry was refused with "restore that class (same module and name)", though
    the class was there. The message says it is the class's own unpickling code, and the filters leave it out."""
    job = PROJECTS / "unloadable" / "unloadable_job.py"
    ran = cli("exec", job, "-d", "out", "--no-shell", "-p", "max_retries=0")
    assert ran.exit_code == 1, ran.output
    refused = cli("retry", ran.run_dir, "-d", "out", "--no-shell", "-p", "ok=true")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "RuntimeError: input 3 cannot be rebuilt" in said, refused.output
    assert "restore that class" not in said and "Its class's unpickling code" in said and "Traceback" not in said
    others = cli("retry", ran.run_dir, "-d", "out", "--no-shell", "-p", "ok=true", "--error-type", "ValueError")
    assert others.exit_code == 0 and "Finished: 5 succeeded, 0 failed of 5" in " ".join(others.output.split()), others.output


@pytest.mark.parametrize("raise_in", ["setup", "iter", "finish"])
def test_an_error_whose_str_raises_ends_the_run_with_its_summary(cli, raise_in: str) -> None:
    """An exception whose __str__ raises, from setup(), the Source or finish(), crashed batchcli itself as it wrote
    summary.json: our traceback, exit 1 instead of 3, no summary. Raised in process() it was already handled."""
    outcome = cli("exec", PROJECTS / "odd_values" / "broken_str.py", "-d", "out", "-p", f"raise_in={raise_in}")
    assert outcome.exit_code == 3, outcome.output
    fatal = outcome.summary["fatal"]
    assert fatal["type"] == "Broken" and fatal["message"] == "<str() of this Broken raised RuntimeError>", fatal
    assert "report.py" not in outcome.output


def test_a_param_with_bytes_that_are_not_utf8_is_kept_escaped_and_the_run_ends_well(run_batchcli) -> None:
    """A -p value with bytes that are not UTF-8 (Python holds them as lone surrogates) crashed the run as it wrote
    summary.json, after every item had succeeded, and each resume crashed the same way. It is written escaped."""
    label = b"caf\xff\xfe".decode("utf-8", "surrogateescape")
    ran = run_batchcli("exec", PROJECTS / "odd_values" / "broken_str.py", "-d", "out", "-p", f"label={label}")
    assert ran.exit_code == 0, ran.output
    summary = json.loads((ran.run_dir / "summary.json").read_bytes().decode("utf-8"))  # valid UTF-8, strictly
    assert summary["params"]["label"] == label and summary["succeeded"] == 3
    assert not list(ran.run_dir.glob("*.tmp"))
