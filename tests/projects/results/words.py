"""A keyed Source (``item_key``) whose Service returns the word upper-cased, from a plain ``def process``."""

from __future__ import annotations

import random

from batchcli import Param, Service, Source, inject


@inject
class Words(Source[str]):
    """``word-0`` .. ``word-{count-1}``, keyed by themselves; shuffled by ``seed`` (when not 0); raises after
    ``crash_after`` items (when >= 0), which crashes the run."""

    def __init__(self, count: Param[int] = 5, seed: Param[int] = 0, crash_after: Param[int] = -1) -> None:
        self.count = count
        self.words = [f"word-{n}" for n in range(count)]
        if seed:
            random.Random(seed).shuffle(self.words)
        self.crash_after = crash_after

    def __iter__(self):
        for position, word in enumerate(self.words):
            if position == self.crash_after:
                raise RuntimeError(f"the source broke after {position} items")
            yield word

    def __len__(self) -> int:
        return self.count

    def item_key(self, item: str) -> str:
        return item


@inject
class Shout(Service[str]):
    """Upper-cases each word; ``word-3`` fails (not retried) when ``fail_three``."""

    def __init__(self, fail_three: Param[bool] = False) -> None:
        self.fail_three = fail_three

    def process(self, item: str) -> str:
        if self.fail_three and item == "word-3":
            raise ValueError("three is not allowed")
        return item.upper()
