"""Fetch items from an API that throttles (429 with Retry-After): watch batchcli cool down and adapt.

Run it against a server of its own (started inside the run, 200 requests/s)::

    batchcli exec examples/flaky_api/job.py -p count=2000

or against one you started yourself (``python examples/flaky_api/server.py --rate 200``)::

    batchcli exec examples/flaky_api/job.py -p url=http://127.0.0.1:8765

httpx raises ``HTTPStatusError`` for a 429 or 503; batchcli recognises it as a throttle by itself.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import httpx

from batchcli import Param, Service, Source, inject


@inject
class ItemNumbers(Source[int]):
    """The item numbers to fetch.

    Args:
        count: How many items.
    """

    def __init__(self, count: Param[int] = 1000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class FetchItem(Service[int]):
    """GET {url}/items/N for every item.

    Args:
        url: The API; empty starts a local one for this run (examples/flaky_api/server.py).
        token: The bearer token (the local API accepts "good").
        rate: Requests per second the local API serves before it answers 429.
    """

    def __init__(self, url: Param[str] = "", token: Param[str] = "good", rate: Param[float] = 200.0) -> None:
        self.url = url
        self.token = token
        self.rate = rate
        self._server: Any = None

    async def setup(self) -> None:
        if not self.url:
            self._server = _local_server(self.rate).start()
            self.url = self._server.url
        self.client = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )

    async def process(self, item: int) -> Any:
        response = await self.client.get(f"/items/{item}")
        response.raise_for_status()  # a 429/503 becomes a throttle: retried, without spending an attempt
        return response.json()

    async def finish(self) -> None:
        await self.client.aclose()
        if self._server is not None:
            self._server.stop()


def _local_server(rate: float) -> Any:
    path = Path(__file__).with_name("server.py")
    spec = importlib.util.spec_from_file_location("flaky_api_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.FlakyApi(rate=rate)
