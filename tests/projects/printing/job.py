"""A job that prints a line per item to stdout (and every tenth to stderr), as scripts do, and a last partial line."""

import sys

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Printing(Service[int]):
    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    async def process(self, item: int) -> None:
        print(f"row {item} done", flush=True)
        if item % 10 == 0:
            print(f"note {item}", file=sys.stderr)
        if item == self.count - 1:
            print("no newline at the end", end="")
