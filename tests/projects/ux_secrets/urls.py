"""Items that hold the secret (URLs with their key); item 1's call fails, its message quoting the URL."""

from __future__ import annotations

from collections.abc import Iterator

from batchcli import Param, Secret, Service, Source, inject


@inject
class Urls(Source[str]):
    def __init__(self, token: Param[Secret]) -> None:
        self.token = token

    def __iter__(self) -> Iterator[str]:
        for n in range(3):
            yield f"https://api.example/items/{n}?key={self.token}"


@inject
class Fetch(Service[str]):
    async def process(self, item: str) -> None:
        if "/items/1?" in item:
            raise ValueError(f"bad url {item}")
