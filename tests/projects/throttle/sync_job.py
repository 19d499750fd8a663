"""throttle_job.py's Fetch with a plain ``def process`` (httpx's sync client): a worker calls it inline, one at a time."""

from __future__ import annotations

import time
from typing import Any

import httpx

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 20) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class FetchSync(Service[int]):
    def __init__(self, url: Param[str] = "", delay_s: Param[float] = 0.0) -> None:
        self.url = url
        self.delay_s = delay_s

    def setup(self) -> None:
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": "Bearer good"}, timeout=10)

    def process(self, item: int) -> Any:
        if self.delay_s:
            time.sleep(self.delay_s)
        response = self.client.get(f"/items/{item}")
        response.raise_for_status()
        return response.json()

    def finish(self) -> None:
        self.client.close()
