"""Items fetched from the flaky API with httpx: an outage or a bad token turns every item into a failure."""

import asyncio
import logging
import time

import httpx

from batchcli import Param, Service, Source, inject


class Slow(logging.Handler):
    """Takes ``seconds`` over each record, on the recorder's thread: its flushes last that much longer."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(self.seconds)


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
        slow_log_s: Param[float] = 0.0,
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
        self.slow_log_s = slow_log_s  # each batch of failures the recorder logs takes this long (a slow disk, big messages)

    async def setup(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, timeout=5)
        if self.slow_log_s:
            logging.getLogger("batchcli.failures").addHandler(Slow(self.slow_log_s))

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
