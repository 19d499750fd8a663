"""A job whose process logs a warning for every item, as jobs do for a skipped field or a retry of their own."""

import logging

from batchcli import Param, Service, Source, inject

log = logging.getLogger("chatty")


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 10) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Chatty(Service[int]):
    async def process(self, item: int) -> None:
        log.warning("record %d has no email; skipped the mail step", item)
