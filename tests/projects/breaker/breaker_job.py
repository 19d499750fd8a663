"""Items fetched from the flaky API with httpx: an outage or a bad token turns every item into a failure."""

import asyncio

import httpx

from batchcli import Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 200) -> None:
        self.count = count

    def __iter__(self):
        yield from range(self.count)

    def __len__(self) -> int:
        return self.count


@inject
class Api(Service[int]):
    # Refused connections are retried (within max_retries); a 401 or a 503 fails the attempt for good.
    exceptions_to_retry_for = (httpx.TransportError,)

    def __init__(
        self, url: Param[str], token: Param[str] = "good", pause_s: Param[float] = 0.0, even_pause_s: Param[float] = 0.0,
        slow_every: Param[int] = 0, slow_s: Param[float] = 0.0, hang_after: Param[int] = 0, hang_s: Param[float] = 0.0,
    ) -> None:  # fmt: skip
        self.url = url
        self.token = token
        self.pause_s = pause_s
        self.even_pause_s = even_pause_s  # even items take this long: some are still in flight when the breaker trips
        self.slow_every = slow_every  # every Nth item, once the API answered, works slow_s more (an upload, a model)
        self.slow_s = slow_s
        self.hang_after = hang_after  # the calls after the first N hang for hang_s (no client timeout would end them)
        self.hang_s = hang_s
        self.calls = 0

    async def setup(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, timeout=5)

    async def process(self, item: int) -> None:
        pause = self.even_pause_s if self.even_pause_s and item % 2 == 0 else self.pause_s
        if pause:
            await asyncio.sleep(pause)
        self.calls += 1
        if self.hang_after and self.calls > self.hang_after:
            await asyncio.sleep(self.hang_s)
        response = await self.client.get(f"/items/{item}", headers={"Authorization": f"Bearer {self.token}"})
        response.raise_for_status()
        if self.slow_every and item % self.slow_every == 0:
            await asyncio.sleep(self.slow_s)

    async def finish(self) -> None:
        await self.client.aclose()
