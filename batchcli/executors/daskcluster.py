"""The Dask executor's backend: each chunk is one Dask task, on a cluster local or remote.

One task per item would cost about 2 ms of scheduling each, far more than a typical item; a
chunk of ~0.1 s of work makes that negligible. The run's ``WorkerSpec`` (with the project's
files, see ``bundle.py``) is scattered to every worker once; each task names it, and the worker
builds the job on first use. Dask is an optional extra: this module is imported only for
``executor=dask``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from concurrent.futures import CancelledError
from typing import Any, Callable

import dask
from distributed import Client, Future, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import KilledWorker

from batchcli.load.wiring import Job, Wiring
from batchcli.errors import ProjectError
from batchcli.executors import worker
from batchcli.executors.bundle import bundle_project
from batchcli.executors.messages import (
    Chunk,
    ChunkResult,
    ErrorInfo,
    WorkerError,
    WorkerLost,
    WorkerSpec,
)
from batchcli.executors.signals import shield_worker, spawning

CONNECT_TIMEOUT_S = 10.0
"""How long to try reaching a scheduler at ``dask_address``."""
WORKERS_TIMEOUT_S = 60.0
"""How long to wait for the first worker to join that scheduler."""
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


class DaskBackend:
    """Chunks as tasks on the cluster at ``dask_address``, or on a local cluster of ``workers`` processes."""

    def __init__(self, job: Job, wiring: Wiring) -> None:
        config = job.config
        self._address = config.dask_address
        self._workers = config.workers or os.cpu_count() or 1
        self._spec = WorkerSpec(
            key=uuid.uuid4().hex,
            wiring=wiring,
            output_dir=str(config.output_dir),
            run_dir=str(config.run_dir),
            started_at=config.started_at,
            bundle=bundle_project(wiring.target),
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        self._client: Client | None = None
        self._cluster: LocalCluster | None = None
        self._futures: set[Future] = set()
        self._slots = 1
        self._slots_read = 0.0
        self._cancelled = False

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

    def slots(self) -> int:
        return self._slots

    async def submit(self, chunk: Chunk) -> ChunkResult:
        assert self._client is not None
        future = self._client.submit(
            worker.run_chunk,
            self._spec_future,
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

    def cancel(self) -> None:
        self._cancelled = True
        if self._client is not None and self._futures:
            # Dask cannot interrupt a running task: its results are dropped, its items stay unprocessed.
            self._client.cancel(list(self._futures))

    async def close(self, timeout: float) -> WorkerError | None:
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
            try:
                self._client = Client(self._address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
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
        self._spec_future = client.scatter(self._spec, broadcast=True, hash=False)
        futures = [
            client.submit(
                worker.prepare,
                self._spec_future,
                key=f"batchcli-prepare-{self._spec.key}-{n}",
                workers=[address],
                allow_other_workers=False,
                pure=False,
            )
            for n, address in enumerate(client.scheduler_info()["workers"])
        ]
        try:
            client.gather(futures)
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

    def _finish_workers(self, timeout: float) -> WorkerError | None:
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
        deadline = time.monotonic() + timeout
        errors = []
        for future in futures:
            try:
                pid, info = future.result(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as error:  # a worker that left or hangs: nothing more to finish there
                logging.getLogger("batchcli").warning("finish() did not complete on a Dask worker: %r", error)
                continue
            if info is not None:
                errors.append(WorkerError("finish() raised", info, pid))
        return errors[0] if errors else None

    def _shutdown(self) -> None:
        if self._client is not None:
            self._client.close()
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


def _finish(key: str) -> tuple[int, ErrorInfo | None]:
    """Finish the run's job in this worker process (a Dask task)."""
    return os.getpid(), worker.finish_job(key)
