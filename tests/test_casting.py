"""Casting ``-p`` strings to declared types, the messages when that fails, and Secret's masking."""

from __future__ import annotations

import inspect
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from batchcli.load.annotations import as_typed
from batchcli.load.casting import cast, describe
from batchcli.errors import CastError, UsageError
from batchcli.load.secret import Secret, masked


class Mode(Enum):
    FAST = "fast"
    SLOW = "slow"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Shape(Enum):
    SQUARE = (1, 1)
    LINE = (1, 0)


class Clash(Enum):
    LOWER = "ab"
    UPPER = "AB"


UTC = timezone.utc


@pytest.mark.parametrize(
    ("annotation", "text", "expected"),
    [
        (str, " spaced ", " spaced "),
        (Any, "x", "x"),
        (inspect.Parameter.empty, "x", "x"),
        (int, "42", 42),
        (int, "-7", -7),
        (float, "1.5", 1.5),
        (Decimal, "19.99", Decimal("19.99")),
        (bool, "true", True),
        (bool, "YES", True),
        (bool, "On", True),
        (bool, "1", True),
        (bool, "false", False),
        (bool, "no", False),
        (bool, "OFF", False),
        (bool, "0", False),
        (Path, "data/in.csv", Path("data/in.csv")),
        (Path, "~/x", Path.home() / "x"),
        (datetime, "2024-01-31T12:00:00", datetime(2024, 1, 31, 12)),
        (datetime, "2024-01-31T12:00:00Z", datetime(2024, 1, 31, 12, tzinfo=UTC)),
        (datetime, "2024-01-31T12:00:00+00:00", datetime(2024, 1, 31, 12, tzinfo=UTC)),
        (datetime, "2024-01-31", datetime(2024, 1, 31)),
        (date, "2024-01-31", date(2024, 1, 31)),
        (date, "2024-01-31Z", date(2024, 1, 31)),
        (timedelta, "90s", timedelta(seconds=90)),
        (timedelta, "5m", timedelta(minutes=5)),
        (timedelta, "1h30m", timedelta(hours=1, minutes=30)),
        (timedelta, "1h 30m", timedelta(hours=1, minutes=30)),
        (timedelta, "2d", timedelta(days=2)),
        (timedelta, "1w", timedelta(weeks=1)),
        (timedelta, "500ms", timedelta(milliseconds=500)),
        (timedelta, "1.5h", timedelta(minutes=90)),
        (timedelta, "PT1H30M", timedelta(hours=1, minutes=30)),
        (timedelta, "P1DT2H", timedelta(days=1, hours=2)),
        (timedelta, "pt45s", timedelta(seconds=45)),
        (timedelta, "90", timedelta(seconds=90)),
        (timedelta, "1.5", timedelta(seconds=1.5)),
        (Mode, "fast", Mode.FAST),
        (Mode, "SLOW", Mode.SLOW),
        (Mode, "Fast", Mode.FAST),
        (Mode, "slow", Mode.SLOW),
        (Level, "2", Level.HIGH),
        (Level, "low", Level.LOW),
        (Shape, "LINE", Shape.LINE),
        (Clash, "ab", Clash.LOWER),
        (Clash, "AB", Clash.UPPER),
        (Literal["fast", "slow"], "slow", "slow"),
        (Literal["fast", "slow"], "FAST", "fast"),
        (Literal[1, 2], "2", 2),
        (Literal[True], "yes", True),
        (int | None, "none", None),
        (int | None, "NULL", None),
        (int | None, "3", 3),
        (Optional[Mode], "Null", None),
        (Optional[Mode], "fast", Mode.FAST),
        (Secret, "hunter2", Secret("hunter2")),
        (int, "1_000", 1000),  # grouped as Python writes it: kept, unlike a non-ASCII digit
        (float, "2_500.5", 2500.5),
    ],
)
def test_scalar_casts_to_declared_type(annotation: object, text: str, expected: object) -> None:
    """Each supported scalar type reads its accepted spellings into a value of exactly that type."""
    result = cast("p", [text], annotation)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("annotation", "text", "message"),
    [
        (int, "4.5", "Param 'p' expects int, got '4.5'. Use a whole number, e.g. 42."),
        (float, "fast", "Param 'p' expects float, got 'fast'. Use a number, e.g. 3.5."),
        (Decimal, "1,5", "Param 'p' expects decimal, got '1,5'. Use a decimal number, e.g. 19.99."),
        (bool, "maybe", "Param 'p' expects bool, got 'maybe'. Use one of: true, false, yes, no, on, off, 1, 0."),
        (Path, "", "Param 'p' expects path, got ''. Give a non-empty file or directory path."),
        (datetime, "31/01/24", "Param 'p' expects datetime (ISO 8601), got '31/01/24'. Use ISO 8601, e.g. 2024-01-31T12:00:00"),
        (date, "2024-13-01", "Param 'p' expects date (ISO 8601), got '2024-13-01'. Use ISO 8601, e.g. 2024-01-31."),
        (timedelta, "5 min", "Param 'p' expects duration, got '5 min'. Use e.g. 90s, 5m, 1h30m, 2d, 500ms, PT1H30M"),
        (timedelta, "PT", "Param 'p' expects duration, got 'PT'."),
        (timedelta, "P1DT", "Param 'p' expects duration, got 'P1DT'."),
        (timedelta, "-5", "Param 'p' expects duration, got '-5'."),
        (timedelta, "1h30", "Param 'p' expects duration, got '1h30'."),
        (Mode, "quick", "Param 'p' expects one of 'fast', 'slow', got 'quick'. Allowed: 'fast', 'slow'."),
        (Level, "3", "Param 'p' expects one of 1, 2, got '3'. Allowed: 1, 2."),
        (Shape, "circle", "Param 'p' expects one of 'SQUARE', 'LINE', got 'circle'. Allowed: 'SQUARE', 'LINE'."),
        (Clash, "Ab", "Param 'p' expects one of 'ab', 'AB', got 'Ab'. Allowed: 'ab', 'AB'."),
        (Literal["fast", "slow"], "quick", "Param 'p' expects one of 'fast', 'slow', got 'quick'. Allowed: 'fast', 'slow'"),
        (Literal[1, 2], "one", "Param 'p' expects one of 1, 2, got 'one'. Allowed: 1, 2."),
        (int | None, "nil", "Param 'p' expects int or none, got 'nil'. Use a whole number, e.g. 42. Or none for no value"),
        # int(), float(), Decimal() and the regex \d read an Arabic-Indic 3 or a fullwidth 7 as the digit: the run got 3.
        (int, "\u0663", "Param 'p' expects int, got '\u0663'. Use a whole number, e.g. 42."),
        (int, "\uff17", "Param 'p' expects int, got '\uff17'. Use a whole number, e.g. 42."),
        (float, "\u0663.5", "Param 'p' expects float, got '\u0663.5'. Use a number, e.g. 3.5."),
        (Decimal, "\u0663", "Param 'p' expects decimal, got '\u0663'. Use a decimal number, e.g. 19.99."),
        (timedelta, "\u0663", "Param 'p' expects duration, got '\u0663'. Use e.g. 90s"),
        (timedelta, "\u0663m", "Param 'p' expects duration, got '\u0663m'. Use e.g. 90s"),
        (timedelta, "PT\u0663S", "Param 'p' expects duration, got 'PT\u0663S'. Use e.g. 90s"),
        (Literal[1, 2], "\u0662", "Param 'p' expects one of 1, 2, got '\u0662'. Allowed: 1, 2."),
    ],
)
def test_scalar_bad_value_names_param_type_value_and_fix(annotation: object, text: str, message: str) -> None:
    """A value that does not convert raises CastError naming the param, the type, the value and how to fix it."""
    with pytest.raises(CastError) as caught:
        cast("p", [text], annotation)
    assert str(caught.value).startswith(message)
    assert caught.value.name == "p" and caught.value.value == text


@pytest.mark.parametrize(
    ("annotation", "raw", "expected"),
    [
        (list[int], ["1,2,3"], [1, 2, 3]),
        (list[int], ["1,2", "3"], [1, 2, 3]),
        (list[int], ["1", "2"], [1, 2]),
        (list[int], [" 1 , 2 "], [1, 2]),
        (list[int], [""], []),
        (list[int], [], []),
        (list[str], ["a,b", "c"], ["a", "b", "c"]),
        (list[str], ['"Smith, J",Doe'], ["Smith, J", "Doe"]),  # an element in double quotes holds commas
        (list[str], ['a, "say ""hi"", then go",b'], ["a", 'say "hi", then go', "b"]),
        (list[str], ["O'Brien,a\"b"], ["O'Brien", 'a"b']),  # a quote that does not open an element is text
        (dict[str, str], ['"where:a,b",x:y'], {"where": "a,b", "x": "y"}),
        (list, ["a,b"], ["a", "b"]),
        (list[Mode], ["fast,SLOW"], [Mode.FAST, Mode.SLOW]),
        (list[int | None], ["1,none"], [1, None]),
        (set[int], ["1,2,2"], {1, 2}),
        (frozenset[str], ["a,b,a"], frozenset({"a", "b"})),
        (tuple[int, ...], ["1,2", "3"], (1, 2, 3)),
        (tuple[int, str], ["1,a"], (1, "a")),
        (tuple[int, str], ["1", "a"], (1, "a")),
        (tuple[datetime, timedelta], ["2024-01-31,5m"], (datetime(2024, 1, 31), timedelta(minutes=5))),
        (dict[str, int], ["a:1,b:2"], {"a": 1, "b": 2}),
        (dict[str, int], ["a:1", "b:2"], {"a": 1, "b": 2}),
        (dict[str, str], ["url:http://x"], {"url": "http://x"}),
        (dict[int, str], ["1:one,2:two"], {1: "one", 2: "two"}),
        (dict, ["a:b"], {"a": "b"}),
        (list[int] | None, ["none"], None),
        (Optional[list[int]], ["1,2"], [1, 2]),
    ],
)
def test_collection_concatenates_comma_separated_values(annotation: object, raw: list[str], expected: object) -> None:
    """Collections join every -p value and split each on commas, casting each element to the element type."""
    result = cast("ids", raw, annotation)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("annotation", "raw", "message"),
    [
        (list[int], ["1,x,3"], "Param 'ids' expects list of int, got '1,x,3': element 2 ('x') is not an int."),
        (list[int], ["1,2", "x"], "Param 'ids' expects list of int, got '1,2,x': element 3 ('x') is not an int."),
        (set[float], ["a"], "Param 'ids' expects set of float, got 'a': element 1 ('a') is not a float."),
        (tuple[int, ...], ["1,,2"], "Param 'ids' expects tuple of int, got '1,,2': element 2 ('') is not an int."),
        (
            list[Mode],
            ["fast,quick"],
            "Param 'ids' expects list of one of 'fast', 'slow', got 'fast,quick': "
            "element 2 ('quick') is not one of 'fast', 'slow'. Allowed: 'fast', 'slow'.",
        ),
        (
            list[datetime],
            ["2024-01-31,today"],
            "Param 'ids' expects list of datetime (ISO 8601), got '2024-01-31,today': "
            "element 2 ('today') is not a datetime (ISO 8601). Use ISO 8601, e.g. 2024-01-31T12:00:00",
        ),
        (
            tuple[int, str],
            ["1"],
            "Param 'ids' expects tuple (int, str), got '1': it has 1 element, needs 2. "
            "Give 2 comma-separated values: int, str.",
        ),
        (tuple[int, str], ["1,a,b"], "Param 'ids' expects tuple (int, str), got '1,a,b': it has 3 elements, needs 2."),
        (tuple[int, str], ["a,b"], "Param 'ids' expects tuple (int, str), got 'a,b': element 1 ('a') is not an int."),
        (
            dict[str, int],
            ["a:1,b"],
            "Param 'ids' expects dict of str to int, got 'a:1,b': element 2 ('b') has no ':'. "
            "Use key:value pairs separated by commas, e.g. a:1,b:2.",
        ),
        (
            dict[str, int],
            ["a:1,b:x"],
            "Param 'ids' expects dict of str to int, got 'a:1,b:x': value of 'b' ('x') is not an int.",
        ),
        (dict[int, str], ["1:a,x:b"], "Param 'ids' expects dict of int to str, got '1:a,x:b': key 2 ('x') is not an int"),
        (
            list[str],
            ['"Smith, J,Doe'],
            "Param 'ids' expects list of str, got '\"Smith, J,Doe': its double quotes do not pair up (unexpected end of "
            "data). Put an element that holds commas in double quotes, a quote inside it doubled: "
            "-p names='\"Smith, J\",Doe'.",
        ),
    ],
)
def test_collection_bad_element_names_its_position(annotation: object, raw: list[str], message: str) -> None:
    """A bad element is reported with its 1-based position (or key), its text, and the element type's fix."""
    with pytest.raises(CastError) as caught:
        cast("ids", raw, annotation)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, "str"),
        (Any, "str"),
        (int, "int"),
        (float, "float"),
        (bool, "bool"),
        (Decimal, "decimal"),
        (Path, "path"),
        (datetime, "datetime (ISO 8601)"),
        (date, "date (ISO 8601)"),
        (timedelta, "duration"),
        (Secret, "secret"),
        (Mode, "one of 'fast', 'slow'"),
        (Literal["a", "b"], "one of 'a', 'b'"),
        (int | None, "int or none"),
        (Optional[Path], "path or none"),
        (list[int], "list of int"),
        (set[str], "set of str"),
        (frozenset[int], "set of int"),
        (tuple[int, ...], "tuple of int"),
        (tuple[int, str], "tuple (int, str)"),
        (dict[str, int], "dict of str to int"),
        (list[int] | None, "list of int or none"),
    ],
)
def test_describe_gives_short_human_type_names(annotation: object, expected: str) -> None:
    """describe() gives the short type name used in messages and --help."""
    assert describe(annotation) == expected


@pytest.mark.parametrize("annotation", [int, int | None, Mode, Secret])
def test_scalar_given_twice_is_a_usage_error(annotation: object) -> None:
    """Repeating a scalar param is a UsageError naming the param and the count, and never echoes the values."""
    with pytest.raises(UsageError) as caught:
        cast("n", ["1", "2"], annotation)
    assert not isinstance(caught.value, CastError)
    assert "Param 'n'" in str(caught.value) and "given 2 times" in str(caught.value)
    assert "keep one" in str(caught.value)
    assert "'1'" not in str(caught.value)


def test_scalar_given_no_value_is_a_usage_error() -> None:
    """A scalar with no value at all names the param and the -p form to pass it."""
    with pytest.raises(UsageError, match=r"Param 'n' was given no value; pass -p n=VALUE\."):
        cast("n", [], int)


@pytest.mark.parametrize(
    ("annotation", "named"),
    [
        (bytes, "bytes"),
        (complex, "complex"),
        (int | str, "int | str"),
        (list[list[int]], "list[int] (collections cannot be nested)"),
        (dict[str, list[int]], "list[int]"),
        (Literal[1.5], "Literal[1.5]"),
        ("int", "'int'"),
    ],
)
def test_unsupported_annotation_is_a_type_error_naming_the_type(annotation: object, named: str) -> None:
    """An annotation batchcli cannot cast is a programming error: TypeError naming the type, from cast and describe."""
    with pytest.raises(TypeError, match="batchcli") as caught:
        cast("p", ["1"], annotation)
    assert named in str(caught.value)
    with pytest.raises(TypeError):
        describe(annotation)


def test_unsupported_annotation_fails_even_without_values() -> None:
    """A bad annotation is reported even when the collection param got no values, so it cannot hide."""
    with pytest.raises(TypeError, match="bytes"):
        cast("p", [], list[bytes])


def test_cast_error_keeps_its_original_signature() -> None:
    """CastError(name, type_name, value, hint) still builds the same message, with detail optional."""
    assert str(CastError("n", "int", "x", "Use 1.")) == "Param 'n' expects int, got 'x'. Use 1."
    assert str(CastError("n", "int", "x")) == "Param 'n' expects int, got 'x'."
    assert str(CastError("n", "list of int", "x", detail="element 1 ('x') is not an int")) == (
        "Param 'n' expects list of int, got 'x': element 1 ('x') is not an int."
    )


def test_secret_behaves_as_its_plain_value() -> None:
    """A Secret equals, prints and formats as its plain string so user code can send it to an API."""
    secret = Secret("hunter2")
    assert secret == "hunter2"
    assert str(secret) == "hunter2" and type(str(secret)) is str
    assert f"{secret}" == "hunter2"
    assert "Bearer " + secret == "Bearer hunter2"
    assert isinstance(secret, str)


def test_secret_repr_and_masked_never_show_the_value() -> None:
    """repr() and masked() hide the value, so debug output and batchcli's logs show only the mask."""
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('********')"
    assert f"{secret!r}" == "Secret('********')"
    assert repr([secret]) == "[Secret('********')]"
    assert Secret.mask == "********"
    assert masked(secret) == "********"
    assert masked("plain") == "plain" and masked(3) == 3


def test_secret_cast_returns_a_secret() -> None:
    """A param declared Secret is cast to a Secret, also inside an Optional or a collection."""
    assert isinstance(cast("token", ["abc"], Secret), Secret)
    assert isinstance(cast("token", ["abc"], Secret | None), Secret)
    tokens = cast("tokens", ["a:x,b:y"], dict[str, Secret])
    assert isinstance(tokens, dict) and all(isinstance(v, Secret) for v in tokens.values())


def test_secret_values_are_masked_in_cast_errors() -> None:
    """A cast error on a collection of secrets shows the mask, not the secret text."""
    with pytest.raises(CastError) as caught:
        cast("tokens", ["api:hunter2,oops-hunter3"], dict[str, Secret])
    assert "hunter" not in str(caught.value)
    assert "********" in str(caught.value) and "key:value" in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [["Smith, J", "Doe"], ['say "hi"', '"quoted"', " , "], {"a,b": "c,d", "e": '"f"'}, ("1,5", "x")],
)
def test_a_collection_written_back_casts_to_the_same_value(value: object) -> None:
    """``as_typed`` (--help defaults, ``batchcli.testing``) quotes an element holding a comma or opening with a quote,
    so casting its text gives the value back: a list with "Smith, J" came back as three elements."""
    annotation = {list: list[str], dict: dict[str, str], tuple: tuple[str, str]}[type(value)]
    expected = {k.strip(): v.strip() for k, v in value.items()} if isinstance(value, dict) else type(value)(
        element.strip() for element in value
    )  # elements are stripped, as any -p element is
    assert cast("ids", [as_typed(value)], annotation) == expected
