"""A job that raises the recursion limit and returns new flat dicts, one of them holding a tuple nested 2,500 levels
deep that the garbage collector no longer tracks (as it stops tracking any long-lived tuple of numbers), so the dict
waits for its batch like the others: pickle goes that deep under the raised limit, marshal (which reading uses)
does not."""

from __future__ import annotations

import gc
import sys

from batchcli import Param, Service, Source, inject

sys.setrecursionlimit(100_000)


def chain(depth: int) -> object:
    """``(depth - 1, (depth - 2, ... (0, None)))``, untracked as it is built (a young collection a level)."""
    value = None
    for n in range(depth):
        value = (n, value)
        gc.collect(0)
    return value


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 3000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class DeepChain(Service[int]):
    def __init__(self, deep_every: Param[int] = 1000) -> None:
        self.deep_every = deep_every
        self.chain = chain(2500)
        assert not gc.is_tracked(self.chain)

    async def process(self, item: int) -> object:
        if item > 1000 and item % self.deep_every == self.deep_every // 2:
            return {"n": item, "chain": self.chain}
        return {"n": item}
