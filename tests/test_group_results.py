"""`batchcli results GROUP` and read_results(group_dir): a shard group's results as one run's, through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECTS

import batchcli

SQUARES = PROJECTS / "results" / "squares.py"
WORDS = PROJECTS / "results" / "words.py"


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def shards(cli: Any, job: Path, count: int, indexes: tuple[int, ...], n: int, *params: str, group: str = "g") -> Path:
    """Run the given shards of one group in-process, in the default output directory; returns the group directory."""
    for index in indexes:
        ran = cli("exec", job, "-p", f"count={count}", *params, "--shard", f"{index}/{n}", "--group", group)
        assert ran.exit_code == 0, ran.output
    return Path("batchcli_outputs") / group


def test_a_group_split_by_position_reads_back_in_source_order(cli: Any, run_batchcli: Any, tmp_path: Path) -> None:
    """Three positional shards export as one run would: every result once, by source position, no shard column."""
    group = shards(cli, SQUARES, 14, (0, 1, 2), 3, "-p", "none_every=5", "-p", "point_every=4", group="nightly")
    wanted = [n for n in range(14) if n % 5]
    exported = run_batchcli("results", tmp_path / group)  # the main path, as a real process, as docs/executors.md shows it
    assert exported.exit_code == 0, exported.output
    rows = jsonl(exported.output)
    assert [r["ordinal"] for r in rows] == wanted
    assert rows[1] == {"ordinal": 2, "result": {"n": 2, "square": 4}}
    assert rows[3] == {"ordinal": 4, "result": {"x": 4, "y": 16}}  # a pickled Point, as its JSON form
    assert "incomplete" not in exported.output
    table = list(csv.reader(io.StringIO(cli("results", group, "-f", "csv").output)))
    assert table[0] == ["ordinal", "result"] and [int(r[0]) for r in table[1:]] == wanted
    results = list(batchcli.read_results(group))
    assert [(r.ordinal, r.shard) for r in results] == [(n, n % 3) for n in wanted]
    assert results[3].value.y == 16 and results[0].value == {"n": 1, "square": 1}


def test_a_keyed_group_comes_shard_by_shard_with_its_shard_column(cli: Any) -> None:
    """Keyed shards keep no source position: rows go shard 0 then shard 1, each in its order, with key and shard."""
    group = shards(cli, WORDS, 9, (0, 1), 2, "-p", "seed=3")
    table = list(csv.reader(io.StringIO(cli("results", group, "-f", "csv").output)))
    assert table[0] == ["ordinal", "key", "shard", "result"]
    body = table[1:]
    assert sorted(r[1] for r in body) == sorted(f"word-{n}" for n in range(9))
    assert all(r[3] == r[1].upper() for r in body)
    by_shard = [int(r[2]) for r in body]
    assert by_shard == sorted(by_shard) and set(by_shard) == {0, 1}
    for shard in (0, 1):
        ordinals = [int(r[0]) for r in body if int(r[2]) == shard]
        assert ordinals == list(range(len(ordinals)))  # each shard's own source order
    results = list(batchcli.read_results(group))
    assert [(r.shard, r.ordinal, r.key) for r in results] == [(int(r[2]), int(r[0]), r[1]) for r in body]
    lines = jsonl(cli("results", group).output)  # JSON lines carry the same columns, in the same order
    assert [list(line) for line in lines] == [["ordinal", "key", "shard", "result"]] * len(body)
    assert [[line["ordinal"], line["key"], line["shard"], line["result"]] for line in lines] == [
        [int(r[0]), r[1], int(r[2]), r[3]] for r in body
    ]


def test_a_group_with_a_missing_shard_writes_what_exists_and_says_how_to_finish(cli: Any, tmp_path: Path) -> None:
    """With shard 1 of 2 never run, results are shard 0's, and both the command and read_results warn with the fix."""
    group = shards(cli, SQUARES, 6, (0,), 2)
    out = tmp_path / "r.jsonl"
    exported = cli("results", group, "-o", out)
    assert exported.exit_code == 0, exported.output
    assert [r["ordinal"] for r in jsonl(out.read_text())] == [0, 2, 4]
    said = " ".join(exported.output.split())
    assert "Group 'g' is incomplete (shard 1 missing)" in said
    assert "--shard I/2 --group g" in said
    with pytest.warns(UserWarning, match="shard 1 missing"):
        assert [r.ordinal for r in batchcli.read_results(group)] == [0, 2, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shards(cli, SQUARES, 6, (1,), 2)
        assert [r.ordinal for r in batchcli.read_results(group)] == list(range(6))  # complete: no warning


def test_an_export_of_a_shard_into_its_groups_directory_is_refused(cli: Any, tmp_path: Path) -> None:
    """-o inside the group's directory wrote a stray file among its shards (or, as group.json, replaced the record
    that makes it a group), with exit 0; the group's own export was already refused there."""
    group = shards(cli, SQUARES, 6, (0, 1), 2)
    for name in ("out.jsonl", "group.json"):
        before = (group / "group.json").read_text()
        refused = cli("results", group / "shard-0-of-2", "-o", group / name)
        assert refused.exit_code == 2, refused.output
        assert "is inside the directory of the shard group" in " ".join(refused.output.split())
        assert not (group / "out.jsonl").exists() and (group / "group.json").read_text() == before
