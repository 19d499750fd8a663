"""A job whose ``process`` logs with ``extra=`` values that cannot travel from a worker process as they are.

Item n logs, when n % 10 is 5, an exception whose ``__init__`` takes other arguments than it pickles with (it
pickles, but does not unpickle); when 7, a lock (it does not pickle); when 9, a ``Secret``. Every item appends
its number to ``ledger`` once processed.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from batchcli import Param, Secret, Service, Source, inject

log = logging.getLogger("worker_logs")


class ApiError(Exception):
    """Unpickled as ``ApiError(message)``, which its ``__init__`` refuses."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 100) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Logs(Service[int]):
    def __init__(self, ledger: Param[Path], token: Param[Secret] = Secret("tok-5c2e9a71")) -> None:  # noqa: B008
        self.ledger, self.token = ledger, token

    def setup(self) -> None:
        log.info("set up in %d", os.getpid())

    def finish(self) -> None:
        log.warning("finished in %d", os.getpid())

    def process(self, item: int) -> None:
        if item % 10 == 5:
            log.warning("item %d: the API said no", item, extra={"error": ApiError(500, "boom")})
        elif item % 10 == 7:
            log.warning("item %d: holding a lock", item, extra={"lock": threading.Lock()})
        elif item % 10 == 9:
            log.warning("item %d: with a token", item, extra={"token": self.token})
        fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{item}\n".encode())
        finally:
            os.close(fd)
