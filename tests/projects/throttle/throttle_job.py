"""GET {url}/items/N from the flaky API with httpx (a 429/503 raises httpx.HTTPStatusError), or raise Throttled."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from batchcli import Param, Service, Source, Throttled, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 20) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Fetch(Service[int]):
    def __init__(
        self, url: Param[str] = "", delay_s: Param[float] = 0.0, raise_throttled: Param[float] = -1
    ) -> None:
        self.url = url
        self.delay_s = delay_s
        self.raise_throttled = raise_throttled
        """Seconds of Retry-After a ``Throttled`` carries instead of reading the response; -1: let httpx raise."""

    async def setup(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, headers={"Authorization": "Bearer good"}, timeout=10)

    async def process(self, item: int) -> Any:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        response = await self.client.get(f"/items/{item}")
        if self.raise_throttled >= 0 and response.status_code in (429, 503):
            raise Throttled(self.raise_throttled)
        response.raise_for_status()
        return response.json()

    async def finish(self) -> None:
        await self.client.aclose()
