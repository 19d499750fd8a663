"""Fails every third user with a message that carries the user's id, and user 10 with another error."""

from __future__ import annotations

from batchcli import Service, Source, inject


@inject
class Users(Source[int]):
    def __iter__(self):
        return iter(range(1, 13))


@inject
class Lookup(Service[int]):
    async def process(self, item: int) -> None:
        if item == 10:
            raise KeyError("no such region")
        if item % 3 == 0:
            raise ValueError(f"user {item} has a malformed record of 2.5 kB")
