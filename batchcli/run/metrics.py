"""``metrics_port``: Prometheus metrics of the live run at ``/metrics``, read from its counts when scraped.

prometheus_client (``pip install 'batchcli[metrics]'``) is imported only when the port is set. The
port is bound before the run directory is made, so a busy one is bad input and no item runs. A scrape
reads the ``Tally`` the display reads. The attempt-duration histogram is the one per-item cost, and only
of a run that serves metrics: ``watch`` gives the tally a ``Durations`` before the executor is built,
and only then does the executor time its attempts (``batchcli/durations.py``).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import TYPE_CHECKING, Any, Iterator

from batchcli.errors import UsageError
from batchcli.durations import BOUNDS, OUTCOMES, Durations

if TYPE_CHECKING:
    from batchcli.run.driver import Run

METRICS_MISSING = (
    "metrics_port={port} needs prometheus_client, which is not installed. Install it with: "
    "pip install 'batchcli[metrics]' (or leave metrics_port unset)."
)


class Metrics:
    """The ``/metrics`` endpoint of one run; ``watch(run)`` points it at the run once it exists."""

    def __init__(self, server: Any, thread: Any, job: str) -> None:
        self._server = server
        self._thread = thread
        self.job = job
        self.run: Run | None = None
        self._rate_samples: list[tuple[float, int]] = []

    def watch(self, run: Run) -> None:
        """Serve the metrics of ``run``, and have its attempts timed (before its executor is built)."""
        run.tally.durations = Durations()
        self.run = run

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def collect(self) -> Iterator[Any]:
        """The metric families, read from the run now (called by prometheus_client on each scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

        run = self.run
        if run is None:
            return
        # Not "job": Prometheus sets that label on every target itself, and renames a scraped one to exported_job.
        labels = {"batchcli_job": self.job, "run_id": run.run_dir.name}
        names = list(labels)
        values = list(labels.values())
        tally = run.tally
        yield InfoMetricFamily("batchcli_run", "The run: its job and run id (the run directory's name).", value=labels)

        def counter(name: str, doc: str, value: float) -> Any:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def gauge(name: str, doc: str, value: float | None) -> Any:
            family = GaugeMetricFamily(name, doc, labels=names)
            if value is not None:
                family.add_metric(values, value)
            return family

        yield counter("batchcli_items_succeeded", "Items that succeeded in this session.", tally.succeeded)
        # A counter never goes down: a failure taken back later (a retry from the shell or ctl that succeeded, the
        # circuit breaker releasing it) stays counted here, and is counted again in the next one.
        yield counter(
            "batchcli_items_failed", "Final failures in this session, those taken back later included.",
            tally.failed + tally.failures_taken_back,
        )  # fmt: skip
        yield counter(
            "batchcli_items_failures_taken_back",
            "Final failures taken back: retried successfully from the pause shell or ctl, or released by the circuit breaker.",
            tally.failures_taken_back,
        )  # fmt: skip
        yield counter("batchcli_items_retried", "Retries scheduled (failed attempts that were not final).", tally.retried)
        yield counter("batchcli_items_throttled", "Attempts the API throttled (429/503, Throttled).", tally.throttles)
        yield gauge(
            "batchcli_items_in_flight", "Items being processed now (with process, dask or ray: in a worker's chunk).",
            tally.in_flight,
        )  # fmt: skip
        yield gauge("batchcli_items_retrying", "Items waiting out a backoff delay.", tally.retrying)
        yield gauge("batchcli_items_total", "Items in the source, once known.", tally.total)
        yield gauge(
            "batchcli_items_settled_earlier", "Items earlier sessions of this run settled (before a resume).",
            tally.earlier_succeeded + tally.earlier_failed,
        )  # fmt: skip
        yield gauge("batchcli_items_per_second", "Items settled per second over the last scrapes (10 s at most).", self._rate())
        limits, ceiling = tally.limits, tally.ceiling
        executor = run.executor
        if limits is None and executor is not None:
            limits = ceiling = (executor.limits.concurrency, executor.limits.rate_limit)
        config = run.job.config
        yield gauge(
            "batchcli_concurrency_effective",
            "Items allowed in flight now (below the configured value while throttles cut it).",
            config.concurrency if limits is None else limits[0],
        )
        yield gauge(
            "batchcli_concurrency_configured",
            "Items allowed in flight as configured (or as changed by the pause shell or ctl).",
            config.concurrency if ceiling is None else ceiling[0],
        )
        yield gauge("batchcli_paused", "1 while the run is paused.", int(run.paused.is_set()))
        if tally.durations is not None:
            yield _histogram(HistogramMetricFamily, tally.durations, names, values)

    def _rate(self) -> float:
        now = time.monotonic()
        assert self.run is not None
        settled = self.run.tally.settled
        samples = self._rate_samples
        samples.append((now, settled))
        while len(samples) > 2 and now - samples[0][0] > 10.0:
            samples.pop(0)
        first_t, first_n = samples[0]
        if now - first_t < 1e-3:
            elapsed = self.run.tally.elapsed()
            return settled / elapsed if elapsed > 0 else 0.0
        return (settled - first_n) / (now - first_t)

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()


def _histogram(family_class: Any, durations: Durations, names: list[str], values: list[str]) -> Any:
    """``batchcli_attempt_duration_seconds``, one series per outcome, read from the counts now."""
    family = family_class(
        "batchcli_attempt_duration_seconds",
        "How long each attempt at an item took (process() returned or raised), by outcome.",
        labels=[*names, "outcome"],
    )
    for outcome, name in enumerate(OUTCOMES):
        counts = list(durations.counts[outcome])  # one copy: the loop may count on while this reads
        total, buckets = 0, []
        for bound, count in zip([*map(str, BOUNDS), "+Inf"], counts):
            total += count
            buckets.append((bound, total))
        family.add_metric([*values, name], buckets, durations.sums[outcome])
    return family


def open_metrics(config: Any, job: str) -> Metrics | None:
    """Bind the metrics port of ``config`` (None when unset); a UsageError when it cannot be served."""
    port = getattr(config, "metrics_port", None)
    if not port:
        return None
    host = getattr(config, "metrics_host", "127.0.0.1")
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise UsageError(METRICS_MISSING.format(port=port)) from None
    registry = CollectorRegistry(auto_describe=False)  # this run's alone: no global state
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except UnicodeError:  # the resolver's idna codec refuses a name with an empty or over-long label
        raise UsageError(_not_an_address(host, "not a valid host name: a label is empty or over 63 characters")) from None
    except OSError as error:
        reason = error.strerror or str(error)
        if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:  # the host: not another port
            raise UsageError(_not_an_address(host, reason)) from None
        raise UsageError(
            f"metrics_port={port} cannot be served on {host} ({reason}): another program (or run) "
            f"uses it. Give another port, e.g. -p metrics_port={port + 1 if port < 65535 else port - 1}, or leave metrics_port unset."
        ) from None
    metrics = Metrics(server, thread, job)
    registry.register(metrics)  # type: ignore[arg-type]
    return metrics


def _not_an_address(host: str, reason: str) -> str:
    return (
        f"metrics_host={host!r} is not an address of this machine ({reason}). Give one of its addresses, "
        "e.g. -p metrics_host=127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
    )
