"""Logs at info and debug from the service; one item fails, through a helper, for the log file's traceback."""

import logging

from batchcli import Service, Source, inject

log = logging.getLogger("logging_levels_job")


@inject
class Numbers(Source[int]):
    def __iter__(self):
        yield from range(3)


def parse_record(item: int) -> int:
    if item == 2:
        raise ValueError(f"record {item} is corrupt")
    return item


@inject
class Chatty(Service[int]):
    async def process(self, item: int) -> None:
        log.info("info line for item %d", item)
        log.debug("debug line for item %d", item)
        parse_record(item)
