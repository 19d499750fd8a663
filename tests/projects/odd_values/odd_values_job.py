"""Items, keys and results of odd shapes that the journal must keep; ``mode`` picks one:

- ``big_keys``: ``item_key`` is a 65-bit int (a 128-bit id, ``uuid.int``), past what SQLite's INTEGER holds.
- ``cycles``: every third item is a dict that holds itself, and fails; item 4 returns a dict that holds itself.
- ``deep``: item 2 is a list nested 1,500 deep, and fails; item 4 returns a list nested 1,200 deep.
- ``keys_alike``: item 5 is a dict whose keys 1 and "1" are alike as JSON's text keys, and fails; with
  ``returns=keys_alike`` item 4 returns such a dict (with a tuple key too).
- ``long_ints``: items are ints of 5,001 digits (``10**5000 + n``), past what ``str()`` writes; each ends in its
  id, whose first attempt fails with a ConnectionError when it is in ``flaky``; odd ones return themselves, even
  ones a dict holding themselves.

Every success is appended to ``ledger``; the items whose ids are in ``fail`` (comma-separated) fail too.
"""

from __future__ import annotations

from typing import Any

from batchcli import Param, Service, Source, inject


LONG = 10**5000


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def holding_itself(n: int) -> dict[str, Any]:
    value: dict[str, Any] = {"id": n}
    value["self"] = value
    return value


@inject
class Odd(Source[Any]):
    def __init__(self, mode: Param[str] = "big_keys", count: Param[int] = 10) -> None:
        self.mode, self.count = mode, count

    def __iter__(self):
        for n in range(self.count):
            if self.mode == "cycles" and n % 3 == 0:
                yield holding_itself(n)
            elif self.mode == "deep" and n == 2:
                yield nested(1500)
            elif self.mode == "keys_alike" and n == 5:
                yield {"id": n, 1: "the int", "1": "the str"}
            elif self.mode == "long_ints":
                yield LONG + n
            else:
                yield {"id": n}

    def __len__(self) -> int:
        return self.count

    def item_key(self, item: Any) -> Any:
        if isinstance(item, int):
            return item - LONG
        return 2**64 + item["id"] if isinstance(item, dict) else 2**70


@inject
class Keep(Service[Any]):
    def __init__(
        self, ledger: Param[str], returns: Param[str] = "plain", fail: Param[str] = "", flaky: Param[str] = ""
    ) -> None:
        self.ledger, self.returns = ledger, returns
        self.fail = {int(n) for n in fail.split(",") if n}
        self.flaky = {int(n) for n in flaky.split(",") if n}

    def process(self, item: Any) -> Any:
        if isinstance(item, int):
            n = item - LONG
            if n in self.flaky:
                self.flaky.discard(n)
                raise ConnectionError(f"dropped while sending item {n}")
            if n in self.fail:
                raise ValueError("this item is refused")
            with open(self.ledger, "a", encoding="utf-8") as out:
                out.write(f"{n}\n")
            return item if n % 2 else {"id": n, "value": item}
        if isinstance(item, list) or "self" in item or 1 in item or item["id"] in self.fail:
            raise ValueError("this item is refused")
        with open(self.ledger, "a", encoding="utf-8") as out:
            out.write(f"{item['id']}\n")
        if item["id"] == 4 and self.returns == "cycle":
            return holding_itself(4)
        if item["id"] == 4 and self.returns == "deep":
            return nested(1200)
        if item["id"] == 4 and self.returns == "keys_alike":  # alike as JSON's text keys
            return {1: "the int", "1": "the str", (1, 2): "a tuple"}
        return {"id": item["id"]}
