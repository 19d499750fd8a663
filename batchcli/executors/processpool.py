"""The process executor's backend: worker processes on this machine, for CPU-bound Services.

Each worker is a spawned process with a pipe each way. The driver knows which chunks it sent to
which worker (at most ``CHUNKS_PER_SLOT``, run in order), so when a worker dies exactly one chunk
was running: its items count one attempt, the chunk queued behind it counts none, and a fresh
worker takes the dead one's place. ``concurrent.futures.ProcessPoolExecutor`` cannot tell which
task a dead process held, and breaks the whole pool when one dies.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Callable, NoReturn

from batchcli.load.wiring import Job, Wiring
from batchcli.load.secret import mask_secrets
from batchcli.executors.chunked import CHUNKS_PER_SLOT
from batchcli.executors.messages import (
    Chunk,
    ChunkResult,
    ErrorInfo,
    WorkerError,
    WorkerLost,
    WorkerSpec,
)
from batchcli.executors.signals import shield_worker, spawning
from batchcli.executors.worker import PlainRecords, WorkerJob

log = logging.getLogger("batchcli")

STUCK_GRACE_S = 2.0
"""Slack over what ``item_timeout_s`` allows a chunk before its worker counts as stuck (killed and replaced)."""
WATCH_INTERVAL_S = 0.5
"""How often the driver looks for a stuck worker (only when ``item_timeout_s`` is set)."""


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    tasks: Connection
    """Driver -> worker: a ``Chunk``, or None to finish."""
    results: Connection
    """Worker -> driver: ready, results, log records, finished."""
    ready: asyncio.Future[None]
    finished: asyncio.Future[ErrorInfo | None]
    replacement: bool
    outstanding: deque[tuple[Chunk, asyncio.Future[ChunkResult]]] = field(default_factory=deque)
    alive: bool = True
    head_since: float = 0.0
    """Monotonic time the first outstanding chunk could start (sent to an idle worker, or the one before it came back)."""
    killed: str = ""
    """Why the driver killed it (stuck past ``item_timeout_s``); "" otherwise."""

    @property
    def usable(self) -> bool:
        return self.alive and self.ready.done() and self.ready.exception() is None


class ProcessBackend:
    """``workers`` spawned processes, each rebuilding the job from the run's ``Wiring``."""

    def __init__(self, job: Job, wiring: Wiring, items: int | None = None) -> None:
        config = job.config
        self._count = config.workers or os.cpu_count() or 1
        if items is not None:  # a worker more than the items would load the job and run setup() for nothing
            self._count = max(1, min(self._count, items))
        target = Path(wiring.target).expanduser()
        if target.exists() and not wiring.by_name:  # workers start in the same directory, but a relative path is fragile
            wiring = replace(wiring, target=str(target.resolve()))
        self._spec = WorkerSpec.for_run(config, wiring)
        self._workers: list[_Worker] = []
        self._queue: deque[tuple[Chunk, asyncio.Future[ChunkResult]]] = deque()
        self._closing = False
        self._cancelled = False
        self._abandoned = False
        self._timeout_s = config.item_timeout_s
        self._watch: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # spawn, not fork: the driver has threads (loop, recorder, display) that fork would copy mid-flight.
        self._context = multiprocessing.get_context("spawn")
        # A flag in shared memory, not an Event: an Event is five named semaphores, which a run that leaves its
        # workers behind (abandon) left to the resource tracker, and it warned of them after the closing line.
        self._cancel_flag = self._context.Value("b", 0, lock=False)
        self._limits = self._context.Value("q", 0, lock=False)
        """The driver's limits version, read by workers while an item waits for its start slot."""
        self._holds = self._context.Value("q", 0, lock=False)
        """How many times the driver held every start (``Backend.hold``), read by workers before each item starts."""
        # A driver that ends without close() (an error on the way out) must still exit: at exit, multiprocessing
        # SIGTERMs its daemonic children and joins them, but workers ignore SIGTERM (signals.py) and wait on
        # their pipe from this very process, so the join would wait for ever. Registered after multiprocessing's
        # own handler, this one runs first (atexit is last in, first out) and kills what is left.
        atexit.register(self.abandon)
        for _ in range(self._count):
            if self._abandoned:  # a stop timed out while they started: the run leaves, so start no more
                break
            self._spawn(replacement=False)
            # Each start takes a while (a new interpreter): between them the loop hears a stop, and the loop watch
            # does not take batchcli's own spawning for the job's code holding the loop.
            await asyncio.sleep(0)
        outcomes = await asyncio.gather(*(w.ready for w in self._workers), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            await self.close(timeout=10)
            raise errors[0]
        if self._timeout_s is not None:
            self._watch = self._loop.call_later(WATCH_INTERVAL_S, self._watchdog)

    def slots(self) -> int:
        return max(1, sum(1 for w in self._workers if w.alive))

    async def submit(self, chunk: Chunk) -> ChunkResult:
        future: asyncio.Future[ChunkResult] = self._loop.create_future()
        self._queue.append((chunk, future))
        self._dispatch()
        return await future

    def queued(self, chunk: Chunk) -> bool:
        return any(waiting is chunk for waiting, _ in self._queue)  # _dispatch skips the cancelled ones

    def limits_changed(self, version: int) -> None:
        self._limits.value = version

    def hold(self, count: int) -> None:
        self._holds.value = count

    def cancel(self) -> None:
        self._cancelled = True
        self._cancel_flag.value = 1  # workers abandon the rest of their chunks
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(WorkerLost("the run was cancelled", started=False))

    async def close(self, timeout: float | None) -> WorkerError | None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
        while self._queue:  # nothing should wait by now; if something does, it was never attempted
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(WorkerLost("the workers are shutting down", started=False))
        for worker in self._workers:
            if worker.alive:
                try:
                    worker.tasks.send(None)
                except OSError:
                    pass
        finishing = [w.finished for w in self._workers if not w.finished.done()]
        if finishing:
            await asyncio.wait(finishing, timeout=timeout)
        await asyncio.to_thread(self._reap)
        for worker in self._workers:
            if worker.finished.done() and worker.finished.result() is not None:
                info = worker.finished.result()
                assert info is not None
                what = "finish() did not complete" if info.error_type == "WorkerLost" else "finish() raised"
                return WorkerError(what, info, worker.process.pid or 0)
        return None

    # Workers.

    def _spawn(self, replacement: bool) -> _Worker:
        tasks_r, tasks_w = self._context.Pipe(duplex=False)
        results_r, results_w = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=worker_main,
            args=(self._spec, tasks_r, results_w, self._cancel_flag, self._limits, self._holds),
            name="batchcli-worker",
            # Daemonic: if the driver dies, multiprocessing ends its workers rather than wait for them.
            daemon=True,
        )
        with spawning():
            process.start()
        tasks_r.close()
        results_w.close()
        worker = _Worker(process, tasks_w, results_r, self._loop.create_future(), self._loop.create_future(), replacement)
        self._workers.append(worker)
        threading.Thread(target=self._read, args=(worker,), name="batchcli-worker-reader", daemon=True).start()
        return worker

    def _read(self, worker: _Worker) -> None:
        """On a thread per worker: hand its messages to the loop; log records go straight to logging."""
        while True:
            try:
                message = worker.results.recv()
            except (EOFError, OSError):
                break
            except Exception as error:  # a message that does not unpickle here: which chunk it held is unknown
                log.error(
                    "A message from worker process %s could not be read (%s: %s); the worker is replaced, and the "
                    "items it was running go again.", worker.process.pid, type(error).__name__, error,
                )  # fmt: skip
                worker.process.kill()  # its pipe ends: the next read is EOF, and its chunk comes back as lost
                continue
            if message[0] == "log":
                record: logging.LogRecord = message[1]
                logging.getLogger(record.name).handle(record)
                continue
            self._to_loop(self._on_message, worker, message)
        self._to_loop(self._on_exit, worker)

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the run is over
            pass

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready.set_result(None)
            self._dispatch()
        elif kind == "error":  # setting up failed; the process exits
            error: WorkerError = message[1]
            worker.ready.set_exception(error)
            if worker.replacement:
                worker.ready.exception()  # retrieved: reported here, not by start()
                others = any(w is not worker and w.alive and (w.usable or not w.ready.done()) for w in self._workers)
                then = "going on with the others" if others else "no other worker is left, so the run ends"
                log.error("A replacement worker process could not start; %s.\n%s", then, error)
                self._fail_queue_if_no_workers(error)
        elif kind in ("result", "chunk_error"):
            _, future = worker.outstanding.popleft()
            worker.head_since = time.monotonic()
            if not future.done():
                if kind == "result":
                    future.set_result(message[2])
                else:
                    future.set_exception(message[2])
            self._dispatch()
        elif kind == "finished":
            if not worker.finished.done():
                worker.finished.set_result(message[1])

    def _on_exit(self, worker: _Worker) -> None:
        worker.alive = False
        worker.process.join(1)
        code = worker.process.exitcode
        if not worker.ready.done():
            info = ErrorInfo("WorkerLost", f"the process exited while starting (exit code {code})", "")
            worker.ready.set_exception(WorkerError("Starting a worker failed", info, worker.process.pid or 0))
            if worker.replacement:
                worker.ready.exception()
                self._fail_queue_if_no_workers(worker.ready.exception())  # type: ignore[arg-type]
        if not worker.finished.done():
            died = self._closing and worker.ready.exception() is None
            message = f"the worker process died before finish() returned (exit code {code})"
            worker.finished.set_result(ErrorInfo("WorkerLost", message, "") if died else None)
        started = True
        while worker.outstanding:
            _, future = worker.outstanding.popleft()
            if not future.done():
                message = worker.killed or f"Worker process {worker.process.pid} died (exit code {code})"
                future.set_exception(WorkerLost(message, started=started and not self._cancelled))
            started = False
        if not self._closing and not self._cancelled and worker.ready.exception() is None:
            self._spawn(replacement=True)
        self._dispatch()

    def _fail_queue_if_no_workers(self, error: BaseException) -> None:
        if any(w.alive and (w.usable or not w.ready.done()) for w in self._workers):
            return
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(error)

    def _dispatch(self) -> None:
        while self._queue:
            usable = [w for w in self._workers if w.usable and len(w.outstanding) < CHUNKS_PER_SLOT]
            if not usable or self._closing:
                return
            worker = min(usable, key=lambda w: len(w.outstanding))
            chunk, future = self._queue.popleft()
            if future.done():
                continue
            try:
                worker.tasks.send(chunk)
            except OSError:  # it just died; its reader reports that
                worker.alive = False
                self._queue.appendleft((chunk, future))
                continue
            worker.outstanding.append((chunk, future))
            if len(worker.outstanding) == 1:
                worker.head_since = time.monotonic()

    def _watchdog(self) -> None:
        """Kill a worker whose chunk ran longer than ``item_timeout_s`` allows: its code holds the worker's loop.

        An attempt past its timeout is cancelled, or abandoned in its thread, inside the worker; only code
        that never yields (a blocking call in an ``async def``, native code holding the GIL) stops that.
        Killed, the worker is replaced, and its chunk's items count one attempt each and are retried alone.
        """
        if self._closing or self._cancelled:
            return
        now = time.monotonic()
        for worker in self._workers:
            if not worker.alive or worker.killed or not worker.outstanding:
                continue
            chunk = worker.outstanding[0][0]
            ran = now - worker.head_since
            if ran > _allowed_s(chunk):
                worker.killed = (
                    f"Worker process {worker.process.pid} was stuck: a chunk of {chunk.size} item(s) ran {ran:.0f}s, "
                    f"past what item_timeout_s={chunk.timeout_s:g}s allows; it was killed and replaced"
                )
                worker.process.kill()
        self._watch = self._loop.call_later(WATCH_INTERVAL_S, self._watchdog)

    def _reap(self) -> None:
        for worker in self._workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            worker.tasks.close()
        atexit.unregister(self.abandon)

    def abandon(self) -> None:
        """The workers still alive were abandoned: SIGKILL them (they ignore SIGTERM). At interpreter exit without
        close(), and when the run leaves without close() (a stop timed out while setup() or finish() hung in the
        workers) to exit at once, skipping ``atexit``: before, they outlived the run for good, orphaned. A start
        still under way on the loop thread spawns no more (one in the middle of its start is killed at exit)."""
        self._abandoned = True
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1)


def _allowed_s(chunk: Chunk) -> float:
    """The longest a chunk can run when every attempt ends by its timeout: each lane's items one after another."""
    timeout = chunk.timeout_s or 0.0
    lanes = max(1, min(chunk.share, chunk.size))
    waits = 0.0 if chunk.rate is None else (chunk.size + 1) / chunk.rate  # the slot booked by the chunk before
    return (math.ceil(chunk.size / lanes) + 1) * timeout + waits + STUCK_GRACE_S


def worker_main(
    spec: WorkerSpec, tasks: Connection, results: Connection, cancel: Any, limits: Any, holds: Any
) -> None:
    """A worker process: build the job, run chunks until told to stop, finish the job."""
    # Ctrl-C and SIGTERM reach the whole process group; the driver decides what they mean (pause, stop).
    shield_worker()
    lock = threading.Lock()
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    # Read the pipe on a thread, so the driver never blocks sending a chunk while this one works, and from the
    # start, so a driver that dies while the job is set up is noticed then too.
    threading.Thread(target=_drain, args=(tasks, inbox), name="batchcli-inbox", daemon=True).start()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            try:
                results.send(message)
            except OSError:  # only the driver reads this pipe: it is gone
                _driver_gone()

    _forward_logs(send, spec.log_level)
    try:
        job = WorkerJob(spec)
    except WorkerError as error:
        send(("error", error))
        return
    send(("ready", os.getpid()))
    while (chunk := inbox.get()) is not None:
        try:
            result = job.run_chunk(
                chunk, lambda: cancel.value != 0, lambda: int(limits.value), lambda: holds.value
            )
        except WorkerError as error:
            send(("chunk_error", chunk.id, error))
        else:
            send(("result", chunk.id, result))
    send(("finished", job.finish()))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads of timed-out sync attempts may still run; they must not keep the process alive.
    os._exit(0)


def _drain(tasks: Connection, inbox: queue.SimpleQueue[Any]) -> None:
    while True:
        try:
            message = tasks.recv()
        except (EOFError, OSError):  # the driver holds the other end, and closes it only once this process is gone
            _driver_gone()
        inbox.put(message)
        if message is None:
            return


def _driver_gone() -> NoReturn:
    """The driver died (``kill -9``, out of memory): exit at once, quietly, starting nothing more.

    Nothing this worker does from here on is recorded, so a ``resume`` does it again: the worker used to run
    the rest of its chunks (their side effects then happened twice), and print a ``BrokenPipeError`` traceback
    for each result it could not send. ``finish()`` does not run either, as it did not in the dead driver.
    """
    os._exit(1)  # at once, from any thread: the user's threads and any item they run end with it


class _PipeQueue:
    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send

    def put_nowait(self, record: logging.LogRecord) -> None:
        try:
            self._send(("log", record))
        except OSError:
            pass


def _forward_logs(send: Callable[[tuple[Any, ...]], None], level: int) -> None:
    """Send this process's log records to the driver, which writes them to the run's log and console."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    # QueueHandler formats each record first, so no unpicklable argument travels: a Secret is masked before.
    handler = PlainRecords(_PipeQueue(send))  # type: ignore[arg-type]
    handler.addFilter(mask_secrets)
    root.addHandler(handler)
    root.setLevel(level)
    # The job's warnings.warn() (a library's deprecation) as records too, as in the driver: they went to this
    # process's stderr, past the run's log file and the JSON lines of --log-format json.
    logging.captureWarnings(True)
