"""Final failures on the console: grouped by type and message shape, a few individual lines per second.

The loop thread only appends each ``Failure`` to ``Tally.unshown``; a ``FailureReport`` drains it from
the display's side, so a flood of failures costs the loop nothing here. Every failure still reaches the
log file, ``failed.jsonl`` and the journal; the console shows a bounded sample of them and the counts.
"""

from __future__ import annotations

import reprlib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from rich.console import Console
from rich.text import Text

from batchcli.journal.rundir import message_shape, message_shapes
from batchcli.outcome import Failure, Tally, clip, masked_repr, shown

LINES_PER_SECOND = 3
"""Individual failure lines the console prints at most per second; the others are only counted."""
MORE_EVERY_S = 10.0
"""Seconds between two "... and N more like this" lines of one group while the run goes."""
TICK_S = 0.25
"""How often the console drains the new failures."""
MESSAGE_WIDTH = 300
"""How much of an error message a console line shows (its first line, clipped): a message may carry a whole
response body. The log file, ``failed.jsonl`` and the journal keep all of it."""
MAX_GROUPS = 20
"""Groups the console keeps apart. Failures of a further message shape join their type's "other messages" group
(and past twice this many groups, one for every type): messages that carry ids (``KeyError: 'user-3fa9c1'``)
would otherwise make a group per failure, and so a "... and 1 more like this" line per failure."""
OTHER = "(other messages)"
"""The shape of an overflow group."""

_item_repr = reprlib.Repr()
_item_repr.maxstring = _item_repr.maxother = 60


@dataclass
class Group:
    """Final failures with the same error type and message shape (numbers as ``N``), as ``show`` groups them."""

    error_type: str
    """Qualified name of the exception class."""
    shape: str
    """The message with its numbers replaced by ``N``."""
    count: int = 0
    """Failures in this group so far."""
    hidden: int = 0
    """Failures of this group not printed one by one, nor yet announced by a "... and N more" line."""
    announced_at: float = 0.0
    """When the last "... and N more like this" line of this group was printed (monotonic)."""

    @property
    def label(self) -> str:
        """``Type: message shape``, as one line."""
        if not self.error_type:
            return "other failures"
        kind = shown(self.error_type)  # a class's name can hold an escape sequence too
        return f"{kind}: {first_line(self.shape)}" if self.shape else kind


def first_line(message: str, width: int = MESSAGE_WIDTH) -> str:
    """A message's first line that says something (``RuntimeError("\\nline two")`` showed, and grouped, as empty),
    clipped to ``width``, with ``…`` when anything was left out."""
    line, _, rest = message.lstrip("\r\n").partition("\n")
    line = shown(line)
    return clip(line + " …" if rest else line, width)


def failure_line(failure: Failure, secrets: tuple[str, ...] = ()) -> str:
    """The console line of one failure (the log file has the same one, with the whole message and its traceback);
    ``secrets`` masked in the item's repr (its message and traceback came masked)."""
    if secrets:
        item = masked_repr(failure.item, secrets, 60)
    else:
        try:
            item = _item_repr.repr(failure.item)
        except Exception:
            item = f"<{type(failure.item).__qualname__} object>"
    item = shown(item)  # a __repr__ of the job's may hold an escape sequence
    plural = "" if failure.attempts == 1 else "s"
    kind = shown(failure.error_type)
    error = f"{kind}: {first_line(failure.error_message)}" if failure.error_message else kind
    return f"Item #{failure.ordinal} ({item}) failed after {failure.attempts} attempt{plural}: {error}"


class FailureReport:
    """Groups the run's final failures and prints a bounded sample of them above the progress.

    ``tick`` runs on a thread of the display (never the loop thread); ``groups`` may be read from any
    thread. ``lines_per_second`` bounds the individual lines; each group's unprinted failures are
    announced by "... and N more like this (see batchcli.log)" at most every ``more_every_s`` seconds,
    and once more when the run ends, so the printed lines plus the announced counts are every failure.
    """

    def __init__(
        self,
        tally: Tally,
        console: Console,
        lines_per_second: int = LINES_PER_SECOND,
        more_every_s: float = MORE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tally = tally
        self._console = console
        self._lines_per_second = lines_per_second
        self._more_every_s = more_every_s
        self._clock = clock
        self._groups: dict[tuple[str, str], Group] = {}
        self._window_start = clock()
        self._window_lines = 0
        self._lock = threading.Lock()

    @property
    def groups(self) -> list[Group]:
        """Every group with final failures now, largest first."""
        return sorted([g for g in list(self._groups.values()) if g.count > 0], key=lambda g: -g.count)

    def tick(self, final: bool = False) -> None:
        """Print what is due: new failures within the line budget, then the groups' "and N more" lines."""
        with self._lock:
            now = self._clock()
            unshown, taken_back = self._tally.unshown, self._tally.taken_back
            # Taken back before the new ones are read: each of these is among them or was read before, so it is
            # counted, then uncounted, and a failure no longer final is never printed (the breaker's take-backs
            # printed "failed Item #0 ..." and "... and 56 more like this" above "Stopped: 0 failed").
            back = [taken_back.popleft() for _ in range(len(taken_back))]
            gone = {id(failure) for failure in back}
            new = [unshown.popleft() for _ in range(len(unshown))]
            lines = self._read(new, gone, now) if new else []
            for failure in back:
                self._take_back(failure, earlier=id(failure) in gone)
            for group in self._groups.values():
                if group.hidden and (final or now - group.announced_at >= self._more_every_s):
                    lines.append(self.more_line(group))
                    group.hidden = 0
                    group.announced_at = now
            for line in lines:
                self._console.print(line, soft_wrap=True, highlight=False)

    def _read(self, new: list[Failure], gone: set[int], now: float) -> list[Text]:
        """Count ``new`` failures in their groups and return the lines of the first ones within the line budget; the
        others wait among their group's hidden ones. Those in ``gone`` (taken back) are counted, neither printed nor
        hidden, and leave ``gone``. Counted a kind at a time, not a failure at a time: a flood brings thousands a
        tick, of a few kinds, and a failure's share of Python's work took 1.5 µs of the console's 1.8 a failure."""
        kinds = list(zip([f.error_type for f in new], message_shapes([f.error_message for f in new])))
        hidden = Counter(kinds)  # first seen first: groups are made in the order their first failure came
        groups = {kind: self._group(kind, count) for kind, count in hidden.items()}
        shown: Sequence[int] = range(len(new))
        if gone:
            shown = []
            for index, failure in enumerate(new):
                if id(failure) in gone:
                    gone.discard(id(failure))  # read now: neither printed nor hidden
                    hidden[kinds[index]] -= 1
                else:
                    shown.append(index)
        lines: list[Text] = []
        if shown:
            if now - self._window_start >= 1.0:
                self._window_start, self._window_lines = now, 0
            for index in shown[: max(0, self._lines_per_second - self._window_lines)]:
                lines.append(Text.assemble(("failed ", "red"), failure_line(new[index], self._tally.secrets)))
                hidden[kinds[index]] -= 1
            self._window_lines += len(lines)
        for kind, count in hidden.items():
            if count:
                group = groups[kind]
                if group.hidden == 0 and not group.announced_at:
                    group.announced_at = now  # the first announcement waits a full period too
                group.hidden += count
        return lines

    @staticmethod
    def more_line(group: Group) -> Text:
        """``Type: shape ... and N more like this (see batchcli.log)``."""
        return Text.assemble(
            ("failed ", "red"),
            group.label,
            (f" ... and {group.hidden:,} more like this (see batchcli.log)", "dim"),
        )

    def _group(self, key: tuple[str, str], count: int) -> Group:
        """The group of failures of this (type, shape), made when it is the first, counted ``count`` more."""
        group = self._groups.get(key)
        if group is None:
            groups = self._groups
            if len(groups) >= MAX_GROUPS:
                key = (key[0], OTHER)
                if key not in groups and len(groups) >= 2 * MAX_GROUPS:
                    key = ("", OTHER)
                group = groups.get(key)
            if group is None:
                group = groups[key] = Group(*key)
        group.count += count
        return group

    def _take_back(self, failure: Failure, earlier: bool) -> None:
        """Uncount a failure that is no longer final, from the group ``_group`` counted it in; one read at an
        ``earlier`` tick may wait among the group's hidden ones (which are not told apart: one fewer of them)."""
        groups = self._groups
        group = (
            groups.get((failure.error_type, message_shape(failure.error_message)))
            or groups.get((failure.error_type, OTHER))
            or groups.get(("", OTHER))
        )
        if group is not None and group.count > 0:
            group.count -= 1
            if earlier and group.hidden > 0:
                group.hidden -= 1


def group_lines(groups: list[Group], limit: int = 5) -> list[str]:
    """The largest ``limit`` groups as ``N × Type: shape`` lines, then how many groups are left out."""
    lines = [f"{g.count:,} × {g.label}" for g in groups[:limit]]
    if len(groups) > limit:
        rest = sum(g.count for g in groups[limit:])
        lines.append(f"{rest:,} more in {len(groups) - limit} other group{'s' if len(groups) - limit > 1 else ''}")
    return lines
