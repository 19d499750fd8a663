"""One param type object per type: -p casting, --help, completion and batchcli.testing spell an Enum alike.

The rule: an Enum is written by value when every member's value is a str, int or float (what -p
reads back exactly), else every member by name. Casting accepts both spellings either way.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import PROJECTS
from test_help import complete, row

from batchcli.testing import raw_values, run_job

JOB = PROJECTS / "enum_spelling" / "job.py"


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that every row of the help tables stays on one line."""
    monkeypatch.setenv("COLUMNS", "220")


def received(cli: Any, *params: str) -> dict[str, str]:
    """Run the job with ``params`` and return the members its Source received, by name."""
    args = ["exec", JOB, "-d", "out"]
    for param in params:
        args += ["-p", param]
    outcome = cli(*args)
    assert outcome.exit_code == 0, outcome.output
    return json.loads((outcome.run_dir / "received.json").read_text())  # type: ignore[no-any-return]


def test_help_writes_enums_by_the_one_rule(cli: Any) -> None:
    """--help names a float-valued Enum by its values and a mixed one by its names, defaults included."""
    outcome = cli("exec", JOB, "--help")
    assert outcome.exit_code == 0, outcome.output
    assert row(outcome.output, "ratio")[1:3] == ["one of 0.5, 1.0", "0.5"]
    assert row(outcome.output, "shape")[1:3] == ["one of 'POINT', 'LINE'", "POINT"]


def test_completion_offers_the_spellings_help_and_errors_show() -> None:
    """Completing name= offers the same spellings as --help and the error's Allowed list, filtered by what is typed."""
    assert complete("exec", str(JOB), "-p", "ratio=") == ["ratio=0.5", "ratio=1.0"]
    assert complete("exec", str(JOB), "-p", "shape=") == ["shape=POINT", "shape=LINE"]
    assert complete("exec", str(JOB), "-p", "shape=L") == ["shape=LINE"]


@pytest.mark.parametrize(
    ("typed", "offered"),
    [
        ("flag=", ["flag=true", "flag=false"]),
        ("mode=", ["mode=fast", "mode=slow"]),
        ("level=h", ["level=high"]),
        ("path=", ["path=none"]),
        ("ids=", []),
        ("count=", []),
    ],
)
def test_completion_asks_each_param_type(typed: str, offered: list[str]) -> None:
    """bool, Enum and Literal complete their values, T | None adds none, and a list (whose none would not cast) nothing."""
    assert complete("exec", str(PROJECTS / "ux_types" / "job.py"), "-p", typed) == offered


def test_every_completed_spelling_casts_back(cli: Any) -> None:
    """Each spelling completion offers reaches the Source as its member through -p."""
    assert received(cli, "ratio=1.0", "shape=LINE") == {"ratio": "FULL", "shape": "LINE"}
    assert received(cli, "ratio=0.5", "shape=POINT") == {"ratio": "HALF", "shape": "POINT"}


def test_casting_still_accepts_the_other_spelling(cli: Any) -> None:
    """A member's name (any case) and a plain value still cast, whichever spelling batchcli writes."""
    assert received(cli, "ratio=full", "shape=point") == {"ratio": "FULL", "shape": "POINT"}


def test_bad_enum_value_lists_the_same_spellings(cli: Any) -> None:
    """A value that is no member is refused with the spellings --help and completion use."""
    outcome = cli("exec", JOB, "-d", "out", "-p", "ratio=2")
    assert outcome.exit_code == 2
    assert "Param 'ratio' expects one of 0.5, 1.0, got '2'. Allowed: 0.5, 1.0." in " ".join(outcome.output.split())


def test_testing_writes_enum_params_by_the_same_rule(tmp_path: Path) -> None:
    """batchcli.testing passes Enum members as the spellings completion offers, and the job receives them."""
    from batchcli.load.project import load_project

    module = load_project(str(JOB)).modules()[0]
    ratio, shape = vars(module)["Ratio"], vars(module)["Shape"]
    assert raw_values(ratio.FULL) == ("1.0",)
    assert raw_values(shape.POINT) == ("POINT",)
    outcome = run_job(JOB, params={"ratio": ratio.FULL, "shape": shape.LINE}, output_dir=tmp_path)
    assert outcome.ok, outcome.output
    assert json.loads((outcome.run_dir / "received.json").read_text()) == {"ratio": "FULL", "shape": "LINE"}


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (bool, False),
        (timedelta, timedelta(minutes=90)),
        (datetime, datetime(2024, 1, 31, 12, 30)),
        (Literal["low", "high"], "high"),
        (Literal[True, 1], 1),
        (int | None, None),
        (list[int], [3, 1, 2]),
        (dict[str, timedelta], {"a": timedelta(seconds=1.5)}),
        (tuple[int, bool] | None, (7, True)),
        (set[str], {"b", "a"}),
    ],
)
def test_each_type_reads_back_what_it_writes(annotation: object, value: object) -> None:
    """A param type's render gives the text its own cast turns back into the same value."""
    from batchcli.load.annotations import param_type

    kind = param_type(annotation)
    assert kind.cast("p", [kind.render(value)]) == value
