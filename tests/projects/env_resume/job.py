"""A job whose params and secrets come from the environment; it stops itself with SIGTERM so it can be resumed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchcli import Configuration, Param, Secret, Service, Source, inject


@dataclass(kw_only=True)
class EnvConfig(Configuration):
    """The only configuration: a secret field with a default."""

    api_key: Secret = Secret("default-api-key")  # noqa: RUF009 - an immutable str


@inject
class Numbers(Source[int]):
    """0 .. count-1."""

    def __init__(self, count: Param[int] = 400) -> None:
        self.count = count

    def __iter__(self) -> Iterator[int]:
        yield from range(self.count)

    def __len__(self) -> int:
        return self.count


@inject
class Call(Service[int]):
    """Records which secrets it was given (as a digest, outside the run directory); stops its own run at ``stop_at``.

    Fails every multiple of ``fail_every`` (when > 0), so the run has inputs to retry.
    """

    def __init__(
        self,
        config: EnvConfig,
        proof_dir: Param[Path],
        token: Param[Secret] = Secret("default-token"),  # noqa: B008 - an immutable str
        stop_at: Param[int] = -1,
        fail_every: Param[int] = 0,
    ) -> None:
        self.config = config
        self.proof_dir = proof_dir
        self.token = token
        self.stop_at = stop_at
        self.fail_every = fail_every

    def setup(self) -> None:
        digest = hashlib.sha256(f"{self.token}|{self.config.api_key}".encode()).hexdigest()
        with open(self.proof_dir / "secrets.txt", "a") as out:
            out.write(f"{digest}\n")

    async def process(self, item: int) -> None:
        if item == self.stop_at:
            # A real SIGTERM, at a known item: the run stops gracefully and can be resumed.
            os.kill(os.getpid(), signal.SIGTERM)
            await self._stopping()
        if self.fail_every and item % self.fail_every == 0:
            raise ValueError(f"{item} is a multiple of {self.fail_every}")

    async def _stopping(self) -> None:
        """Hold this item until the run has taken the stop (its log says so), so no later item starts."""
        log = self.config.run_dir / "batchcli.log"
        for _ in range(600):  # a bound against a hung test only; the stop is usually seen at once
            # The sleep comes first: the run schedules its stop before it logs it, so once the line is
            # there, one more turn of the loop has applied the stop.
            await asyncio.sleep(0.05)
            if log.exists() and "SIGTERM" in log.read_text():
                await asyncio.sleep(0.05)
                return
