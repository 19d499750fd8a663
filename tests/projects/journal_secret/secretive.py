"""A job with a secret param, which the journal must never store."""

from __future__ import annotations

from batchcli import Param, Secret, Service, Source, inject


@inject
class Pages(Source[int]):
    """Pages 0 .. 9; raises at ``crash_at`` (when not -1)."""

    def __init__(self, crash_at: Param[int] = -1) -> None:
        self.crash_at = crash_at

    def __iter__(self):
        for n in range(10):
            if n == self.crash_at:
                raise RuntimeError(f"the source broke at {n}")
            yield n


@inject
class Fetch(Service[int]):
    """Needs a token."""

    def __init__(self, token: Param[Secret]) -> None:
        self.token = token

    def process(self, item: int) -> None:
        if not self.token:
            raise PermissionError("no token")
