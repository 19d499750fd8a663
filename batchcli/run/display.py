"""Progress on the console: a rich live display on a terminal, a plain line at intervals elsewhere."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Any, Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchcli.executors.signals import stop_signals_blocked
from batchcli.outcome import Tally
from batchcli.run.breaker import breaker_note
from batchcli.run.failures import TICK_S, FailureReport, group_lines


class Rate:
    """Items per second over a sliding window of samples, taken when the display renders.

    The clock is the run's ``elapsed()`` by default, which stands still while the pause shell is open,
    so a pause does not drag the rate (and the ETA) down afterwards.
    """

    def __init__(self, tally: Tally, clock: Callable[[], float] | None = None, window_s: float = 10.0) -> None:
        self._tally = tally
        self._clock = tally.elapsed if clock is None else clock
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self) -> float:
        """Record the current count and return the rate over the window."""
        now = self._clock()
        count = self._tally.settled
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[0][0] > self._window_s:
            samples.popleft()
        first_t, first_n = samples[0]
        if now - first_t < 1e-3:
            elapsed = self._tally.elapsed()
            return count / elapsed if elapsed > 0 else 0.0
        return max(0.0, (count - first_n) / (now - first_t))  # the breaker taking failures back lowers the count


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    return str(timedelta(seconds=int(seconds)))


def rate_text(rate: float) -> str:
    """A rate limit as people read one: ``2.5/s``, or per minute, hour or day when slower (``rate 0/s`` read as
    stuck for a documented one-a-day limit)."""
    for per, seconds in (("s", 1), ("min", 60), ("h", 3600), ("day", 86400)):
        if rate * seconds >= 1 or per == "day":
            return f"{round(rate * seconds, 1):g}/{per}"
    raise AssertionError("unreachable")


def throttle_note(tally: Tally, now: Callable[[], float] = time.monotonic) -> str:
    """While throttled: the cool-down countdown and the effective limits; empty otherwise."""
    parts = []
    left = tally.cooldown_until - now()
    if left > 0 and not tally.ended:  # a countdown left on the last line of a run that has ended read as pending
        parts.append(f"cooling down {math.ceil(left)}s")
    if tally.limits is not None and tally.limits != tally.ceiling:
        concurrency, rate = tally.limits
        # The breaker's cap is not adaptive concurrency at work: "(adapting)" beside "breaker open" misled.
        how = " (held by the breaker)" if tally.limits_held else " (adapting)"
        parts.append(f"concurrency {concurrency}" + ("" if rate is None else f" rate {rate_text(rate)}") + how)
    if note := breaker_note(tally, now):
        parts.append(note)
    return "  ".join(parts)


def run_counts(tally: Tally) -> tuple[int, int, int]:
    """Settled, succeeded and failed over the whole run: a resumed run's earlier sessions count as done,
    so the bar and "ok" count the same items."""
    succeeded, failed = tally.succeeded + tally.earlier_succeeded, tally.failed + tally.earlier_failed
    return succeeded + failed, succeeded, failed


def shown_total(tally: Tally, settled: int) -> int | None:
    """The total the display shows: never below what is settled. A resumed run whose source lost items (a keyed
    file that shrank, a smaller ``-p count``) has settled more than the source now holds until the run counts what
    is gone, when the source runs out; it showed 1080/100 (1080%) and a negative ETA."""
    total = tally.total
    return None if total is None else max(total, settled)


def eta_s(tally: Tally, total: int | None, settled: int, rate: float, now: Callable[[], float] = time.monotonic) -> float | None:
    """Seconds left at ``rate``; None when unknown, and while a throttle's cool-down holds every start: the rate
    before it (seconds, against a 600 s Retry-After) said nothing of when the run ends, and the rate after it is the
    API's to decide, so no ETA counting the cool-down in would be right either."""
    if total is None or rate <= 0 or tally.cooldown_until > now():
        return None
    return (total - settled) / rate


def status_line(tally: Tally, rate: float) -> str:
    """The one-line state of a run: done/total, outcomes, rate, elapsed, ETA."""
    settled, succeeded, failed = run_counts(tally)
    total = shown_total(tally, settled)
    done = f"{settled}/{total}" if total is not None else f"{settled}"
    percent = f" ({settled / total:.0%})" if total else ""
    eta: float | None = None
    if tally.all_settled:  # finish() may still run
        elapsed = tally.elapsed()  # the session's rate, not the last seconds' (0.0/s while finish() ran)
        rate, eta = (tally.settled / elapsed if elapsed > 0 else 0.0), 0.0
    else:
        eta = eta_s(tally, total, settled, rate)
    note = throttle_note(tally)
    return (
        f"{done}{percent}  ok {succeeded}  failed {failed}  retrying {tally.retrying}  "
        f"in flight {tally.in_flight}  {rate:,.1f}/s  elapsed {_duration(tally.elapsed())}  eta {_duration(eta)}"
        + (f"  {note}" if note else "")
    )


def _stat(label: str, value: str, style: str) -> Text:
    return Text.assemble((label + " ", "dim"), (value, style))


class PrintBuffer:
    """``sys.stdout`` or ``sys.stderr`` while the live display runs: what the job prints goes above the display a
    tick at a time, in order, whole lines together (a partial last line waits for the next tick).

    rich's own redirection prints each line as it comes, and each print redraws the live display under it: a
    ``process`` that printed a line per item took 2 ms a line (3,000 items: 6.9 s instead of 0.5).
    """

    def __init__(self, stream: Any) -> None:
        self.rich_proxied_file = stream
        """The stream this stands for (rich's name: a console on it writes there, not here)."""
        self._parts: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        """Nothing: the display prints what was written at its next tick."""

    def isatty(self) -> bool:
        return bool(self.rich_proxied_file.isatty())

    def fileno(self) -> int:
        return int(self.rich_proxied_file.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich_proxied_file, name)

    def take(self, final: bool = False) -> str:
        """The whole lines written since the last take (with ``final``, the partial last one too)."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            if not final:
                cut = text.rfind("\n") + 1
                if cut < len(text):
                    self._parts.append(text[cut:])
                    text = text[:cut]
        return text


class LiveDisplay:
    """A rich live display redrawn a few times a second from the Tally; nothing per item."""

    def __init__(self, tally: Tally, console: Console, title: str, refresh_per_second: float = 4) -> None:
        self._tally = tally
        self._rate = Rate(tally)
        self._title = title
        self._console = console
        # Not rich's redirection (a redraw per printed line): PrintBuffer, printed each tick.
        self._live = Live(
            self, console=console, refresh_per_second=refresh_per_second, transient=False,
            redirect_stdout=False, redirect_stderr=False,
        )  # fmt: skip
        self.failures = FailureReport(tally, console)
        """The final failures, grouped; a few printed one by one above the display."""
        self._ticker = _Ticker(self._tick)
        self._streams: tuple[Any, Any] | None = None
        self._buffers: tuple[PrintBuffer, PrintBuffer] | None = None

    def _tick(self) -> None:
        self._print_buffered()
        self.failures.tick()

    def _print_buffered(self, final: bool = False) -> None:
        for buffer in self._buffers or ():
            text = buffer.take(final)
            if text:
                self._console.print(Text.from_ansi(text[:-1] if text.endswith("\n") else text), soft_wrap=True, highlight=False)

    def __rich__(self) -> RenderableType:
        tally = self._tally
        rate = self._rate.sample()
        settled, succeeded, failed_n = run_counts(tally)
        total = shown_total(tally, settled)
        bar = ProgressBar(total=float(total) if total else None, completed=float(settled), width=40)
        eta = eta_s(tally, total, settled, rate)
        head = Table.grid(padding=(0, 1))
        head.add_row(
            Text(self._title, style="bold"),
            bar,
            Text(f"{settled:,}/{total:,}" if total is not None else f"{settled:,}", style="bold"),
            Text(f"{settled / total:.0%}" if total else "", style="cyan"),
        )
        counts = Table.grid(padding=(0, 2))
        counts.add_row(
            _stat("ok", f"{succeeded:,}", "green"),
            _stat("failed", f"{failed_n:,}", "red" if failed_n else "dim"),
            _stat("retrying", f"{tally.retrying:,}", "yellow" if tally.retrying else "dim"),
            _stat("in flight", f"{tally.in_flight:,}", ""),
            Text(f"{rate:,.1f}/s", style="magenta"),
            _stat("elapsed", _duration(tally.elapsed()), ""),
            _stat("eta", _duration(eta), ""),
            Text(throttle_note(tally), style="yellow"),
        )
        groups = self.failures.groups
        if not groups:
            return Group(head, counts)
        failed = Table.grid(padding=(0, 1))
        for line in group_lines(groups):
            failed.add_row(Text("failed", style="red"), Text(line))
        return Group(head, counts, failed)

    def start(self) -> None:
        """Begin redrawing; what the job prints goes through ``PrintBuffer`` until ``stop``."""
        self._streams = (sys.stdout, sys.stderr)
        self._buffers = (PrintBuffer(sys.stdout), PrintBuffer(sys.stderr))
        sys.stdout, sys.stderr = self._buffers  # type: ignore[assignment]
        with stop_signals_blocked():  # rich's refresh thread too; again after each pause shell
            self._live.start()
            self._ticker.start()

    def stop(self) -> None:
        """Draw the final state and stop redrawing; the job prints to the streams again."""
        self._ticker.stop()
        self._print_buffered(final=True)
        self.failures.tick(final=True)
        self._live.refresh()
        self._live.stop()
        if self._streams is not None and self._buffers is not None:
            if sys.stdout is self._buffers[0]:
                sys.stdout = self._streams[0]
            if sys.stderr is self._buffers[1]:
                sys.stderr = self._streams[1]
            self._streams = self._buffers = None


class _Ticker:
    """Calls ``tick`` every ``TICK_S`` seconds on a thread of its own while started (the pause shell
    stops the display and starts it again)."""

    def __init__(self, tick: Callable[[], None], interval_s: float = TICK_S) -> None:
        self._tick = tick
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self, stopped: threading.Event) -> None:
        while not stopped.wait(self._interval_s):
            self._tick()

    def start(self) -> None:
        """Begin ticking."""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(self._stopped,), name="batchcli-failures", daemon=True)
        with stop_signals_blocked():
            self._thread.start()

    def stop(self) -> None:
        """Stop ticking; a tick under way finishes first."""
        self._stopped.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()


class PlainProgress:
    """Without a terminal: a plain progress line every ``interval_s`` seconds, with the failure groups
    under it, and a few individual failure lines in between, from a thread."""

    def __init__(self, tally: Tally, console: Console, interval_s: float = 10.0) -> None:
        self._tally = tally
        self._console = console
        self._interval_s = interval_s
        self._rate = Rate(tally)
        self.failures = FailureReport(tally, console, more_every_s=interval_s)
        """The final failures, grouped; a few printed one by one between the progress lines."""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batchcli-progress", daemon=True)

    def _loop(self) -> None:
        tick = min(TICK_S, self._interval_s)
        next_line = time.monotonic() + self._interval_s
        while not self._stopped.wait(tick):
            self.failures.tick()
            if time.monotonic() >= next_line:
                self.print_line()
                next_line = time.monotonic() + self._interval_s

    def print_line(self) -> None:
        """Print the current state once, then the failure groups."""
        self._console.print(status_line(self._tally, self._rate.sample()), highlight=False, soft_wrap=True)
        for line in group_lines(self.failures.groups):
            self._console.print(f"  failed {line}", highlight=False, soft_wrap=True, markup=False)

    def start(self) -> None:
        """Begin printing."""
        with stop_signals_blocked():
            self._thread.start()

    def stop(self) -> None:
        """Stop printing and print the final state."""
        self._stopped.set()
        self._thread.join()
        self.failures.tick(final=True)
        self.print_line()


def make_display(tally: Tally, console: Console, title: str, interval_s: float, log_format: str = "text", run_id: str = "") -> Any:
    """The live display on a terminal, plain lines otherwise (JSON ``progress`` events with ``--log-format json``)."""
    if console.is_terminal:
        return LiveDisplay(tally, console, title)
    if log_format == "json":
        from batchcli.run.jsonlog import JsonProgress

        return JsonProgress(tally, console, interval_s, run_id)
    return PlainProgress(tally, console, interval_s)
