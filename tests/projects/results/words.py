"""A keyed Source (``item_key``) whose Service returns the word upper-cased, from a plain ``def process``."""

from __future__ import annotations

from batchcli import Param, Service, Source, inject


@inject
class Words(Source[str]):
    """``word-0`` .. ``word-{count-1}``, keyed by themselves."""

    def __init__(self, count: Param[int] = 5) -> None:
        self.count = count

    def __iter__(self):
        return iter(f"word-{n}" for n in range(self.count))

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
