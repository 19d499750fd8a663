"""``AsyncExecutor.items_in_flight``: what the pause shell shows as ``in_flight``, read from the workers."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest

from batchcli.load.configuration import Configuration
from batchcli.executors.asyncpool import AsyncExecutor
from batchcli.outcome import Tally
from batchcli.executors.retries import RetryPolicy

ITEMS = "abcdef"


async def until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def start(process: Any, **settings: Any) -> tuple[AsyncExecutor, Tally, asyncio.Task[None]]:
    config = Configuration(concurrency=3, backoff_s=0, **settings)
    tally = Tally()
    executor = AsyncExecutor(process, config, RetryPolicy(config, ()), tally)
    task = asyncio.ensure_future(executor.run(zip(itertools.count(), ITEMS)))
    return executor, tally, task


@pytest.mark.parametrize("settings", [{}, {"item_timeout_s": 60.0}], ids=["plain", "with-timeout"])
def test_in_flight_lists_the_items_being_processed(settings: dict[str, Any]) -> None:
    """While paused, the items still awaiting ``process`` are listed by ordinal, and none once they finish."""

    async def scenario() -> None:
        release = asyncio.Event()

        async def process(item: str) -> None:
            await release.wait()

        executor, tally, task = start(process, **settings)
        await until(lambda: tally.in_flight == 3)
        executor.pause()
        assert executor.items_in_flight() == {0: "a", 1: "b", 2: "c"}
        release.set()
        await until(lambda: tally.in_flight == 0)
        assert executor.items_in_flight() == {}
        assert tally.succeeded == 3  # paused: nothing new started
        executor.resume()
        await task
        assert tally.succeeded == len(ITEMS)

    asyncio.run(scenario())


def test_in_flight_lists_sync_items_running_in_threads() -> None:
    """A plain ``def process`` running in a worker thread counts as in flight too."""

    async def scenario() -> None:
        release = threading.Event()

        def process(item: str) -> None:
            release.wait(30)

        executor, tally, task = start(process)
        await until(lambda: tally.in_flight == 3)
        executor.pause()
        assert executor.items_in_flight() == {0: "a", 1: "b", 2: "c"}
        release.set()
        await until(lambda: tally.in_flight == 0)
        assert executor.items_in_flight() == {}
        executor.resume()
        await task

    asyncio.run(scenario())


def test_workers_waiting_for_the_rate_limit_are_not_in_flight() -> None:
    """A worker held back by the rate limit has no item in flight, whatever it processed before."""

    async def scenario() -> None:
        release = asyncio.Event()

        async def process(item: str) -> None:
            await release.wait()

        executor, tally, task = start(process, rate_limit=0.5)
        await until(lambda: tally.in_flight == 1)
        assert executor.items_in_flight() == {0: "a"}
        release.set()
        await until(lambda: tally.succeeded == 1)
        assert executor.items_in_flight() == {}
        executor.cancel()
        await task

    asyncio.run(scenario())


class HeldBackend:
    """A Backend leaf that holds every chunk until released, then reports all its items succeeded."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def start(self) -> None:
        pass

    def slots(self) -> int:
        return 2

    async def submit(self, chunk: Any) -> Any:
        import pickle

        from batchcli.executors.messages import ChunkResult

        await self.release.wait()
        return ChunkResult([o for o, _ in pickle.loads(chunk.payload)], [], [], 0.001, 0)

    def cancel(self) -> None:
        pass

    async def close(self, timeout: float) -> None:
        return None


def test_in_flight_lists_the_items_of_chunks_held_by_workers() -> None:
    """The process and Dask executors list, as in flight, the items of the chunks their workers hold."""
    from batchcli.executors.chunked import ChunkedExecutor

    async def scenario() -> None:
        backend = HeldBackend()
        tally = Tally()
        executor = ChunkedExecutor(backend, Configuration(concurrency=2, backoff_s=0, chunk_size=1), tally)
        task = asyncio.ensure_future(executor.run(zip(itertools.count(), ITEMS)))
        await until(lambda: tally.in_flight > 0)
        executor.pause()
        held = executor.items_in_flight()
        assert held and len(held) == tally.in_flight
        assert all(ITEMS[ordinal] == item for ordinal, item in held.items())
        backend.release.set()
        await until(lambda: tally.in_flight == 0)
        assert executor.items_in_flight() == {}
        executor.resume()
        await task
        assert tally.succeeded == len(ITEMS)

    asyncio.run(scenario())
