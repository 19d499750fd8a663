"""What the driver, the backends and the workers of the process, Dask and Ray executors send each other.

All of it is plain, picklable data with batchcli's own classes only: a worker's exceptions travel as
text (``ErrorInfo``) because their classes may not exist where they arrive.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from batchcli.load.wiring import Wiring
from batchcli.executors.bundle import Bundle
from batchcli.durations import Durations
from batchcli.outcome import error_text, qualified_name
from batchcli.load.project import format_item_traceback

log = logging.getLogger("batchcli")

CANCEL_GRACE_S = 0.5
"""After a stop at once, how long the Dask and Ray chunks running then get to come back with the items they finished:
the workers were told to start no more, and a chunk answers within ``worker.CANCEL_POLL_S`` of the word. One whose
item never yields (sync code) is dropped after it, its unfinished items unprocessed. Within ``hardstop.GRACE_S``."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild a run's job: plain data only, like a Celery task's arguments."""

    key: str
    """Unique per run: a worker process keeps one built job per key."""
    wiring: Wiring
    """The target, configuration name and raw ``-p`` values the run was started with."""
    output_dir: str
    """The run's output directory, for the configuration's runtime fields."""
    run_dir: str
    """The run's directory."""
    started_at: datetime
    """When the run started."""
    bundle: Bundle | None = None
    """The project's files, for workers that cannot see the driver's disk; None loads ``wiring.target``."""
    log_level: int = 30
    """The lowest level of log records a process worker forwards to the driver."""

    @classmethod
    def for_run(cls, config: Any, wiring: Wiring, bundle: Bundle | None = None) -> WorkerSpec:
        """The spec of the run ``config`` describes (its runtime fields bound), under a new key."""
        return cls(
            key=uuid.uuid4().hex,
            wiring=wiring,
            output_dir=str(config.output_dir),
            run_dir=str(config.run_dir),
            started_at=config.started_at,
            bundle=bundle,
            log_level=logging.getLogger().getEffectiveLevel(),
        )


@dataclass(frozen=True)
class Chunk:
    """Items on their way to a worker, with how to run them: the driver's settings at sending time."""

    id: int
    """Unique within the run."""
    payload: bytes
    """A pickled list of ``(ordinal, item)``, unpickled only once the worker has loaded the project."""
    size: int
    """How many items the payload holds."""
    share: int
    """Items the worker runs at once: its share of ``concurrency``."""
    timeout_s: float | None = None
    """``item_timeout_s``: an attempt running longer fails with a (retryable) ``TimeoutError``."""
    rate: float | None = None
    """Most items this chunk starts per second: its share of ``rate_limit``."""
    limits: int = 0
    """The driver's limits version when it was sent: once the rate changes, the items still waiting for a
    start slot go back to the driver, which sends them again under the new rate (``Backend.limits_changed``)."""
    give_back: tuple[int, float] | None = None
    """With the circuit breaker on: after this many failed items in the chunk, at least this share of its
    attempts, the worker starts no more of it and hands the rest back unstarted (the driver decides)."""
    timed: bool = False
    """True while the run serves metrics: the worker times each attempt and sends the counts back
    (``ChunkResult.durations``); otherwise it adds nothing per item."""
    alone: frozenset[int] = frozenset()
    """Ordinals the API refused before while it served other items since (``Attempts.refused_alone``): refused
    again, such an item holds neither the worker nor the rest of the chunk (the driver waits for it alone)."""
    holds: int = 0
    """How many times the driver had held every start when it was sent: once it holds them again (a throttle's
    cool-down, a pause), the chunk starts none of its remaining items and hands them back unstarted (``Backend.hold``)."""
    first_after_s: float = 0.0
    """Seconds after ``sent_at`` before which the chunk starts no item: the driver books each chunk's first start
    on the whole ``rate_limit`` (``ChunkedExecutor._book_first_start``), so that workers given chunks together start
    them ``1 / rate_limit`` apart. Each paced its share from its own first start, so N workers started N items at
    once, at the run's start and again at the end of every cool-down: against an API with a burst of 1 each such
    collision was a 429 and a cut, down to 0.12/s for an API serving 5/s."""
    sent_at: float = 0.0
    """``time.time()`` in the driver when it was sent: a chunk a worker takes up later waits only what is left."""
    live: bool = False
    """The pause shell's or ``ctl``'s retry of one item (``process_one``): it runs at once, cool-down or not, as on
    the async executor (a worker still holding after a 429 handed it back, and the retry was lost)."""


@dataclass(frozen=True)
class ErrorInfo:
    """An exception raised in a worker, as text: its class may not even exist in the driver."""

    error_type: str
    """Qualified name of the exception class."""
    message: str
    """``str()`` of the exception."""
    traceback: str
    """The user's traceback, batchcli's frames trimmed."""

    @classmethod
    def of(cls, error: BaseException) -> ErrorInfo:
        from batchcli.errors import BatchcliError

        if isinstance(error, BatchcliError):  # its message is already the whole story
            return cls(qualified_name(type(error)), str(error), "")
        return cls(qualified_name(type(error)), error_text(error), format_item_traceback(error))


@dataclass(frozen=True)
class ItemError:
    """One failed attempt of one item."""

    ordinal: int
    """The item's position in the source."""
    info: ErrorInfo
    """What it raised."""
    retryable: bool
    """True when the worker's Service lists the exception (by ``isinstance``), or it timed out."""
    throttled: bool = False
    """True when the API refused the attempt for now (a 429/503 or ``Throttled``): no attempt is spent."""
    retry_after_s: float | None = None
    """For a throttle: the wait the API asked for, in seconds from when the worker saw it."""
    unavailable: bool = False
    """For a throttle: an HTTP 503, not a 429 (``Throttle.unavailable``)."""


@dataclass(frozen=True)
class ChunkResult:
    """What became of a chunk's items, one outcome per item."""

    succeeded: list[int]
    """Ordinals that succeeded."""
    errors: list[ItemError]
    """Attempts that raised."""
    skipped: list[int]
    """Ordinals never attempted, or abandoned by a cancel: they stay unprocessed."""
    elapsed_s: float
    """Wall time of the chunk in the worker, for sizing the next chunks."""
    pid: int
    """The worker process that ran it."""
    kept: list[tuple[int, str | bytes, bytes | None]] = field(default_factory=list)
    """Items that succeeded with a result: ordinal and the result encoded by the worker (not in ``succeeded``)."""
    durations: Durations | None = None
    """How long the chunk's attempts took, for a ``timed`` chunk; None otherwise."""
    records: list[logging.LogRecord] = field(default_factory=list)
    """A Dask worker's or Ray actor's log records since its last answer (``worker.take_records``), for the run's log."""


class WorkerError(Exception):
    """A worker could not load, set up or finish the job, or could not read a chunk."""

    def __init__(self, what: str, info: ErrorInfo, pid: int) -> None:
        super().__init__(what, info, pid)
        self.what = what
        self.info = info
        self.pid = pid

    def __str__(self) -> str:
        detail = self.info.traceback or f"{self.info.error_type}: {self.info.message}"
        return f"{self.what} in worker process {self.pid}:\n{detail}"


class ChunkUnreadable(WorkerError):
    """A worker could not unpickle a chunk's items (an item's class rebuilds differently there): the items are
    at fault, not the run."""


class WorkerLost(Exception):
    """The worker process running a chunk died (killed, out of memory, crashed)."""

    def __init__(self, message: str, started: bool = True) -> None:
        super().__init__(message, started)
        self.message = message
        self.started = started
        """False for a chunk that was only queued on that worker: its items were never attempted."""

    def __str__(self) -> str:
        return self.message


FINISH_POLL_S = 0.5
"""How often a wait for the workers' ``finish()`` looks whether the run was cancelled meanwhile."""


def finish_results(
    waits: list[Callable[[float], tuple[int, ErrorInfo | None, list[logging.LogRecord]]]],
    cancelled: Callable[[], bool],
    where: str,
) -> WorkerError | None:
    """Wait (on a worker thread) for each worker's ``finish()``, as ``waits`` get it (each takes a timeout in
    seconds and raises ``TimeoutError`` past it): for as long as it takes, as on the async executor, unless the
    run is cancelled meanwhile (a stop that ran out of time). The first error: what ``finish()`` raised, or a
    worker that died before it returned, so a ``finish()`` that did not complete never passes for one that did."""
    errors: list[WorkerError] = []
    for wait in waits:
        while True:
            try:
                pid, info, records = wait(FINISH_POLL_S)
            except TimeoutError:
                if cancelled():
                    log.warning("finish() was left running %s: the run stopped at once.", where)
                    return errors[0] if errors else None
                continue
            except Exception as error:  # the worker left or died: finish() did not complete there
                info = ErrorInfo(qualified_name(type(error)), f"the worker went away before finish() returned: {error}", "")
                errors.append(WorkerError(f"finish() did not complete {where}", info, 0))
                break
            emit(records)
            if info is not None:
                errors.append(WorkerError("finish() raised", info, pid))
            break
    return errors[0] if errors else None


def emit(records: list[logging.LogRecord]) -> None:
    """Log a worker's records here, as if they had been logged in this process: the run's log file and console."""
    for record in records:
        logging.getLogger(record.name).handle(record)
