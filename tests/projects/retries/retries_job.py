"""A spy service that counts attempts: subclasses of retryable errors retry, other errors fail at once."""

import json
from collections import Counter

from batchcli import Configuration, Service, Source, inject

ITEMS = ["ok", "reset-twice", "reset-always", "bad-value"]


@inject
class Names(Source[str]):
    def __iter__(self):
        yield from ITEMS

    def __len__(self) -> int:
        return len(ITEMS)


@inject
class Flaky(Service[str]):
    # exceptions_to_retry_for is left at its default: TimeoutError and ConnectionError.

    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.attempts: Counter[str] = Counter()

    async def process(self, item: str) -> None:
        self.attempts[item] += 1
        if item == "reset-twice" and self.attempts[item] <= 2:
            raise ConnectionResetError(f"reset #{self.attempts[item]}")
        if item == "reset-always":
            raise ConnectionResetError("the peer hung up")
        if item == "bad-value":
            raise ValueError("not retryable")

    def finish(self) -> None:
        (self.config.run_dir / "attempts.json").write_text(json.dumps(self.attempts))
