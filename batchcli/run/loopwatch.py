"""Noticing the job's code holding the run's event loop: a blocking call in an async ``process`` or hook.

asyncio cannot take the loop back from code that does not await (``time.sleep``, ``requests.get``, a sync
database driver inside an ``async def``): every other item waits, and neither ``item_timeout_s`` nor the
cool-down timers can act until it returns. A run that hangs that way hung in silence; the main thread, which
wakes a few times a second anyway, now asks the loop for a turn and says where the loop is held when the answer
is late.
"""

from __future__ import annotations

import asyncio
import linecache
import logging
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Callable

log = logging.getLogger("batchcli")

HELD_S = 10.0
"""How long the loop may go without a turn before the run says so (``item_timeout_s`` when that is shorter)."""

_OURS = str(Path(__file__).parent.parent)
_ASYNCIO = str(Path(asyncio.__file__).parent)


class LoopWatch:
    """Asks the loop for a turn at each ``check`` (main thread) and warns, once per hold, when none came in time."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, thread_id: int, held_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._loop = loop
        self._thread_id = thread_id
        self.held_s = held_s
        self._clock = clock
        self._asked: float | None = None
        """When the turn now awaited was asked for; None while none is awaited."""
        self._warned = False

    def check(self) -> None:
        now = self._clock()
        asked = self._asked
        if asked is None:
            self._asked = now
            try:
                self._loop.call_soon_threadsafe(self._turn)
            except RuntimeError:  # the loop closed in between
                self._asked = None
            return
        if not self._warned and now - asked >= self.held_s:
            where = where_held(self._thread_id)
            if not where:  # batchcli's own code: not the job's to fix (asked again at the next check)
                return
            self._warned = True
            if where.startswith(", in process()"):
                advice = (
                    "await an async client instead, or make process a plain def (a sync process runs in threads, "
                    "where item_timeout_s applies)."
                )
            else:  # a hook (a sync setup() runs on the loop): making process sync changes nothing
                advice = "await an async client instead; a stop still ends the run, stop_timeout_s after it is asked."
            log.warning(
                "The job's code has held the event loop for %ss without awaiting%s. No other item, timeout or "
                "cool-down can run until it returns, and item_timeout_s cannot interrupt it. A blocking call (a sync "
                "HTTP client or database driver, time.sleep) does this: %s",
                f"{now - asked:.1f}" if now - asked < 10 else f"{now - asked:.0f}", where, advice,
            )  # fmt: skip

    def _turn(self) -> None:  # on the loop
        if self._warned:
            asked = self._asked
            held = 0.0 if asked is None else self._clock() - asked
            log.info("The event loop had a turn again, after %.0fs held.", held)
        self._warned = False
        self._asked = None


def where_held(thread_id: int) -> str:
    """Where the thread is, in the job's code: ``, in process() at job.py:12 (time.sleep(60))``; "" when unknown."""
    frame: FrameType | None = sys._current_frames().get(thread_id)
    mine = []  # innermost first, out to the first of batchcli's frames (what called the job's code)
    while frame is not None and not frame.f_code.co_filename.startswith(_OURS):
        if not frame.f_code.co_filename.startswith(_ASYNCIO):  # a task's steps, between our await and the job's
            mine.append(frame)
        frame = frame.f_back
    if not mine:
        return ""
    outer = mine[-1]  # the job's own frame that batchcli called (process, setup...)
    line = linecache.getline(outer.f_code.co_filename, outer.f_lineno).strip()
    text = f", in {outer.f_code.co_name}() at {outer.f_code.co_filename}:{outer.f_lineno}"
    if line:
        text += f" ({line})"
    inner = mine[0]
    if inner is not outer:
        text += f", now in {inner.f_code.co_name}() at {inner.f_code.co_filename}:{inner.f_lineno}"
    return text
