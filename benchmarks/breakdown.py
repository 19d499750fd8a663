"""Where the per-item time of the async executor goes: the worker loop rebuilt one cost at a time.

    python benchmarks/breakdown.py

Each variant adds one thing the real worker (batchcli/executors/asyncpool.py) does per item to the
bare pool's loop; the printed increments are what each costs. Used for docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import time
from array import array

N = 1_000_000


class Counters:
    def __init__(self) -> None:
        self.in_flight = 0
        self.succeeded = 0
        self.slow = False
        self.done = array("q")


async def noop(item: int) -> None:
    return None


async def bare() -> None:
    for item in iter(range(N)):
        await noop(item)


async def numbered() -> None:
    for ordinal, item in zip(__import__("itertools").count(), iter(range(N))):
        await noop(item)


async def with_next() -> None:
    next_item = zip(__import__("itertools").count(), iter(range(N))).__next__
    while True:
        try:
            ordinal, item = next_item()
        except StopIteration:
            return
        await noop(item)


async def with_flag() -> None:
    c = Counters()
    next_item = zip(__import__("itertools").count(), iter(range(N))).__next__
    while True:
        if c.slow:
            return
        try:
            ordinal, item = next_item()
        except StopIteration:
            return
        await noop(item)


async def with_counters() -> None:
    c = Counters()
    next_item = zip(__import__("itertools").count(), iter(range(N))).__next__
    while True:
        if c.slow:
            return
        try:
            ordinal, item = next_item()
        except StopIteration:
            return
        c.in_flight += 1
        try:
            await noop(item)
        except Exception:
            c.in_flight -= 1
        else:
            c.in_flight -= 1
            c.succeeded += 1


async def with_done() -> None:
    c = Counters()
    done = c.done.append
    next_item = zip(__import__("itertools").count(), iter(range(N))).__next__
    while True:
        if c.slow:
            return
        try:
            ordinal, item = next_item()
        except StopIteration:
            return
        c.in_flight += 1
        try:
            await noop(item)
        except Exception:
            c.in_flight -= 1
        else:
            c.in_flight -= 1
            c.succeeded += 1
            done(ordinal)


def main() -> None:
    previous = None
    for name, fn in [
        ("bare pool loop", bare),
        ("+ numbering (zip with a counter)", numbered),
        ("+ explicit next() and StopIteration", with_next),
        ("+ one flag check (pause/stop/rate)", with_flag),
        ("+ in-flight and succeeded counters", with_counters),
        ("+ ordinal appended to the done array", with_done),
    ]:
        best = min(_time(fn) for _ in range(5))
        per_item = best / N * 1e9
        delta = "" if previous is None else f"  (+{per_item - previous:.0f} ns)"
        print(f"{name:42s} {per_item:6.0f} ns/item{delta}")
        previous = per_item


def _time(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    asyncio.run(fn())
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
