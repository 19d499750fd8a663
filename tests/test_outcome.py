"""The Tally's compact record of succeeded items."""

from __future__ import annotations

import random

from batchcli.outcome import Tally, merge_ranges, runs


def test_runs_splits_sorted_ordinals_at_gaps() -> None:
    """Sorted ordinals become half-open runs, split wherever a number is missing."""
    assert runs([1, 2, 3, 7, 8, 10]) == [(1, 4), (7, 9), (10, 11)]
    assert runs([]) == []


def test_merge_ranges_joins_touching_and_overlapping() -> None:
    """Ranges that touch or overlap merge into one, in order."""
    assert merge_ranges([(5, 7), (0, 2), (2, 4), (6, 9)]) == [(0, 4), (5, 9)]


def test_take_done_returns_exactly_the_recorded_ordinals_and_empties() -> None:
    """Out-of-order completions spread over several slices come back as exactly their set."""
    tally = Tally()
    ordinals = list(range(200_000))
    random.Random(7).shuffle(ordinals)
    missing = set(ordinals[:50])  # still in flight
    for ordinal in ordinals[50:]:
        tally.done.append(ordinal)
    ranges = tally.take_done()
    covered = {n for start, end in ranges for n in range(start, end)}
    assert covered == set(range(200_000)) - missing
    assert len(tally.done) == 0
    assert tally.take_done() == []


def test_take_done_keeps_an_in_order_run_as_one_range() -> None:
    """A long in-order run is one range, not one row per item."""
    tally = Tally()
    tally.done.extend(range(1_000_000))
    assert tally.take_done() == [(0, 1_000_000)]


def test_a_broken_repr_or_nan_input_still_gives_a_parseable_failure_record() -> None:
    """An input whose __repr__ raises, or a NaN, still gives a failed.jsonl line that is valid JSON, live and rebuilt."""
    import json

    from batchcli.outcome import Failure
    from batchcli.journal.records import failure_line, failure_record, json_form

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    failures = [
        Failure(0, Broken(), "KeyError", "x", "tb", 1, 0.0, 0.0),
        Failure(1, {"score": float("nan")}, "ValueError", "NaN score", "tb", 1, 0.0, 0.0),
    ]
    # The journal stores the input's JSON form; failed.jsonl is written from the journal's rows.
    lines = [
        failure_line(f.ordinal, json.dumps(json_form(f.item)), f.error_type, f.error_message, f.attempts,
                     f.first_failed_at, f.failed_at, f.traceback)
        for f in failures
    ]
    records = [json.loads(line) for line in lines]
    assert records == [failure_record(f) for f in failures]
    assert records[0]["input"] == "<Broken object; repr() raised RuntimeError>"
    assert records[1]["input"] == {"score": "nan"}
    assert records[1]["error_message"] == "NaN score"
