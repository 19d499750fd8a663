"""GET {url}/items/N with httpx for each item: the throttled-API benchmark's job."""

from __future__ import annotations

import logging

import httpx

from batchcli import Param, Service, Source, inject

logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request in batchcli.log would cost more than the bare pool pays


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 1000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Get(Service[int]):
    def __init__(self, url: Param[str] = "") -> None:
        self.url = url

    async def setup(self) -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        self.client = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": "Bearer good"}, timeout=30, limits=limits
        )

    async def process(self, item: int) -> None:
        (await self.client.get(f"/items/{item}")).raise_for_status()

    async def finish(self) -> None:
        await self.client.aclose()
