"""A job that misbehaves in ways the run and its console must survive, each turned on by a param:
``fail_every``, every n-th item fails at once, for good; ``down_from``, from that item on every item fails after
``slow_s`` (an outage: the breaker's window then holds failures already journaled); ``warn``, a warning logged per item; ``basic_config``, ``logging.basicConfig()`` as scripts call it; ``log_info``, ``logging.debug()`` when built and ``logging.info()`` per item; ``print_lines``, a line printed per item (and every tenth to stderr, and a
last partial line); ``grab_fds_until``, item 0 takes every file descriptor the process may open, taking back
whatever another thread frees, until that file exists (60 s at most), then lets them go (``ledger`` gets
``exhausted`` and ``released``)."""

import asyncio
import logging
import os
import sys
import time

from batchcli import Param, Service, Source, inject

log = logging.getLogger("misbehaving")


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Misbehaving(Service[int]):
    def __init__(
        self,
        count: Param[int] = 100,
        fail_every: Param[int] = 0,
        down_from: Param[int] = 0,
        slow_s: Param[float] = 0.1,
        warn: Param[bool] = False,
        basic_config: Param[bool] = False,
        log_info: Param[bool] = False,
        print_lines: Param[bool] = False,
        grab_fds_until: Param[str] = "",
        delay_s: Param[float] = 0.0,
        ledger: Param[str] = "",
    ) -> None:
        self.count = count
        self.fail_every = fail_every
        self.down_from = down_from
        self.slow_s = slow_s
        self.warn = warn
        if basic_config:
            logging.basicConfig(level=logging.INFO)  # a handler of the job's own on the root logger
        self.log_info = log_info
        if log_info:
            logging.debug("built")  # the module-level call installs a stderr handler on the root logger by itself
        self.print_lines = print_lines
        self.grab_fds_until = grab_fds_until
        self.delay_s = delay_s
        self.ledger = ledger

    async def process(self, item: int) -> None:
        if self.down_from and item >= self.down_from:
            await asyncio.sleep(self.slow_s)
            raise ConnectionError(f"the service is down (item {item})")
        if self.fail_every and item % self.fail_every == 0:
            raise ValueError(f"item {item} is not a valid record")
        if self.warn:
            log.warning("record %d has no email; skipped the mail step", item)
        if self.log_info:
            logging.info("processed %d", item)
        if self.print_lines:
            print(f"row {item} done", flush=True)
            if item % 10 == 0:
                print(f"note {item}", file=sys.stderr)
            if item == self.count - 1:
                print("no newline at the end", end="")
        if self.grab_fds_until and item == 0:
            await self.hold_every_descriptor()
        elif self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def hold_every_descriptor(self) -> None:
        held: list[int] = []
        grab(held)
        os.close(held.pop())  # one free, to write the ledger line
        self.note("exhausted")
        end = time.monotonic() + 60
        while time.monotonic() < end and not os.path.exists(self.grab_fds_until):  # what another thread frees is taken again
            grab(held)
            await asyncio.sleep(0.01)
        for fd in held:
            os.close(fd)
        self.note("released")

    def note(self, line: str) -> None:
        with open(self.ledger, "a") as ledger:
            ledger.write(line + "\n")


def grab(held: list[int]) -> None:
    """Open files until the process may open no more."""
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
