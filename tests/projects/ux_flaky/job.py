"""A job with a rejected item, a flaky one that succeeds on retry, and an optional crash of its source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from batchcli import Configuration, Param, Service, Source, inject


@dataclass(kw_only=True)
class FlakyConfig(Configuration):
    """Patient retries: without the testing helper a retry would wait seconds."""

    max_retries: int = 2
    backoff_s: float = 5.0


@inject
class Numbers(Source[int]):
    """1 to count.

    Args:
        count: How many numbers.
        explode: Raise after the first number, ending the run.
    """

    def __init__(self, count: Param[int] = 5, explode: Param[bool] = False) -> None:
        self.count = count
        self.explode = explode

    def __iter__(self) -> Iterator[int]:
        for n in range(1, self.count + 1):
            if self.explode and n == 2:
                raise RuntimeError("the source lost its connection")
            yield n

    def __len__(self) -> int:
        return self.count


@inject
class Check(Service[int]):
    """Rejects the numbers in fail_on; number 2 fails its first attempt with a retryable error."""

    def __init__(self, fail_on: Param[set[int]] = {3}) -> None:  # noqa: B006 - never mutated
        self.fail_on = fail_on
        self.attempts: dict[int, int] = {}

    def process(self, item: int) -> None:
        self.attempts[item] = self.attempts.get(item, 0) + 1
        if item in self.fail_on:
            raise ValueError(f"{item} is not allowed")
        if item == 2 and self.attempts[item] == 1:
            raise ConnectionError("dropped, try again")
