"""When and whether a failed attempt is retried: tenacity's strategies, one state per item."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import tenacity

from batchcli.load.configuration import Configuration


@dataclass
class Attempts:
    """The retry history of one item; created at its first failure, never on the success path."""

    state: tenacity.RetryCallState
    """tenacity's per-call state: attempt number, last outcome."""
    first_started: float
    """Wall-clock time (epoch seconds) of the first attempt's failure."""

    @property
    def count(self) -> int:
        """Attempts made so far."""
        return self.state.attempt_number


class RetryPolicy:
    """Decides, after an attempt failed, whether to retry it and after how long."""

    def __init__(self, config: Configuration, retry_for: Iterable[type[BaseException]]) -> None:
        types = tuple(retry_for)
        for t in types:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise TypeError(f"exceptions_to_retry_for must hold exception classes, got {t!r}.")
        # Timeouts batchcli itself imposes are always worth another attempt.
        self.retry_for: tuple[type[BaseException], ...] = (*types, TimeoutError)
        jitter = tenacity.wait_random(0, config.backoff_s / 2) if config.backoff_s > 0 else tenacity.wait_none()
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(config.max_retries + 1),
            wait=tenacity.wait_exponential(multiplier=config.backoff_s, max=config.backoff_max_s) + jitter,
            retry=tenacity.retry_if_exception_type(self.retry_for),
        )

    def start(self, now: float) -> Attempts:
        """The history of an item that just failed its first attempt."""
        return Attempts(tenacity.RetryCallState(self._retrying, None, (), {}), now)

    def next_delay(self, attempts: Attempts, error: BaseException) -> float | None:
        """Seconds to wait before the next attempt, or None when the item has finally failed."""
        state = attempts.state
        state.set_exception((type(error), error, error.__traceback__))
        if not self._retrying.retry(state) or self._retrying.stop(state):
            return None
        delay: float = self._retrying.wait(state)
        state.prepare_for_next_attempt()
        return delay
