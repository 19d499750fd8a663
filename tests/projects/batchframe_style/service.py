"""A Batchframe service with its imports renamed: exceptions_to_retry_for as a property, finish()."""

import asyncio
import json
import logging

from batchcli import Service, Source, inject

from .config.abstract_custom_config import AbstractCustomConfig


class Flaky(ValueError):
    """A retryable error's subclass: retried because matching is by isinstance."""


@inject
class TestService(Service):

    source: Source
    _exceptions_to_retry_for = {ValueError}

    @property
    def exceptions_to_retry_for(self) -> set[type[Exception]]:
        return self._exceptions_to_retry_for

    def __init__(self, source: Source, config: AbstractCustomConfig) -> None:
        self.source = source
        self.config = config
        self.attempts: dict[int, int] = {}

    async def process(self, input: int):
        self.attempts[input] = self.attempts.get(input, 0) + 1
        await asyncio.sleep(0.001)
        if input % self.config.fail_every == 0:
            raise Flaky(f"{input} is a multiple of {self.config.fail_every}")
        if input == 7:
            raise KeyError(input)
        logging.info(input * input)

    def finish(self):
        observed = {
            "config_class": type(self.config).__name__,
            "env": self.config.env,
            "max_retries": self.config.max_retries,
            "concurrency": self.config.concurrency,
            "source_class": type(self.source).__name__,
            "same_config": self.source.config is self.config,
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
        }
        (self.config.run_dir / "observed.json").write_text(json.dumps(observed))
