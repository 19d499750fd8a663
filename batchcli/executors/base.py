"""The shared executor interface, and the one place that picks an executor from the configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Protocol

if TYPE_CHECKING:
    from batchcli.executors.calls import Unfinished
    from batchcli.executors.limiter import Limits
    from batchcli.load.configuration import Configuration
    from batchcli.load.wiring import Job, Wiring
    from batchcli.outcome import Tally

Items = Iterator[tuple[int, Any]] | AsyncIterator[tuple[int, Any]]
"""What an executor runs: ``(ordinal, item)`` pairs from the source, sync or async."""


class Executor(Protocol):
    """Runs a job's items and reports every outcome to the run's ``Tally``, and owns its whole lifecycle.

    The driver calls ``start()`` once (``setup()`` wherever items will run), then ``run()``, then
    ``finish()`` once (``finish()`` wherever ``setup()`` ran or was tried), whatever happened in
    between. Every strategy keeps the same semantics: ``succeeded`` and ``done`` for each success, one
    ``tally.fail(Failure(...))`` per final failure, ``retrying`` and ``in_flight`` kept current, the
    one ``RetryScheduler`` (retries.py) deciding retries and backoff, one ``Limiter`` (limiter.py) for
    concurrency and starts per second. Control methods are called on the run's loop
    thread.
    """

    @property
    def fatal(self) -> BaseException | None:
        """An error that ended the run early (the source raised), or None."""

    async def start(self) -> None:
        """Set the job up where its items will run; raises when that fails anywhere.

        Returns early, having started nothing, when ``cancel()`` abandoned it (a hanging async ``setup()``).
        """

    async def finish(self) -> None:
        """Call ``finish()`` wherever ``setup()`` ran and release the workers; raises the first error."""

    @property
    def limits(self) -> Limits:
        """The concurrency and rate limit in force now: the configuration's, until changed by the methods below."""

    async def run(self, items: Items) -> None:
        """Process every item; return when all are settled, or after a stop."""

    def stop(self) -> None:
        """Start nothing new; in-flight items finish; items waiting to retry stay unprocessed."""

    def cancel(self) -> None:
        """Stop at once: in-flight items stay unprocessed. During ``start()``, abandon it where that is safe."""

    def nudge(self) -> None:
        """Let the run's loop have a turn soon even if items never await; any thread may call it."""

    def abandon(self) -> None:
        """The run leaves without ``finish()`` (a stop timed out while hooks hung), from the main thread: end what
        runs outside this process, which nothing would end after the run's hard exit."""

    def pause(self) -> None:
        """Start nothing new until ``resume``; in-flight items finish."""

    def resume(self) -> None:
        """Undo ``pause``."""

    def set_concurrency(self, concurrency: int) -> None:
        """Change how many items may be in flight from now on."""

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the most items started per second (None for no limit)."""

    def hold_concurrency(self, concurrency: int | None) -> None:
        """The circuit breaker's cap on the concurrency, below the user's ceiling; None lifts it."""

    @property
    def effective_concurrency(self) -> int:
        """The concurrency but for the circuit breaker's cap (``hold_concurrency``)."""

    def items_in_flight(self) -> dict[int, Any]:
        """Ordinal -> item of every item being processed now (the pause shell's ``in_flight``)."""

    async def process_one(self, item: Any, unfinished: Unfinished | None = None) -> Any:
        """``process`` on one item outside the run, where the set-up Services are (the pause shell's and ``ctl``'s
        retries); returns what it returned, raises what it raised. Nothing is counted.

        A cancel ends an async call, and drops one that no thread or worker has started. One that runs there
        cannot be stopped: ``unfinished`` (when given) then gets the future of its outcome, so that a retry a
        Ctrl-C gave up is still settled when its call ends (it succeeded there, and stayed failed)."""


def check_executor(config: Configuration) -> None:
    """Raise a ``UsageError`` for executor settings that cannot work, before the run directory is made.

    Today that is a ``dask_address`` or ``ray_address`` that is malformed or where nothing listens: found out early, it
    is bad input (exit 2) rather than a failed run.
    """
    if config.executor == "ray" and config.ray_address is not None:
        _check_ray_address(config.ray_address)
    if config.executor != "dask" or config.dask_address is None:
        return
    try:
        from batchcli.executors.daskcluster import check_address
    except ImportError as error:
        from batchcli.load.configuration import DASK_MISSING
        from batchcli.errors import UsageError

        raise UsageError(f"{DASK_MISSING} ({error})") from None
    check_address(config.dask_address)


def _check_ray_address(address: str) -> None:
    try:
        from batchcli.executors.raycluster import check_address
    except ImportError as error:
        from batchcli.load.configuration import RAY_MISSING
        from batchcli.errors import UsageError

        raise UsageError(f"{RAY_MISSING} ({error})") from None
    check_address(address)


def make_executor(job: Job, wiring: Wiring, tally: Tally, items: int | None = None) -> Executor:
    """The executor ``config.executor`` names, not started yet: the one place that picks one. ``items`` is how many
    items the run takes, when the Source says (``__len__``): ``process`` starts no more workers than that.

    ``async`` runs the driver's own Service, set up on the run's loop; ``process``, ``dask`` and ``ray`` start
    worker processes that each rebuild the job from ``wiring`` and set up their own Service, so the
    driver's Service is then never set up: it does no work.
    """
    config = job.config
    if config.executor == "async":
        from batchcli.executors.inprocess import InProcessExecutor

        return InProcessExecutor(job, tally)
    from batchcli.executors.chunked import ChunkedExecutor

    if config.executor == "process":
        from batchcli.executors.processpool import ProcessBackend

        backend: Any = ProcessBackend(job, wiring, items)
    elif config.executor == "ray":
        try:
            from batchcli.executors.raycluster import RayBackend
        except ImportError as error:
            from batchcli.load.configuration import RAY_MISSING
            from batchcli.errors import UsageError

            raise UsageError(f"{RAY_MISSING} ({error})") from None

        backend = RayBackend(job, wiring)
    else:
        try:
            from batchcli.executors.daskcluster import DaskBackend
        except ImportError as error:
            from batchcli.load.configuration import DASK_MISSING
            from batchcli.errors import UsageError

            raise UsageError(f"{DASK_MISSING} ({error})") from None

        backend = DaskBackend(job, wiring)
    return ChunkedExecutor(backend, config, tally)
