"""``batchcli watch RUN``: the live state of a run from another terminal, read from its journal alone."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from batchcli.cli.ctl import owned_run
from batchcli.journal.history import STATUS_STYLES
from batchcli.journal.live import Snapshot, Watcher
from batchcli.outcome import per_second, shown
from batchcli.run.interrupts import Terminated, ends_at_stop_signals


def watch(run_dir: Path, console: Console, interval_s: float = 1.0, once: bool = False) -> None:
    """Show the run until it ends (or Ctrl-C), redrawn every ``interval_s``; once and done with ``once``."""
    owned_run(run_dir, "watch")
    # Ctrl-C leaves watch at once, and SIGTERM too (exit 143, as a terminated process): the start-up handler
    # would only remember either until the run ended, minutes or hours away.
    with ends_at_stop_signals("watch"):
        watcher = Watcher(run_dir)
        try:
            view = watcher.snapshot()
            if once or not view.running:
                console.print(frame(view))
            elif console.is_terminal:
                with Live(frame(view), console=console, auto_refresh=False) as live:
                    while view.running:
                        time.sleep(interval_s)
                        view = watcher.snapshot()
                        live.update(frame(view), refresh=True)
            else:  # a pipe or a file: one frame after another
                while True:
                    console.print(frame(view))
                    if not view.running:
                        break
                    time.sleep(interval_s)
                    view = watcher.snapshot()
                    console.print()
        except KeyboardInterrupt as stop:
            if isinstance(stop, Terminated):
                raise
            # Ctrl-C leaves watch only, with exit 0: the run never hears of it


def frame(view: Snapshot) -> RenderableType:
    """One screen of ``watch``: status, counts and rate, limits and breaker, failure groups."""
    info, live = view.info, view.live
    lines: list[RenderableType] = []
    head = Text.assemble((info.run_dir.name, "bold"), "  ", (info.status, STATUS_STYLES.get(info.status, "")))
    if view.running:
        head.append(f" (pid {info.pid})", "dim")
        if info.starting:
            head.append("  starting: loading the project", "yellow")
        elif live.get("stopping"):
            head.append("  stopping", "yellow")
        elif live.get("paused"):
            head.append("  paused", "yellow")
    lines.append(head)
    settled = info.succeeded + info.failed
    total = info.total
    done = f"{settled}/{total}" + (f" ({settled / total:.0%})" if total else "") if total is not None else f"{settled}"
    parts = [done, f"ok {info.succeeded}", f"failed {info.failed}"]
    if view.running:
        parts += [f"retrying {live.get('retrying', 0)}", f"in flight {live.get('in_flight', 0)}"]
    parts += ["-/s" if view.rate is None else f"{view.rate:,.1f}/s", f"elapsed {_clock(info.active_s)}"]
    if view.running:
        parts.append(f"eta {_clock(view.eta_s)}")
    lines.append(Text("  ".join(parts)))
    if view.running and live:
        lines.append(Text("  ".join(_limits(live)), "dim"))
    if live.get("breaker") not in (None, "closed"):
        lines.append(Text(shown(f"circuit breaker {live['breaker']}: {live.get('breaker_reason', '')}"), "bold red"))
    if view.groups:
        age = view.groups_age_s
        lines.append(Text.assemble(("failures", "bold"), (f" (as of {age:.0f} s ago)", "dim") if age >= 2 else ""))
        for count, error_type, shape in view.groups:
            # Written out as show and the run's console write them: raw, a message's escape sequences cleared the screen.
            lines.append(Text(shown(f"  {count:>6}  {error_type}: {' '.join(shape.split())}")[:200], "red"))
    if not view.running:
        lines.append(Text.from_markup(f"[dim]The run is {escape(info.status)}; see it whole with: batchcli show {escape(str(info.run_dir))}[/]"))
    return Group(*lines)


def _limits(live: dict[str, object]) -> list[str]:
    concurrency, configured = live.get("concurrency"), live.get("configured_concurrency")
    rate_limit = live.get("rate_limit")
    if concurrency is None:  # no executor yet (setup() runs): only the configured limits exist ("None of 10" before)
        parts = [f"concurrency {configured} (starting)"]
        rate_limit = live.get("configured_rate_limit")
    else:
        how = "held by the breaker" if live.get("limits_held") else "adapting"
        parts = [f"concurrency {concurrency}" + ("" if concurrency == configured else f" of {configured} ({how})")]
    parts.append("rate limit " + (per_second(rate_limit) if isinstance(rate_limit, (int, float)) else "none"))
    cooling = live.get("cooling_down_s") or 0
    if isinstance(cooling, (int, float)) and cooling > 0:
        parts.append(f"cooling down {cooling:.0f}s")
    if live.get("throttles"):
        parts.append(f"throttled {live['throttles']} time(s)")
    return parts


def _clock(seconds: float | None) -> str:
    return "-:--:--" if seconds is None else str(timedelta(seconds=int(seconds)))
