"""What happened to the items: the counters and failure records a run keeps, fed by its executor."""

from __future__ import annotations

import logging
import reprlib
import threading
import time
from array import array
from collections import deque
from itertools import islice
from operator import itemgetter
from sys import getsizeof
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from batchcli.durations import Durations

FAILURES = "batchcli.failures"
"""Logger of each final failure, one record with its traceback: the log file gets every one; the console
groups them instead (run/failures.py)."""
failures_log = logging.getLogger(FAILURES)


class Failure(NamedTuple):
    """One item that finally failed, with its reason.

    A named tuple, not a frozen dataclass: a flood makes one per item on the loop thread, and a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` (2 µs for these eight fields,
    0.5 µs for the tuple made positionally).
    """

    ordinal: int
    """Position of the item in the source (0-based)."""
    item: Any
    """The input itself, exactly as the source yielded it."""
    error_type: str
    """Qualified name of the exception class."""
    error_message: str
    """``str()`` of the exception."""
    traceback: str
    """The user's traceback, batchcli's frames trimmed."""
    attempts: int
    """How many attempts were made."""
    first_failed_at: float
    """Epoch seconds of the first failed attempt."""
    failed_at: float
    """Epoch seconds of the last failed attempt."""


_SLICE = 65536

KEPT_BACKLOG_MAX = 8 << 20
"""About how many bytes of results may wait for the journal: past it, new items wait for the recorder
(a job returning results faster than the disk takes them must not fill the memory instead). A flush of a few
MB takes 40-90 ms, most of it the disk: at 4 MB, a million small results made the loop wait for it now and then."""

CHUNK_KEPT_MAX = 4 << 20
"""About how many bytes of results one chunk of the process, Dask and Ray executors brings back: past it the
worker hands the chunk's unstarted items back (as a throttle does), and the driver sizes the next chunks to fit.
Sized by time alone, a chunk of 2 MB results held 150 MB, and the driver peaked at 2 GB with four in flight."""

KEPT_NUDGE = 1 << 20
"""Past this many bytes of waiting results the recorder is woken (``Tally.flush_wanted``)."""

Sealed = tuple["array[int]", bytes]
"""A batch of plain-data results the loop encoded together: their ordinals, and the pickle of the list of their
values in the same order (``journal.batches.plain_list``)."""

SEALED_OVERHEAD = 8
"""What one result in a ``sealed`` batch costs beyond its share of the encoding: its ordinal."""

KEPT_OVERHEAD = 200
"""What one waiting result costs beyond its text: its tuple, ordinal and str objects."""

_encoded = itemgetter(1)

FAILURE_BACKLOG_MAX = 10_000
"""How many final failures may wait for the journal (about 1 KB each): past it, new items wait for the recorder.
A flood fails items faster than the journal, ``failed.jsonl`` and the log file take them, and memory must not
pay for the difference."""

KEYED_DONE_BACKLOG_MAX = 50_000
"""How many successes of a keyed Source (``item_key``) may wait for the journal: past it, new items wait for the
recorder. Each one's key becomes a row of an index that grows with the run, and an async job at 90,000 items a
second outran it: the journal fell minutes behind (a kill -9 lost them, ``watch`` showed a stalled run) and the
waiting keys took gigabytes. Positional successes cost the journal a range each, and never wait."""

FAILURES_KEPT = 10_000
"""How many final failures a run holds in memory (the most recent; ``Tally.failures``): a flood of millions must
not fill the memory, and every failure is in the journal, ``failed.jsonl`` and the log file anyway."""

FAILURES_KEPT_BYTES = 32 << 20
"""About how many bytes the failures a run holds in memory may take (their inputs, messages and tracebacks, as
``failure_size`` counts them): 10,000 failures of 50 KB documents held 2 GB. The oldest leave first, down to the
circuit breaker's window, which it may take back."""

FAILURE_BACKLOG_BYTES = 16 << 20
"""About how many bytes of final failures may wait for the journal (``failure_size``): past it, as past
``FAILURE_BACKLOG_MAX`` of them, new items wait for the recorder, which makes each one's row and lines at once."""

FAILURE_OVERHEAD = 300
"""What one failure costs beyond its input, message and traceback: its tuple, floats and strings' headers."""


def rough_size(value: Any) -> int:
    """About how many bytes ``value`` takes: ``sys.getsizeof`` of it and, for a dict, list or tuple, of what it holds
    directly (a row of text fields; a sample of a long one). Deeper values are not walked: a flood sizes each input."""
    kind = type(value)
    if kind is int or kind is str or kind is bytes:  # the usual inputs, sized at once (a flood sizes each one)
        return getsizeof(value)
    try:
        size = getsizeof(value)
        if kind is dict:
            held: Any = value.values()
        elif kind is list or kind is tuple:
            held = value
        else:
            return size
        count = len(held)
        if count <= 64:
            return size + sum(map(getsizeof, held))
        return size + sum(map(getsizeof, islice(held, 64))) * count // 64
    except Exception:  # a __sizeof__ of the user's that raises, or a dict changed while summed
        return 1024


def failure_size(failure: Failure) -> int:
    """About how many bytes a failure holds (see ``FAILURES_KEPT_BYTES``)."""
    return len(failure.error_message) + len(failure.traceback) + rough_size(failure.item) + FAILURE_OVERHEAD


RECORDER_WAIT_S = 0.005
"""How often an executor held back by a results backlog looks again (the recorder takes everything each flush)."""


def writable(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (a file name decoded with ``surrogateescape``, say) becomes
    its escape, ``\\udc80``. The journal, ``failed.jsonl`` and the log file would refuse the text otherwise, and a
    failure the recorder cannot write would stop the run's recording. ASCII, the usual case, costs one check."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {0x09: " "}


def shown(text: str) -> str:
    """``text`` with its control characters written out (``\\x1b``): an error message holding a terminal's escape
    sequences cleared and recoloured the screen when printed, and a carriage return overwrote the line."""
    return text.translate(_CONTROLS)


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one ``…`` when it was longer."""
    return text if len(text) <= width else text[: width - 1] + "…"


def per_second(rate: float) -> str:
    """A rate for people: ``97.3/s``, ``0.05/s``; a learnt rate is a float with many digits (97.34215693)."""
    return f"{round(rate, 1):g}/s" if rate >= 1 else f"{rate:.2g}/s"


def qualified_name(cls: type) -> str:
    """``module.Class`` (just ``Class`` for builtins), as failure records name exception types."""
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def error_text(error: BaseException) -> str:
    """``str(error)``, or a note when the exception's own ``__str__`` raises (which, unguarded, ended the worker
    that had caught it, with its item in flight for good)."""
    try:
        return str(error)
    except BaseException as broken:  # a KeyboardInterrupt from __str__ too: it is this exception's, not a Ctrl-C
        return f"<str() of this {type(error).__qualname__} raised {type(broken).__qualname__}>"


class ShownItem:
    """An item as a failure line shows it, already written out (``SecretMask`` puts it in place of an item whose
    repr must have the job's secrets masked); ``short_repr`` writes its text as it is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def masked_repr(item: Any, secrets: tuple[str, ...], width: int) -> str:
    """``repr(item)`` with ``secrets`` (``secret_texts``) masked, then cut to ``width``: masked whole before it is
    cut, so no part of a secret shows (an item that is a URL with its api_key, say)."""
    from batchcli.load.secret import mask_texts

    if type(item) is ShownItem:  # masked already (each of the run's handlers filters the same record)
        return item.text  # type: ignore[no-any-return]
    try:
        text = repr(item)
    except Exception:  # a __repr__ that raises; an int past the interpreter's 4300 digits
        return f"<{type(item).__qualname__} object>"
    return clip(mask_texts(text, secrets), width)


def short_repr(item: Any) -> str:
    """An item as the log and the console name it: its repr, clipped by reprlib; never raises."""
    try:
        kind = type(item)
        if kind is ShownItem:
            return item.text  # type: ignore[no-any-return]
        if kind is int or (kind is str and len(item) <= 20):  # what reprlib would write, without its dispatch
            text = repr(item)
            if len(text) <= 30:
                return text
        return reprlib.repr(item)
    except Exception:  # a __repr__ that raises; an int past the interpreter's 4300 digits
        return f"<{type(item).__qualname__} object>"


def runs(ordinals: list[int]) -> list[tuple[int, int]]:
    """``[1, 2, 3, 7, 8]`` -> ``[(1, 4), (7, 9)]``; the input is sorted and unique."""
    result: list[tuple[int, int]] = []
    if not ordinals:
        return result
    start = previous = ordinals[0]
    for ordinal in ordinals[1:]:
        if ordinal != previous + 1:
            result.append((start, previous + 1))
            start = ordinal
        previous = ordinal
    result.append((start, previous + 1))
    return result


def ordinal_ranges(ordinals: array[int], count: int) -> list[tuple[int, int]]:
    """The first ``count`` of ``ordinals`` (unique, in any order) as sorted, merged ``[start, end)`` ranges.

    Works in slices, so memory stays flat however many there are; a slice that is one run needs no loop.
    """
    ranges: list[tuple[int, int]] = []
    for offset in range(0, count, _SLICE):
        part = ordinals[offset : min(count, offset + _SLICE)]
        ranges += _as_ranges(part, min(part), max(part))
    return merge_ranges(ranges)


def sealed_ranges(sealed: list[Sealed], bounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ordinals of ``sealed`` batches, whose lowest and highest ordinals are ``bounds``, as sorted, merged
    ``[start, end)`` ranges: a batch whose items settled in order, as most do, is one range with no loop."""
    ranges: list[tuple[int, int]] = []
    for (ordinals, _), (low, high) in zip(sealed, bounds):
        ranges += _as_ranges(ordinals, low, high)
    return merge_ranges(ranges)


def _as_ranges(ordinals: array[int], low: int, high: int) -> list[tuple[int, int]]:
    """``ordinals`` (unique), whose lowest and highest are ``low`` and ``high``, as sorted ``[start, end)`` runs."""
    if high - low + 1 == len(ordinals):  # unique, so they are one run
        return [(low, high + 1)]
    return runs(sorted(ordinals))


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort half-open ranges and merge those that touch or overlap."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def failure_text(failure: Failure) -> str:
    """The log file's text of one final failure: a line, then its traceback."""
    return "Item #%d (%s) failed after %d attempt%s: %s\n%s" % (
        failure.ordinal,
        short_repr(failure.item),
        failure.attempts,
        "" if failure.attempts == 1 else "s",
        f"{failure.error_type}: {failure.error_message}" if failure.error_message else failure.error_type,
        failure.traceback,
    )


class FailureBatch(logging.LogRecord):
    """One ERROR record for the final failures one flush took, instead of one record per failure (a flood
    makes thousands a second, and a record costs several microseconds). The run's log file writes each
    failure as a record of its own, with its time; any other handler gets every ``failure_text``."""

    def __init__(self, failures: list[Failure]) -> None:
        super().__init__(FAILURES, logging.ERROR, __file__, 0, "", None, None)
        self.failures = failures
        """The final failures, in the order they failed."""

    def getMessage(self) -> str:
        return "\n".join(failure_text(f) for f in self.failures)


def log_failures(failures: list[Failure]) -> None:
    """Log final failures (each with its traceback) on the ``batchcli.failures`` logger, as one record."""
    if failures and failures_log.isEnabledFor(logging.ERROR):
        failures_log.handle(FailureBatch(failures))


class Tally:
    """The live counts of a run; executors update them, the display and the journal read them.

    The success path touches only ``succeeded``, ``in_flight`` and ``done``: plain attributes and an
    ``array`` append, cheap and safe to read from other threads under the GIL.
    """

    def __init__(
        self, total: int | None = None, clock: Any = time.monotonic, failures_kept: int = FAILURES_KEPT, failures_floor: int = 0
    ) -> None:
        self.total = total
        """Items in the source: from ``len()``, or counted once the source is exhausted."""
        self.succeeded = 0
        self.failed = 0
        self.retrying = 0
        """Items waiting out a backoff delay."""
        self.retried = 0
        """Retries scheduled so far (failed attempts that were not final), for the metrics."""
        self.in_flight = 0
        self.skipped = 0
        """Items a resumed run did not redo because an earlier run settled them."""
        self.earlier_succeeded = 0
        """Items earlier sessions of this run (before a resume) succeeded: the display counts the whole run."""
        self.earlier_failed = 0
        """Items earlier sessions of this run finally failed."""
        self.paused_s = 0.0
        """Seconds this session spent paused in the pause shell, left out of ``elapsed()``."""
        self._paused_at: float | None = None
        self._clock_holds = 0
        """How many pauses hold the clock now (``pause_clock``)."""
        self._clock_lock = threading.Lock()
        self.done = array("q")
        """Ordinals that succeeded and are not yet journaled: 8 bytes each, no objects kept alive."""
        self.done_max: int | None = None
        """How many of ``done`` may wait before new items wait for the recorder (``done_backlog``); the journal of
        a keyed run sets it (``KEYED_DONE_BACKLOG_MAX``), None for no bound."""
        self.kept: list[tuple[int, str | bytes, bytes | None]] = []
        """Items that succeeded with a result, not yet journaled: ``(ordinal, marshal or JSON, pickle or None)`` as
        ``journal.results.encode`` made it. Their ordinals are not in ``done``: one append settles an item."""
        self.sealed: list[Sealed] = []
        """Items that succeeded with a plain-data result, not yet journaled, encoded by the loop a batch at a
        time: ``(ordinals, marshal encoding of the list of their results)``, 8 bytes an item beyond its share
        of the encoding, where a tuple in ``kept`` costs ~150. Their ordinals are not in ``done`` either."""
        self.kept_bytes = 0
        """About how much memory ``kept`` and ``sealed`` have taken in all (``KEPT_OVERHEAD`` or
        ``SEALED_OVERHEAD`` an item, plus the encoding): the loop's count."""
        self.taken_bytes = 0
        """The same for what the recorder took out; each counter has one writer, so neither loses an update."""
        self.flush_wanted = threading.Event()
        """Set when results waiting for the journal pass ``KEPT_NUDGE``: the recorder flushes
        then rather than at its next interval, so the loop rarely has to wait for it."""
        self.failures: deque[Failure] = deque(maxlen=failures_kept)
        """The most recent final failures (``failures_kept`` of them, and about ``FAILURES_KEPT_BYTES``, but never
        fewer than ``failures_floor``), in order: the pause shell's ``failures``."""
        self._kept_sizes: deque[int] = deque()
        """``failure_size`` of each of ``failures``, in the same order (loop thread)."""
        self._kept_failure_bytes = 0
        self._failures_floor = failures_floor
        self.failure_bytes = 0
        """``failure_size`` of every final failure that waited for the journal, less those taken back before it
        wrote them: the loop's count."""
        self.failure_bytes_taken = 0
        """``failure_bytes`` as it was when the recorder last took the waiting failures: the recorder's count."""
        self.secrets: tuple[str, ...] = ()
        """The run's secret values (``secret.secret_texts``): masked in failures' messages and tracebacks."""
        self.failures_taken_back = 0
        """Final failures taken back (a later success, the circuit breaker): ``failed`` goes down, this goes up, so
        that what ``/metrics`` counts as failed never goes down."""
        self.failures_dropped = 0
        """Final failures that left ``failures`` to make room (they are in the journal): the shell says so."""
        self.failed_items: dict[int, Any] | None = None
        """Every finally failed input by ordinal, for a Source's ``persist_failed``: kept only when it has one
        (the driver sets it to ``{}``), since ``failures`` holds only the recent ones."""
        self.new_failures: deque[Failure] = deque()
        """Final failures not yet written to ``failed.jsonl`` and the journal."""
        self.unshown: deque[Failure] = deque()
        """Final failures the console has not grouped yet (its display drains them)."""
        self.taken_back: deque[Failure] = deque()
        """Final failures taken back (the breaker, a later success) that the console's groups still count."""
        self.recovered: deque[int] = deque()
        """Ordinals of journaled failures that later succeeded (retried from the pause shell)."""
        self.released: deque[int] = deque()
        """Ordinals of journaled failures taken back as not final (the circuit breaker): to be done again."""
        self.ended = False
        """True once the executor stopped starting items for good (the run finished or stopped): a cool-down or a
        probe still counting down will not come, and the last progress line must not say it will."""
        self.unlogged: deque[Failure] = deque()
        """Failures taken back as not final before the recorder logged them: logged by its next flush all the same
        (the console may have printed them, and an outage's tracebacks say why the breaker opened)."""
        self.watch: Any = None
        """Called by the retry scheduler on every failed attempt, ``watch(failure or None, hold)``: the
        circuit breaker's hook (None when it is off); slow path only."""
        self.exhausted = False
        """True once the source has yielded its last item."""
        self.cooldown_until = 0.0
        """While throttled: the clock time (``clock``) until which no new item starts."""
        self.throttles = 0
        """Attempts the API throttled (429/503, ``Throttled``): none of them spent an attempt."""
        self.limits: tuple[int, float | None] | None = None
        """Concurrency and rate limit in force now (adaptive: cut on throttles), once the executor exists."""
        self.limit_changes: list[tuple[float, int, float | None, int]] = []
        """Each change of ``limits`` after a throttle (wall time, concurrency, rate, throttles so far), until the
        journal takes it: every change reaches ``show``, however many happen between two flushes."""
        self.ceiling: tuple[int, float | None] | None = None
        """The configured concurrency and rate limit (or the pause shell's): ``limits`` never exceeds them."""
        self.limits_held = False
        """Whether the circuit breaker's cap, not adaptive concurrency, keeps ``limits`` below the ceiling."""
        self.breaker_state = "closed"
        """The circuit breaker: closed, open (nothing starts) or probing; the display reads it."""
        self.breaker_probe_at = 0.0
        """While open: the monotonic time of the next probe; 0 when none is planned (the pause shell decides)."""
        self.breaker_trips = 0
        """Times the circuit breaker opened in this session."""
        self.durations: Durations | None = None
        """How long attempts took, while ``/metrics`` serves them (set before the executor is built); None: untimed."""
        self.started = clock()
        self._clock = clock

    @property
    def settled(self) -> int:
        """Items that succeeded or finally failed."""
        return self.succeeded + self.failed

    @property
    def all_settled(self) -> bool:
        """True once the source has run out and no item is in flight or waits to retry: only the job's last hooks
        (``finish()``, ``persist_failed``) are left, and the run ends as finished whatever is asked of it now."""
        return self.exhausted and not self.in_flight and not self.retrying

    def take_done(self) -> list[tuple[int, int]]:
        """Remove the ordinals recorded so far and return them as sorted, merged ``[start, end)`` ranges.

        Safe against concurrent appends: each slice and the final deletion is one C call under the
        GIL, and appends only extend the end. Works in slices, so memory stays flat however many
        items completed since the last call.
        """
        done = self.done
        count = len(done)
        ranges = ordinal_ranges(done, count)
        del done[:count]
        return ranges

    def take_kept(self) -> list[tuple[int, str | bytes, bytes | None]]:
        """Remove the results recorded so far and return them (safe against concurrent appends, as ``take_done``)."""
        kept = self.kept
        count = len(kept)
        taken = kept[:count]
        del kept[:count]
        self.taken_bytes += sum(map(len, map(_encoded, taken))) + KEPT_OVERHEAD * count
        return taken

    def take_sealed(self) -> list[Sealed]:
        """Remove the batches of plain-data results sealed so far and return them (safe against concurrent
        appends, as ``take_done``)."""
        sealed = self.sealed
        count = len(sealed)
        taken = sealed[:count]
        del sealed[:count]
        self.taken_bytes += sum(len(data) + SEALED_OVERHEAD * len(ordinals) for ordinals, data in taken)
        return taken

    @property
    def kept_backlog(self) -> bool:
        """True while results wait for the journal beyond ``KEPT_BACKLOG_MAX``: new items should wait."""
        waiting = self.kept_bytes - self.taken_bytes
        if waiting > KEPT_NUDGE and not self.flush_wanted.is_set():
            self.flush_wanted.set()
        return waiting > KEPT_BACKLOG_MAX

    @property
    def done_backlog(self) -> bool:
        """True while more successes than ``done_max`` wait for the journal: new items should wait (the recorder
        is woken)."""
        limit = self.done_max
        if limit is None or len(self.done) <= limit:
            return False
        self.flush_wanted.set()
        return True

    @property
    def failure_backlog(self) -> bool:
        """True while more than ``FAILURE_BACKLOG_MAX`` final failures, or ``FAILURE_BACKLOG_BYTES`` of them, wait for
        the journal: new items should wait (the recorder is woken)."""
        if len(self.new_failures) <= FAILURE_BACKLOG_MAX and self.failure_bytes - self.failure_bytes_taken <= FAILURE_BACKLOG_BYTES:
            return False
        self.flush_wanted.set()
        return True

    def recover(self, failure: Failure, kept: tuple[str | bytes, bytes | None] | None = None) -> bool:
        """Count a final failure that succeeded on a later try as a success (on the loop thread).

        False when ``failure`` is not one of ``failures`` (already recovered). A failure the recorder
        has not seen yet is simply dropped; one it has seen is queued in ``recovered`` for it to undo.
        ``kept`` is what this try returned, encoded, when it returned something.
        """
        for index, known in enumerate(self.failures):
            if known is failure:
                self._forget(index)
                break
        else:
            return False
        self.failed -= 1
        self.failures_taken_back += 1
        self.succeeded += 1
        self.taken_back.append(failure)
        if self.failed_items is not None:
            self.failed_items.pop(failure.ordinal, None)
        try:
            self.new_failures.remove(failure)
        except ValueError:
            self.recovered.append(failure.ordinal)
        else:
            self.failure_bytes -= failure_size(failure)
        if kept is None:
            self.done.append(failure.ordinal)
        else:
            self.kept.append((failure.ordinal, *kept))
            self.kept_bytes += len(kept[0]) + KEPT_OVERHEAD
        return True

    def unfail(self, failure: Failure) -> bool:
        """Take back a final failure as not final, the item to be processed again (on the loop thread).

        False when ``failure`` is not one of ``failures``. A failure the recorder has not seen yet is
        simply dropped; one it has seen is queued in ``released`` for it to undo.
        """
        failures = self.failures
        for index in range(len(failures) - 1, -1, -1):  # the breaker takes back recent ones
            if failures[index] is failure:
                self._forget(index)
                break
        else:
            return False
        self.failed -= 1
        self.failures_taken_back += 1
        self.taken_back.append(failure)
        if self.failed_items is not None:
            self.failed_items.pop(failure.ordinal, None)
        try:
            self.new_failures.remove(failure)
        except ValueError:
            self.released.append(failure.ordinal)
        else:
            self.failure_bytes -= failure_size(failure)
            self.unlogged.append(failure)
        return True

    def _forget(self, index: int) -> None:
        del self.failures[index]
        self._kept_failure_bytes -= self._kept_sizes[index]
        del self._kept_sizes[index]

    def fail(self, failure: Failure) -> None:
        """Record a final failure (called on the executor's loop). It is logged later, off the loop, by
        whoever drains ``new_failures`` (``log_failures``): a flood must stay cheap for the loop."""
        self.failed += 1
        size = failure_size(failure)
        failures, sizes = self.failures, self._kept_sizes
        if len(failures) == failures.maxlen:
            self.failures_dropped += 1  # the oldest one leaves as this one comes
            self._kept_failure_bytes -= sizes.popleft()
        failures.append(failure)
        sizes.append(size)
        self._kept_failure_bytes += size
        while self._kept_failure_bytes > FAILURES_KEPT_BYTES and len(failures) > self._failures_floor:
            failures.popleft()  # large inputs or messages: fewer of them
            self._kept_failure_bytes -= sizes.popleft()
            self.failures_dropped += 1
        self.failure_bytes += size
        self.new_failures.append(failure)
        self.unshown.append(failure)
        if self.failed_items is not None:
            self.failed_items[failure.ordinal] = failure.item

    def elapsed(self) -> float:
        """Seconds this session has been running, time paused (``ctl pause``, the pause shell) left out."""
        now = self._clock()
        paused = self.paused_s + (0.0 if self._paused_at is None else now - self._paused_at)
        return float(now - self.started - paused)

    def pause_clock(self) -> None:
        """Stop ``elapsed()`` until as many ``resume_clock()`` (a pause, a shell opened: they nest; any thread)."""
        with self._clock_lock:
            if self._clock_holds == 0:
                self._paused_at = self._clock()
            self._clock_holds += 1

    def resume_clock(self) -> None:
        """Undo one ``pause_clock()``; after the last, ``elapsed()`` runs again, the pause left out."""
        with self._clock_lock:
            if self._clock_holds == 0:
                return
            self._clock_holds -= 1
            if self._clock_holds == 0 and self._paused_at is not None:
                self.paused_s += self._clock() - self._paused_at
                self._paused_at = None

    def paused(self) -> float:
        """Seconds this session has spent paused so far, a pause going on now included."""
        return self.paused_s + (0.0 if self._paused_at is None else self._clock() - self._paused_at)
