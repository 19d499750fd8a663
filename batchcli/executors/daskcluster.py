"""The Dask executor's backend: each chunk is one Dask task, on a cluster local or remote.

One task per item would cost about 2 ms of scheduling each, far more than a typical item; a
chunk of ~0.1 s of work makes that negligible. The run's ``WorkerSpec`` (with the project's
files, see ``bundle.py``) travels in a worker plugin (``ShipSpec``), which the scheduler also gives
to every worker that joins later, replacements of dead workers included; each task names the run,
and the worker builds the job on first use. Dask is an optional extra: this module is imported only
for ``executor=dask``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from concurrent.futures import CancelledError
from typing import Any, Callable

import dask
from distributed import Client, Future, LocalCluster, get_worker
from distributed.comm.addressing import parse_address, parse_host_port
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import KilledWorker

from batchcli.load.wiring import Job, Wiring
from batchcli.errors import ProjectError, UsageError
from batchcli.executors import worker
from batchcli.executors.bundle import bundle_project, discard
from batchcli.executors.messages import (
    CANCEL_GRACE_S,
    Chunk,
    ChunkResult,
    ErrorInfo,
    WorkerError,
    WorkerLost,
    WorkerSpec,
    finish_results,
)
from batchcli.executors.signals import shield_worker, spawning

log = logging.getLogger("batchcli")

CONNECT_TIMEOUT_S = 10.0
"""How long to try reaching a scheduler at ``dask_address``."""
WORKERS_TIMEOUT_S = 60.0
"""How long to wait for the first worker to join that scheduler."""
PLUGIN_TIMEOUT_S = 60.0
"""How long the workers may take to receive (or drop) the run's spec, project files included."""
SETUP_TIMEOUT_S = 300.0
"""How long the workers may take to load the project and run ``setup()`` before the run gives up."""
_SOCKET_SCHEMES = ("tcp", "tls", "ws", "wss")
"""Address schemes whose location is ``host:port``, so a plain connection tells whether anything listens."""
WORKERLESS_CHECK_S = 5.0
"""How often the driver looks whether the cluster still has a worker: without one, every chunk waits for one to join,
and the run stood still with no word in its log (the workers of a remote cluster killed, or a nanny that gave up)."""
SLOTS_REFRESH_S = 2.0
"""How often to re-read the cluster's size (it may grow or shrink during a run)."""


class IgnoreInterrupts(WorkerPlugin):
    """Makes the workers of batchcli's own local cluster ignore Ctrl-C and SIGTERM, as process workers do.

    They share the driver's process group, so a terminal's Ctrl-C or a supervisor's SIGTERM reaches
    them too; the driver decides what it means (pause, graceful stop) and its nannies stop the workers
    (a stop message, then SIGKILL). Runs on every worker start, restarts included; until then the
    signals stay blocked, as the nannies' threads were started inside ``spawning()``.
    """

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            shield_worker()


class ShipSpec(WorkerPlugin):
    """Carries a run's ``WorkerSpec`` to every worker of the cluster, and to every worker that joins later.

    Data scattered to the workers is lost with them, and a replacement worker would wait for it forever;
    the scheduler keeps a registered plugin and hands it to each new worker. Unregistering it at the
    end of the run (or the worker closing) removes what the run unpacked there.
    """

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec

    def teardown(self, worker: Any) -> None:
        if self.spec.bundle is not None:
            discard(self.spec.key)


def _drop_unfinished(client: Client, futures: list[Future]) -> None:
    """Cancel those of ``futures`` still running (``DaskBackend.cancel``); the cluster may be closing by now."""
    unfinished = [future for future in futures if not future.done()]
    if unfinished:
        try:
            client.cancel(unfinished)
        except Exception as error:  # a client closed meanwhile: its tasks went with it
            log.debug("Could not cancel the Dask chunks left: %s", error)


def check_address(address: str, timeout: float | None = None) -> None:
    """Raise ``UsageError`` unless ``address`` is a scheduler address something listens at (within ``timeout``,
    by default ``CONNECT_TIMEOUT_S``).

    Called before the run directory exists: a typo or a scheduler that is down is bad input, not a run.
    """
    try:
        scheme, location = parse_address(address.strip())
        host, port = parse_host_port(location) if scheme in _SOCKET_SCHEMES else (None, None)
    except ValueError as error:
        detail = str(error)
    else:
        if scheme not in (*_SOCKET_SCHEMES, "ucx"):
            detail = f"unknown scheme {scheme!r}, use tcp://, tls://, ws://, wss:// or ucx://"
        elif port is not None and not 0 < port < 65536:
            detail = f"port {port} is out of range"
        elif host == "":
            detail = "the host is missing"
        else:
            detail = ""
    if detail:
        raise UsageError(
            f"dask_address={address!r} is not a Dask scheduler address ({detail}). Give the address "
            "`dask scheduler` prints, like -p dask_address=tcp://HOST:8786, or leave dask_address out to start a "
            "local cluster."
        )
    if host is None or port is None:
        return  # ucx: the client's own connect timeout applies
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise UsageError(
            f"Cannot reach the Dask scheduler at dask_address={address!r} ({reason} at {host}:{port}; batchcli "
            f"waits at most {timeout:.0f}s). Start it with `dask scheduler` (and workers with `dask worker "
            "ADDRESS`), check the host, port and firewall, or leave dask_address out to start a local cluster."
        ) from None
    if scheme in ("tcp", "ws") and not _answers_as_dask(address, timeout):  # tls and wss need the client's keys
        raise UsageError(
            f"Something listens at dask_address={address!r}, but it does not answer as a Dask scheduler within "
            f"{timeout:.0f}s. Check the port: give the address `dask scheduler` prints (tcp://HOST:8786 by "
            "default), not its dashboard's, or leave dask_address out to start a local cluster."
        )


def _answers_as_dask(address: str, timeout: float) -> bool:
    """Whether ``address`` completes Dask's handshake in time (a Client would wait on anything else for ever)."""
    from distributed.comm import connect

    async def handshake() -> None:
        comm = await connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), timeout))
    except (OSError, TimeoutError):
        return False
    return True


class DaskBackend:
    """Chunks as tasks on the cluster at ``dask_address``, or on a local cluster of ``workers`` processes."""

    def __init__(self, job: Job, wiring: Wiring) -> None:
        config = job.config
        self._address = config.dask_address
        self._workers = config.workers or os.cpu_count() or 1
        self._spec = WorkerSpec.for_run(config, wiring, bundle_project(job.project))
        self._plugin = f"batchcli-run-{self._spec.key}"
        self._client: Client | None = None
        self._cluster: LocalCluster | None = None
        self._registered = False
        self._futures: set[Future] = set()
        self._slots = 1
        self._slots_read = 0.0
        self._cancelled = False
        self._limits = 0
        """The limits version to tell the workers (``_steer``)."""
        self._holds = 0
        """The count of holds (cool-downs, pauses) to tell the workers (``_steer``)."""
        self._cancel_word = False
        """True once the run cancelled its chunks: told to the workers with ``_limits``."""
        self._steer_lock = threading.Lock()
        self._telling = False
        """True while a thread tells the workers (``_tell``)."""
        self._watch_stop = threading.Event()
        """Ends ``_watch_workers``."""

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            # Dask's sync API blocks; keep it off the run's loop.
            await asyncio.to_thread(self._connect)
            await asyncio.to_thread(self._prepare)
        except BaseException:
            if self._client is not None:  # workers that did set up still finish
                await asyncio.to_thread(self._finish_workers, 10.0)
            await asyncio.to_thread(self._shutdown)
            raise
        threading.Thread(target=self._watch_workers, name="batchcli-dask-workers", daemon=True).start()

    def _watch_workers(self) -> None:
        """Say in the run's log when the cluster has no worker left, and when one joins again."""
        client, address = self._client, self._address or "the run's own cluster"
        assert client is not None  # start() connected
        empty = False
        while not self._watch_stop.wait(WORKERLESS_CHECK_S):
            try:
                count = len(client.scheduler_info()["workers"])
            except Exception:  # the scheduler is busy or gone: the chunks say so when they fail
                continue
            if not count and not empty:
                log.warning(
                    "The Dask cluster (%s) has no worker now: no item runs until one joins. Start workers with "
                    "`dask worker %s`, or stop the run (ctl stop, or Ctrl-C): it is resumable.", address, address,
                )  # fmt: skip
            elif count and empty:
                log.warning("A Dask worker joined again (%d now): the run goes on.", count)
            empty = not count

    def slots(self) -> int:
        return self._slots

    async def submit(self, chunk: Chunk) -> ChunkResult:
        assert self._client is not None
        future = self._client.submit(
            _run_chunk,
            self._plugin,
            chunk,
            key=f"batchcli-chunk-{self._spec.key}-{chunk.id}",
            pure=False,
        )
        self._futures.add(future)
        waiter: asyncio.Future[ChunkResult] = self._loop.create_future()
        future.add_done_callback(lambda done: self._on_done(done, waiter))  # on Dask's callback thread
        try:
            return await waiter
        finally:
            self._futures.discard(future)

    def queued(self, chunk: Chunk) -> bool:
        return False  # the cluster has every chunk at once: none is held back here

    def limits_changed(self, version: int) -> None:
        # A running task reads the word in its worker (worker.steer): items waiting for a start slot under the old
        # rate come back unstarted. It waited for the old slot, however long: 0.02/s held a chunk for minutes.
        self._steer(False, version)

    def hold(self, count: int) -> None:
        # As a cancel does, until the driver goes on: running tasks start none of their remaining items (worker.steer).
        with self._steer_lock:
            self._holds = count
        self._steer(False, self._limits)

    def abandon(self) -> None:
        """Nothing more than the exit does: the run's own local cluster goes with its process; a remote one stays."""

    def cancel(self) -> None:
        self._cancelled = True
        self._watch_stop.set()
        # Running tasks start none of their remaining items: they went on after the run had ended, and a resume
        # did them again.
        self._steer(True, self._limits)
        if self._client is not None and self._futures:
            # Told, a running task comes back at once with the items it finished. Cancelled at once, it was dropped
            # with them: a resume did them again. Dask cannot interrupt a task, so one that has not come back by
            # CANCEL_GRACE_S (an item in sync code) is dropped then, its items unprocessed.
            client, futures = self._client, list(self._futures)
            timer = threading.Timer(CANCEL_GRACE_S, _drop_unfinished, (client, futures))
            timer.daemon = True
            timer.start()

    def _steer(self, cancelled: bool, limits: int) -> None:
        """Tell every worker process of the cluster (``worker.steer``), from a thread: ``Client.run`` waits for them.
        One thread at a time, telling the latest word: adaptive limits change every half second while they grow."""
        with self._steer_lock:
            self._limits = limits
            self._cancel_word = self._cancel_word or cancelled
            if self._client is None or self._telling:
                return  # the thread telling now sends this word too
            self._telling = True
        threading.Thread(target=self._tell, name="batchcli-dask-steer", daemon=True).start()

    def _tell(self) -> None:
        told: tuple[bool, int, int] | None = None
        while True:
            with self._steer_lock:
                word = (self._cancel_word, self._limits, self._holds)
                client = self._client
                if word == told or client is None:
                    self._telling = False
                    return
            try:
                client.run(worker.steer, self._spec.key, *word)
            except Exception as error:  # a cluster going away: the chunks end as they would have without the word
                log.debug("Could not steer the Dask workers: %s", error)
            told = word

    async def close(self, timeout: float | None) -> WorkerError | None:
        self._watch_stop.set()
        try:
            return await asyncio.to_thread(self._finish_workers, timeout)
        finally:
            await asyncio.to_thread(self._shutdown)

    # On worker threads.

    def _connect(self) -> None:
        if self._address is None:
            # A lost worker should fail its chunk at once, so the driver counts one attempt per item.
            # spawning(): the cluster's threads, and so every worker process they start, block the
            # stop signals until IgnoreInterrupts takes over in the worker.
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}), spawning():
                self._cluster = LocalCluster(
                    n_workers=self._workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            self._client = Client(self._cluster, set_as_default=False)
            self._client.register_plugin(IgnoreInterrupts(), name="batchcli-ignore-interrupts")
        else:
            check_address(self._address)  # a scheduler that went away since the run checked it
            address = self._address
            try:
                # Bounded here too: a Client waits for ever on a server that accepts but never answers.
                self._client = _bounded(
                    lambda: Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False), 2 * CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError, ValueError) as error:
                raise ProjectError(
                    f"Cannot reach the Dask scheduler at dask_address={self._address!r} ({error}). Start one with "
                    "`dask scheduler`, or give its address: -p dask_address=tcp://HOST:8786."
                ) from None
            try:
                self._client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
            except TimeoutError:
                raise ProjectError(
                    f"No Dask worker joined the scheduler at {self._address!r} within {WORKERS_TIMEOUT_S:.0f}s. "
                    f"Start workers with `dask worker {self._address}` (batchcli must be installed where they run)."
                ) from None
        self._read_slots()

    def _prepare(self) -> None:
        """Ship the spec to every worker and set the job up in each, so setup errors end the run early."""
        client = self._client
        assert client is not None
        try:
            _bounded(lambda: client.register_plugin(ShipSpec(self._spec), name=self._plugin), PLUGIN_TIMEOUT_S)
        except TimeoutError:
            raise ProjectError(
                f"The Dask workers did not take the run's project files within {PLUGIN_TIMEOUT_S:.0f}s. Check that "
                "they are alive and reachable from the scheduler, or make the project smaller."
            ) from None
        except Exception as error:  # the plugin could not be read there: batchcli is missing, or too old
            raise ProjectError(
                f"The Dask workers cannot take batchcli's run ({type(error).__name__}: {error}). Install batchcli "
                "and the job's dependencies where the workers run, in the same versions as here."
            ) from None
        self._registered = True
        futures = [
            client.submit(
                _prepare,
                self._plugin,
                key=f"batchcli-prepare-{self._spec.key}-{n}",
                workers=[address],
                allow_other_workers=False,
                pure=False,
            )
            for n, address in enumerate(client.scheduler_info()["workers"])
        ]
        try:
            deadline = time.monotonic() + SETUP_TIMEOUT_S
            for future in futures:
                prepared = future.result(timeout=max(0.1, deadline - time.monotonic()))
                if isinstance(prepared, WorkerError):
                    raise prepared
        except KilledWorker as error:  # the worker process died in it: not a missing installation
            where = getattr(getattr(error, "last_worker", None), "address", "a Dask worker")
            raise ProjectError(
                f"The Dask worker at {where} died while it loaded the project or ran setup() (a crash in native code, "
                "os._exit, or running out of memory). Run the job with -p executor=process to see the exit code, and "
                "check the worker's log."
            ) from None
        except TimeoutError:
            client.cancel(futures)
            raise ProjectError(
                f"The Dask workers did not load the project and finish setup() within {SETUP_TIMEOUT_S:.0f}s. "
                "Check the workers' logs for a setup() that hangs, or a worker that left the cluster."
            ) from None
        except WorkerError:
            raise
        except Exception as error:  # the task itself could not run there: batchcli is missing, or too old
            raise ProjectError(
                f"The Dask workers cannot run batchcli's tasks ({type(error).__name__}: {error}). Install batchcli "
                "and the job's dependencies where the workers run, in the same versions as here."
            ) from None

    def _on_done(self, future: Future, waiter: asyncio.Future[ChunkResult]) -> None:
        outcome: Any
        try:
            outcome = future.result()
        except KilledWorker as error:
            where = getattr(getattr(error, "last_worker", None), "address", "unknown address")
            outcome = WorkerLost(f"The Dask worker at {where} died", started=not self._cancelled)
        except CancelledError:
            outcome = WorkerLost("the run was cancelled", started=False)
        except Exception as error:
            outcome = error
        if time.monotonic() - self._slots_read > SLOTS_REFRESH_S:
            self._read_slots()
        self._to_loop(_resolve, waiter, outcome)

    def _read_slots(self) -> None:
        assert self._client is not None
        try:
            workers = self._client.scheduler_info()["workers"].values()
        except Exception:  # keep the last known size
            return
        self._slots = max(1, sum(w.get("nthreads", 1) for w in workers))
        self._slots_read = time.monotonic()

    def _finish_workers(self, timeout: float | None) -> WorkerError | None:
        """Call ``finish()`` on every worker: for as long as it takes (``timeout`` None), else at most ``timeout``."""
        client = self._client
        if client is None:
            return None
        futures = [
            client.submit(
                _finish,
                self._spec.key,
                key=f"batchcli-finish-{self._spec.key}-{n}",
                workers=[address],
                allow_other_workers=False,
                pure=False,
            )
            for n, address in enumerate(client.scheduler_info()["workers"])
        ]
        deadline = None if timeout is None else time.monotonic() + timeout
        return finish_results(
            [future.result for future in futures],
            lambda: self._cancelled or (deadline is not None and time.monotonic() > deadline),
            "on a Dask worker",
        )

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._registered:
            # Dropping the plugin removes the unpacked project on every worker (ShipSpec.teardown).
            self._registered = False
            try:
                _bounded(lambda: client.unregister_worker_plugin(self._plugin), PLUGIN_TIMEOUT_S)
            except Exception as error:
                log.warning("Could not remove the run's files from the Dask workers: %r", error)
        if client is not None:
            client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the run is over
            pass


def _resolve(waiter: asyncio.Future[ChunkResult], outcome: Any) -> None:
    if waiter.done():
        return
    if isinstance(outcome, BaseException):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)


def _bounded(call: Callable[[], Any], timeout: float) -> Any:
    """``call()``, or ``TimeoutError`` after ``timeout`` seconds (the call is then left to end on its own).

    For Dask calls that wait on every worker and have no timeout of their own; the thread is a daemon
    so a call that never returns cannot keep the process alive.
    """
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:
            outcome.append((False, error))
        finally:
            done.set()

    threading.Thread(target=target, name="batchcli-dask-call", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"no answer within {timeout:.0f}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _spec(plugin: str) -> WorkerSpec:
    """The spec of the run whose plugin is ``plugin``, on the worker running this task."""
    found = get_worker().plugins.get(plugin)
    if not isinstance(found, ShipSpec):
        raise WorkerError(
            "This Dask worker does not have the run's spec",
            ErrorInfo("LookupError", f"no worker plugin {plugin!r}: the run has ended or was never registered", ""),
            os.getpid(),
        )
    return found.spec


def _prepare(plugin: str) -> int | WorkerError:
    """Build and set up the run's job in this worker process (a Dask task); returns the process id, or why it could
    not: a value, not raised, since Dask logs a raising task's "Compute Failed" with its own frames on the worker's
    stderr, above the user's traceback."""
    try:
        return worker.prepare(_spec(plugin))
    except WorkerError as error:
        return error


def _run_chunk(plugin: str, chunk: Chunk) -> ChunkResult:
    """Run one chunk of the run in this worker process (a Dask task)."""
    return worker.run_chunk(_spec(plugin), chunk)


def _finish(key: str) -> tuple[int, ErrorInfo | None, list[logging.LogRecord]]:
    """Finish the run's job in this worker process (a Dask task); with the log records held since its last chunk."""
    info = worker.finish_job(key)
    return os.getpid(), info, worker.take_records()
