"""``Configuration``: the dataclass every job's settings derive from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from batchcli.load.secret import Secret

EXECUTORS = ("async", "process", "dask", "ray")

RUNTIME_FIELDS = ("output_dir", "run_dir", "started_at")

MAX_CONCURRENCY = 10_000
"""The most items in flight at once, configured or set live (``ctl set``, the pause shell): one rule everywhere,
so a run's own setting can always be set again."""
MIN_RATE_LIMIT = 1 / 86_400
"""The lowest ``rate_limit``, configured or set live: one item a day. A tinier positive rate (``1e-300``) was taken,
and a worker then slept for ever for its start slot, which a later rate never reached on Dask or Ray."""

MAX_SHARDS = 1_000
"""The most shards a group may have, for ``--shard I/N`` and ``shards``: ``runs`` and ``show`` list every one (a typo
such as 0/3000000 made them run for minutes and die out of memory), and more processes than this are no longer one
machine's or one cluster's job."""

MAX_WORKERS = 256
"""The most ``workers``: each is a Python process of its own that loads the job and runs ``setup()`` (tens of MB, and
a second or more of CPU to start). ``workers=10000`` spent minutes starting processes, past a stop's timeout, until the
machine ran out of them; more items at once come from ``concurrency``, which each worker shares among its items."""

BREAKER_WINDOW_MAX = 1_000_000
"""The longest circuit-breaker window: it keeps the outcomes of up to twice that many settled items in memory."""
BREAKER_WAIT_MAX_S = 31_536_000
"""The longest breaker cool-down or wait, and the longest throttle wait: a year. ``1e300`` passed, and the display
counted its probe down in 300 digits; ``ctl resume`` overflowed the date a throttle of ``1e12`` seconds ends at."""


_WHOLE_FIELDS = {"concurrency": False, "max_retries": False, "workers": True, "shards": True, "chunk_size": True}
"""The built-in fields that hold a whole number, and whether they may be None (``breaker_window`` and
``metrics_port`` have checks of their own)."""
_NUMBER_FIELDS = {
    "backoff_s": False, "backoff_max_s": False, "item_timeout_s": True, "rate_limit": True, "stop_timeout_s": False,
    "write_retry_s": False, "breaker_failure_rate": False, "breaker_cooldown_s": False, "breaker_max_wait_s": False,
    "throttle_max_wait_s": False,
}  # fmt: skip
"""The built-in fields that hold a number (an int will do), and whether they may be None."""


@dataclass(kw_only=True)
class Configuration:
    """Settings of a job, one subclass per environment (``config/config_dev.py`` ...).

    Every field can be overridden for one run with ``-p field=value``. The runtime fields
    ``output_dir``, ``run_dir`` and ``started_at`` are set by batchcli and read-only.
    """

    concurrency: int = 10
    """Items in flight at once (async services) or worker threads (sync services)."""
    max_retries: int = 3
    """Retries after the first attempt for an exception in ``exceptions_to_retry_for``."""
    backoff_s: float = 1.0
    """Delay before the first retry; later delays grow exponentially, with jitter."""
    backoff_max_s: float = 60.0
    """Longest delay between two attempts."""
    item_timeout_s: float | None = None
    """Cancel an attempt that runs longer than this (a retryable ``TimeoutError``); None for no limit."""
    rate_limit: float | None = None
    """Most items started per second; None for no limit."""
    stop_timeout_s: float = 30.0
    """On a stop, how long in-flight items may take to finish before they are cancelled."""
    write_retry_s: float = 5.0
    """When the run directory cannot be written (a full disk), how long the run stays paused, retrying
    every flush, before it stops resumably: long enough for a log rotation or a cleanup to free space,
    short enough that a stuck run says so. Raise it when an operator needs time to free space."""
    executor: Literal["async", "process", "dask", "ray"] = "async"
    """Where items run: ``async`` on this process's event loop (I/O-bound work), ``process`` in a pool
    of worker processes on this machine (CPU-bound work), ``dask`` on a Dask cluster (``pip install
    'batchcli[dask]'``), ``ray`` in Ray actors (``pip install 'batchcli[ray]'``). With ``process``,
    ``dask`` and ``ray``, ``concurrency`` is the total in flight across workers: each worker process
    runs its chunk with its share of ``concurrency`` at once (3 on 2 workers: 2 and 1)."""
    workers: int | None = None
    """Worker processes for ``process``, for the local Dask cluster started when ``dask_address`` is
    none, and Ray actors for ``ray``; none means one per CPU core (of the Ray cluster, for ``ray``).
    At most 256. Ignored with ``dask_address`` (the cluster has its own)."""
    dask_address: str | None = None
    """The scheduler of a running Dask cluster, ``tcp://host:8786``; none starts a local cluster of
    ``workers`` processes for the run and shuts it down at the end."""
    ray_address: str | None = None
    """The Ray cluster to run on (``executor=ray``): ``host:6379`` as ``ray start --head`` prints it, or
    ``auto``; none starts a local Ray for the run and shuts it down at the end."""
    chunk_size: int | None = None
    """Items sent to a worker at once (``process``, ``dask``, ``ray``); none sizes chunks automatically to
    about 0.1 s of work each, from the observed time per item."""
    # The circuit breaker (docs/runs.md, "When the API is down").
    breaker_window: int = 100
    """The circuit breaker watches the last this many settled items; 0 turns it off."""
    breaker_failure_rate: float = 0.5
    """The breaker opens when at least this share of ``breaker_window`` items failed finally (0 < rate <= 1)."""
    breaker_cooldown_s: float = 30.0
    """Without a terminal, how long the open breaker waits before letting one item through; doubles after
    each failed probe, up to 10 minutes."""
    breaker_max_wait_s: float = 3600.0
    """How long the breaker may stay open before the run stops (resumable, exit 130)."""
    # Throttling (HTTP 429/503, ``batchcli.Throttled``): see docs/runs.md, "When the API says slow down".
    adaptive: bool = True
    """On a throttle, cut the effective concurrency and start at a rate learnt from the API (never
    above ``rate_limit``), then grow them back toward the configured values as items succeed; false
    keeps the limits fixed (Retry-After is honoured either way)."""
    throttle_max_wait_s: float = 900.0
    """Longest cool-down a throttle may ask for (a longer ``Retry-After`` is clamped to this)."""
    shards: int | None = None
    """Split the source into this many shards, one run each, and process the one ``JOB_COMPLETION_INDEX``
    names (a Kubernetes Indexed Job sets it); as ``exec --shard auto/N``. None processes the whole source."""
    # Running unattended (docs/unattended.md).
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port at ``/metrics`` while the run goes (``pip install
    'batchcli[metrics]'``); none or 0 serves none."""
    metrics_host: str = "127.0.0.1"
    """The address the metrics are served on: this machine only unless you change it."""
    notify_url: Secret | None = None
    """POST a JSON summary here when the run finishes, stops, crashes or trips its circuit breaker
    (a secret: webhook URLs hold tokens)."""

    def __post_init__(self) -> None:
        Configuration.check(self)

    def check(self) -> None:
        """Refuse a built-in field's bad value (``ValueError`` naming it). ``__post_init__`` calls it, and so does
        ``build_job`` once more: a subclass with a ``__post_init__`` of its own that does not call ``super()``'s
        would otherwise skip every check, and run with ``max_retries=-5``."""
        self._check_types()
        self._check_breaker()
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(
                f"concurrency must be 1 to {MAX_CONCURRENCY:,} items in flight at once, got {self.concurrency!r}: "
                "e.g. concurrency=50."
            )
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries!r}.")
        # `not x > 0` rather than `x <= 0`: NaN compares false both ways, and must be refused too.
        if self.rate_limit is not None and not MIN_RATE_LIMIT <= self.rate_limit < math.inf:
            raise ValueError(
                f"rate_limit must be positive or none, got {self.rate_limit!r}: items per second, e.g. 50, "
                f"or none for no limit (the lowest is {MIN_RATE_LIMIT:.6g}, one item a day)."
            )
        if self.item_timeout_s is not None and not 0 < self.item_timeout_s < math.inf:
            raise ValueError(
                f"item_timeout_s must be positive or none, got {self.item_timeout_s!r}: seconds, e.g. 30, "
                "or none for no limit."
            )
        for name in ("backoff_s", "backoff_max_s", "stop_timeout_s", "write_retry_s"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more, got {value!r}: e.g. {name}=1.5.")
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s!r}) must be at least backoff_s ({self.backoff_s!r}): it caps "
                "the delay between attempts. Raise backoff_max_s or lower backoff_s."
            )
        if not 0 < self.throttle_max_wait_s <= BREAKER_WAIT_MAX_S:  # 1e12 overflowed the date ctl says it ends at
            raise ValueError(
                f"throttle_max_wait_s must be a positive number of seconds, at most {BREAKER_WAIT_MAX_S:,} (a year), "
                f"got {self.throttle_max_wait_s!r}: the longest cool-down a Retry-After may impose, e.g. "
                "throttle_max_wait_s=900 (15 minutes)."
            )
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"adaptive must be true or false, got {self.adaptive!r}.")
        self._check_unattended()
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}, got {self.executor!r}.")
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(
                f"workers must be from 1 to {MAX_WORKERS}, or none (one per CPU core), got {self.workers!r}: each "
                "worker is a process of its own that loads the job, so more take minutes to start and the machine's "
                "memory. For more items at once, raise concurrency instead: each worker shares it among its items."
            )
        if self.shards is not None and not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(
                f"shards must be from 1 to {MAX_SHARDS:,}, or none (the whole source in one run), got {self.shards!r}."
            )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 or none (automatic), got {self.chunk_size!r}.")
        if self.executor == "dask" and not dask_installed():
            raise ValueError(DASK_MISSING)
        if self.dask_address is not None and not self.dask_address.strip():
            raise ValueError("dask_address must be a scheduler address like 'tcp://host:8786', or none, got ''.")
        if self.executor == "ray" and not ray_installed():
            raise ValueError(RAY_MISSING)
        if self.ray_address is not None and not self.ray_address.strip():
            raise ValueError("ray_address must be a Ray address like '127.0.0.1:6379' or 'auto', or none, got ''.")

    def _check_types(self) -> None:
        """A value of the wrong type (a subclass's default ``concurrency: int = "ten"``): named, not a TypeError."""
        for name, optional in _WHOLE_FIELDS.items():
            value = getattr(self, name)
            if (value is None and optional) or (isinstance(value, int) and not isinstance(value, bool)):
                continue
            raise ValueError(_wrong_type(name, value, f"a whole number{' or none' if optional else ''}", "N"))
        for name, optional in _NUMBER_FIELDS.items():
            value = getattr(self, name)
            if (value is None and optional) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                continue
            raise ValueError(_wrong_type(name, value, f"a number{' or none' if optional else ''}", "N"))
        for name in ("dask_address", "ray_address", "metrics_host"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(_wrong_type(name, value, "text" + ("" if name == "metrics_host" else " or none"), "..."))

    def _check_breaker(self) -> None:
        if isinstance(self.breaker_window, bool) or not isinstance(self.breaker_window, int) or self.breaker_window < 0:
            raise ValueError(
                f"breaker_window must be a whole number of items, 0 or more, got {self.breaker_window!r}: e.g. "
                "breaker_window=100 (the circuit breaker watches the last 100 settled items), or 0 to turn it off."
            )
        if self.breaker_window > BREAKER_WINDOW_MAX:  # it sizes deques: past 2**62 that raised, after the run dir was made
            raise ValueError(
                f"breaker_window must be at most {BREAKER_WINDOW_MAX:,} items, got {self.breaker_window!r}: e.g. "
                "breaker_window=100, or 0 to turn the circuit breaker off."
            )
        if not 0 < self.breaker_failure_rate <= 1:
            raise ValueError(
                f"breaker_failure_rate must be a share above 0 and at most 1, got {self.breaker_failure_rate!r}: "
                "e.g. breaker_failure_rate=0.5 opens the circuit breaker when half the last breaker_window items "
                "failed."
            )
        for name in ("breaker_cooldown_s", "breaker_max_wait_s"):
            value = getattr(self, name)
            if not 0 < value <= BREAKER_WAIT_MAX_S:
                raise ValueError(
                    f"{name} must be a positive number of seconds, at most {BREAKER_WAIT_MAX_S:,} (a year), got "
                    f"{value!r}: e.g. {name}=30 (set breaker_window=0 to turn the circuit breaker off)."
                )
        if self.breaker_window and self.breaker_cooldown_s > self.breaker_max_wait_s:
            raise ValueError(
                f"breaker_cooldown_s ({self.breaker_cooldown_s:g}) is longer than breaker_max_wait_s "
                f"({self.breaker_max_wait_s:g}): the run would stop before the breaker's first probe. Shorten the "
                "cool-down or lengthen the wait, e.g. breaker_cooldown_s=30 breaker_max_wait_s=3600."
            )

    def _check_unattended(self) -> None:
        port = self.metrics_port
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
            raise ValueError(f"metrics_port must be a port number (1 to 65535), 0 or none, got {port!r}: e.g. metrics_port=9464.")
        if not str(self.metrics_host).strip():
            raise ValueError("metrics_host must be an address to serve metrics on, e.g. 127.0.0.1, got ''.")
        url = self.notify_url
        if url is not None:
            shown = repr(url) if isinstance(url, Secret) else repr(str(url))
            fault = url_fault(str(url))
            if fault:
                raise ValueError(f"notify_url must be an http:// or https:// URL ({fault}), got {shown}: e.g. "
                                 "notify_url=https://hooks.example.com/batch.")  # fmt: skip

    @property
    def output_dir(self) -> Path:
        """The directory that holds every run's directory (``-d``)."""
        return self._runtime("output_dir")  # type: ignore[no-any-return]

    @property
    def run_dir(self) -> Path:
        """This run's directory: logs, ``failed.jsonl``, ``summary.json``, the journal."""
        return self._runtime("run_dir")  # type: ignore[no-any-return]

    @property
    def started_at(self) -> datetime:
        """When this run started (local time, timezone-aware)."""
        return self._runtime("started_at")  # type: ignore[no-any-return]

    def _runtime(self, name: str) -> Any:
        try:
            return self.__dict__[f"_batchcli_{name}"]
        except KeyError:
            raise RuntimeFieldUnset(
                f"{name} is set by batchcli when the run starts, after the job's classes are built: read "
                f"config.{name} in setup() or process(), not in a constructor."
            ) from None


class RuntimeFieldUnset(AttributeError):
    """``config.run_dir``, ``output_dir`` or ``started_at`` read before the run set them (a constructor, a dry run)."""


DASK_MISSING = (
    "executor='dask' needs Dask, which is not installed. Install it with: pip install 'batchcli[dask]' "
    "(or use executor='process' on this machine)."
)


def dask_installed() -> bool:
    """Whether Dask's distributed scheduler can be imported (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):
        return False


RAY_MISSING = (
    "executor='ray' needs Ray, which is not installed. Install it with: pip install 'batchcli[ray]' "
    "(or use executor='process' on this machine)."
)


def ray_installed() -> bool:
    """Whether Ray can be imported (checked without importing it: Ray takes most of a second)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def _wrong_type(name: str, value: object, wanted: str, example: str) -> str:
    return (
        f"{name} must be {wanted}, got {value!r} ({_a(type(value).__name__)}). Give it one in the configuration "
        f"class (a default of the wrong type, or a value its code set), or with -p {name}={example}."
    )


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def bind_runtime(config: Configuration, *, output_dir: Path, run_dir: Path, started_at: datetime) -> None:
    """Set the read-only runtime fields of a configuration."""
    config.__dict__.update(
        _batchcli_output_dir=output_dir, _batchcli_run_dir=run_dir, _batchcli_started_at=started_at
    )


def url_fault(url: str) -> str:
    """What makes ``url`` unusable as a webhook (said without the URL, which may hold a token); '' when nothing.

    The standard library's HTTP client refuses these only when it sends, at the end of a night's run."""
    if not url.lower().startswith(("http://", "https://")):  # a scheme is case-insensitive (RFC 3986): HTTP:// too
        return "it starts with neither"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "it holds a space or a control character: percent-encode it, e.g. %20"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port that is not a number from 0 to 65535)
    except ValueError as error:
        return f"it does not parse: {error}"
    if not parts.hostname:
        return "it names no host"
    if parts.port == 0:  # a port to listen on, never one to send to
        return "its port is 0, where nothing can listen: give the endpoint's port"
    return ""
