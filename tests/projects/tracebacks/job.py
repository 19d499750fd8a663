"""Failures whose story is more than one exception: raised from another, while handling another, in a TaskGroup,
with a cycle in the chain, or after deep recursion; and a Source that breaks raising from another."""

from __future__ import annotations

import asyncio

from batchcli import Param, Service, Source, Throttled, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 2, source_breaks: Param[bool] = False) -> None:
        self.count, self.source_breaks = count, source_breaks

    def __iter__(self):
        yield from range(self.count)
        if self.source_breaks:
            try:
                open("/nonexistent/next-page.csv")
            except OSError as error:
                raise RuntimeError("could not read the next page") from error


def deeper(n: int) -> int:
    return deeper(n + 1)


@inject
class Story(Service[int]):
    def __init__(self, how: Param[str] = "cause") -> None:
        self.how = how
        self.attempts: dict[int, int] = {}

    def process(self, item: int) -> None:
        if self.how == "cause":
            try:
                raise ConnectionRefusedError(f"db host refused item {item}")
            except OSError as error:
                raise RuntimeError("could not enrich the item") from error
        if self.how == "context":
            try:
                {}["email"]
            except KeyError:
                raise ValueError("the record is malformed")
        if self.how == "group":
            asyncio.run(self._group())
        if self.how == "throttled_in_group" and self.attempts.setdefault(item, 0) == 0:
            self.attempts[item] = 1
            raise ExceptionGroup("two calls refused", [Throttled(0.2), Throttled(0.4)])
        if self.how in ("reset_in_group", "reset_and_bad_in_group"):
            # Fan-out to two calls; the first attempt's connection is reset, and for the second kind a record is bad.
            attempt = self.attempts[item] = self.attempts.get(item, 0) + 1
            asyncio.run(self._fan_out(attempt == 1, self.how == "reset_and_bad_in_group"))
        if self.how == "cycle":
            first, second = ValueError("first"), ValueError("second")
            first.__context__, second.__context__ = second, first
            raise first
        if self.how == "recursion":
            deeper(0)
        if self.how == "fresh_code":  # a function made for this item alone, gone once it failed
            scope: dict[str, object] = {}
            exec(compile(f"def check_{item}():\n    raise ValueError('item {item}')\n", f"<check {item}>", "exec"), scope)
            scope[f"check_{item}"]()  # type: ignore[operator]

    async def _group(self) -> None:
        async def lookup() -> None:
            raise KeyError("email")

        async with asyncio.TaskGroup() as group:
            group.create_task(lookup())

    async def _fan_out(self, reset: bool, bad: bool) -> None:
        async def call(fails: BaseException | None) -> None:
            if fails is not None:
                raise fails

        async with asyncio.TaskGroup() as group:
            group.create_task(call(ConnectionResetError("connection reset by peer") if reset else None))
            group.create_task(call(ValueError("the record is malformed") if bad else None))

