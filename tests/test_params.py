"""Every param type through the real CLI: good values arrive typed, bad ones name the position and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECTS

TYPES = PROJECTS / "ux_types" / "job.py"


def received(outcome: Any) -> dict[str, Any]:
    assert outcome.exit_code == 0, outcome.output
    return json.loads((outcome.run_dir / "values.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("args", "name", "expected"),
    [
        (["count=42"], "count", ["int", 42]),
        (["ratio=2.5"], "ratio", ["float", 2.5]),
        (["price=19.99"], "price", ["Decimal", "19.99"]),
        (["flag=yes"], "flag", ["bool", True]),
        (["path=data/in.csv"], "path", ["PosixPath", "data/in.csv"]),
        (["path=none"], "path", ["NoneType", None]),
        (["when=2024-01-31T12:00:00Z"], "when", ["datetime", "2024-01-31 12:00:00+00:00"]),
        (["day=2024-02-29"], "day", ["date", "2024-02-29"]),
        (["wait=1h30m"], "wait", ["timedelta", 5400.0]),
        (["wait=PT90S"], "wait", ["timedelta", 90.0]),
        (["wait=45"], "wait", ["timedelta", 45.0]),
        (["mode=slow"], "mode", ["Mode", "SLOW"]),
        (["level=high"], "level", ["str", "high"]),
        (["ids=1,2,3"], "ids", ["list", [["int", 1], ["int", 2], ["int", 3]]]),
        (["ids=1", "ids=2"], "ids", ["list", [["int", 1], ["int", 2]]]),
        (["tags=b,a,b"], "tags", ["set", [["str", "a"], ["str", "b"]]]),
        (["pair=7,seven"], "pair", ["tuple", [["int", 7], ["str", "seven"]]]),
        (["sizes=1.5", "sizes=2,3"], "sizes", ["tuple", [["float", 1.5], ["float", 2.0], ["float", 3.0]]]),
        (["limits=a:1,b:2"], "limits", ["dict", {"a": ["int", 1], "b": ["int", 2]}]),
        (["token=s3cr3t"], "token", "Secret"),
    ],
)
def test_each_type_arrives_cast(cli: Any, args: list[str], name: str, expected: Any) -> None:
    """A -p value of each supported type reaches the constructor as that type."""
    flags = [f for arg in args for f in ("-p", arg)]
    values = received(cli("exec", TYPES, "-d", "out", *flags))
    assert values[name] == expected


def test_defaults_apply_without_p(cli: Any) -> None:
    """Params not given keep their declared defaults."""
    values = received(cli("exec", TYPES, "-d", "out"))
    assert values["count"] == ["int", 1]
    assert values["wait"] == ["timedelta", 1.0]
    assert values["ids"] == ["list", []]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("count=many", "Param 'count' expects int, got 'many'. Use a whole number, e.g. 42."),
        ("ids=1,x,3", "Param 'ids' expects list of int, got '1,x,3': element 2 ('x') is not an int."),
        ("sizes=1,2,big", "element 3 ('big') is not a float"),
        ("limits=a:1,b:x", "Param 'limits' expects dict of str to int, got 'a:1,b:x': value of 'b' ('x') is not an int."),
        ("limits=a:1,b", "element 2 ('b') has no ':'. Use key:value pairs separated by commas, e.g. a:1,b:2."),
        ("pair=1", "it has 1 element, needs 2. Give 2 comma-separated values: int, str."),
        ("wait=soon", "Use e.g. 90s, 5m, 1h30m, 2d, 500ms, PT1H30M, or seconds like 90."),
        ("mode=medium", "Allowed: 'fast', 'slow'."),
        ("level=max", "Allowed: 'low', 'high'."),
        ("flag=maybe", "Use one of: true, false, yes, no, on, off, 1, 0."),
        ("day=31/01/2024", "Use ISO 8601, e.g. 2024-01-31."),
    ],
)
def test_bad_values_name_the_position_and_the_fix(cli: Any, arg: str, message: str) -> None:
    """A bad value exits 2 with one message naming the param, the bad element and how to write it."""
    outcome = cli("exec", TYPES, "-d", "out", "-p", arg)
    assert outcome.exit_code == 2
    assert message in " ".join(outcome.output.split())
    assert "Traceback" not in outcome.output
    assert outcome.run_dir is None


def test_scalar_given_twice_is_refused(cli: Any) -> None:
    """Repeating -p for a single-valued param says to keep one."""
    outcome = cli("exec", TYPES, "-d", "out", "-p", "count=1", "-p", "count=2")
    assert outcome.exit_code == 2
    assert "Param 'count' takes one int but was given 2 times; keep one." in " ".join(outcome.output.split())


def test_unknown_param_suggests_the_close_name(cli: Any) -> None:
    """A misspelt name exits 2 and suggests the real one."""
    outcome = cli("exec", TYPES, "-d", "out", "-p", "cuont=3")
    assert outcome.exit_code == 2
    assert "Unknown param or configuration name: 'cuont' (did you mean 'count'?)" in " ".join(outcome.output.split())


def test_types_through_a_real_process(run_batchcli: Any, tmp_path: Path) -> None:
    """The same casting holds in a real `python -m batchcli` process."""
    outcome = run_batchcli("exec", TYPES, "-d", "out", "-p", "ids=4,5", "-p", "wait=2m", "-p", "ids=6")
    values = received(outcome)
    assert values["ids"] == ["list", [["int", 4], ["int", 5], ["int", 6]]]
    assert values["wait"] == ["timedelta", 120.0]


def test_params_come_from_the_environment(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCHCLI_<NAME> gives a param its value, cast like -p (collections comma-separated)."""
    monkeypatch.setenv("BATCHCLI_COUNT", "5")
    monkeypatch.setenv("BATCHCLI_IDS", "7,8")
    monkeypatch.setenv("BATCHCLI_CONCURRENCY", "3")
    values = received(cli("exec", TYPES, "-d", "out"))
    assert values["count"] == ["int", 5]
    assert values["ids"] == ["list", [["int", 7], ["int", 8]]]


def test_p_wins_over_the_environment(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name given both ways takes the -p value."""
    monkeypatch.setenv("BATCHCLI_COUNT", "5")
    values = received(cli("exec", TYPES, "-d", "out", "-p", "count=6"))
    assert values["count"] == ["int", 6]


def test_unknown_batchcli_variables_are_ignored(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCHCLI_* variables that name no param (batchcli's own settings, typos) do not fail the run."""
    monkeypatch.setenv("BATCHCLI_PROGRESS_INTERVAL", "5")
    monkeypatch.setenv("BATCHCLI_NO_SUCH_PARAM", "x")
    values = received(cli("exec", TYPES, "-d", "out"))
    assert values["count"] == ["int", 1]


def test_environment_params_in_a_real_process(run_batchcli: Any) -> None:
    """A child process reads BATCHCLI_<NAME> from its environment."""
    values = received(run_batchcli("exec", TYPES, "-d", "out", BATCHCLI_WAIT="90s", BATCHCLI_MODE="slow"))
    assert values["wait"] == ["timedelta", 90.0]
    assert values["mode"] == ["Mode", "SLOW"]
