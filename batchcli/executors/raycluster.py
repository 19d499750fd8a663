"""The Ray executor's backend: chunks go to Ray actors, one worker process each, on a cluster local or remote.

Each actor builds the job from the run's ``WorkerSpec`` (plain data) and keeps it for its life:
``setup()`` once, every chunk it is given, ``finish()`` once, so a Service's connection pool lives as
long as the actor. The project travels the way Ray ships code, as the actors' ``runtime_env``
``working_dir``; each actor copies it out of Ray's shared session directory into a private one and
checks it against the driver's digests before importing it (``bundle.adopt``). An actor that dies is
restarted by Ray; the chunks it held fail as ``WorkerLost``, so each of their items costs one attempt
and is sent again. Ray is an optional extra: this module is imported only for ``executor=ray``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import ray
from ray.exceptions import GetTimeoutError, RayActorError, TaskCancelledError

from batchcli.errors import ProjectError, UsageError
from batchcli.executors import worker
from batchcli.executors.bundle import adopt, bundle_project, discard, manifest_of, stage, unstage
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
from batchcli.executors.signals import spawning
from batchcli.load.wiring import Job, Wiring

CONNECT_TIMEOUT_S = 10.0
"""How long to try reaching the head node at ``ray_address`` before the run starts."""
SETUP_TIMEOUT_S = 300.0
"""How long the actors may take to start, load the project and run ``setup()`` before the run gives up."""
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
"""Object store of the local Ray a run starts: chunks are small, and Ray's default takes 30% of the memory."""

log = logging.getLogger("batchcli")


@dataclass(frozen=True)
class Shipped:
    """Where a shipped project lies in the actor's ``working_dir``, and what each of its files must hold."""

    target: str
    """The path to load, relative to the working_dir (``proj/main.py``, ``proj``, ``job.py``)."""
    manifest: dict[str, str]
    """SHA-256 of each file, by relative path, as the driver zipped it."""


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``UsageError`` unless ``address`` is ``auto`` or a ``[ray://]host:port`` something listens at.

    Called before the run directory exists: a typo or a head node that is down is bad input, not a run.
    """
    text = address.strip()
    if text == "auto":
        found = _auto_address()
        if found is None:
            return  # Ray's lookup could not be asked here: the run's start says what it finds
        text = found
    location = text.removeprefix("ray://")
    host, _, port = location.rpartition(":")
    host = host.strip("[]")
    if "://" in location or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"ray_address={address!r} is not a Ray address. Give the address `ray start --head` prints, like "
            "-p ray_address=10.0.0.5:6379 (or ray://HOST:10001 for Ray Client, or auto for the cluster started "
            "on this machine), or leave ray_address out to start a local Ray."
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise UsageError(
            f"Cannot reach the Ray cluster at ray_address={address!r} ({reason} at {host}:{port}; batchcli waits at "
            f"most {timeout:.0f}s). Start it with `ray start --head`, check the host, port and firewall, or leave "
            "ray_address out to start a local Ray for the run."
        ) from None


def _auto_address() -> str | None:
    """What ``ray_address=auto`` finds, by Ray's own lookup (``RAY_ADDRESS``, the cluster ``ray start`` last started
    on this machine, a running one); ``UsageError`` when it finds none, None when that lookup is not there to ask
    (another Ray version). Unchecked, a machine without a cluster ended in a "Crashed" run directory, exit 3."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:
        return None
    try:
        found = get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise UsageError(
            "ray_address=auto finds no Ray cluster on this machine (RAY_ADDRESS is not set, and no `ray start --head` "
            "runs here). Start one with `ray start --head`, give the address of another with -p ray_address=HOST:PORT, "
            "or leave ray_address out to start a local Ray for the run."
        ) from None
    except Exception:  # the lookup changed shape: leave it to the run's start
        return None
    return found if isinstance(found, str) and found and found != "auto" else None


class RayWorker:
    """One Ray actor: a worker process that keeps the run's job, built on first use, until ``finish``."""

    def __init__(self, spec: WorkerSpec, shipped: Shipped | None, cwd: str | None = None) -> None:
        self._spec = spec
        self._shipped = shipped
        self._cwd = cwd
        """The driver's working directory: the actor's too, where it exists (this machine, a shared file system)."""
        self._built: WorkerSpec | None = None

    def prepare(self) -> int | WorkerError:
        """Build and set up the job here; returns the process id (a failure comes back as a value)."""
        worker.hold_records(self._spec.log_level)
        try:
            worker.job_for(self._local_spec())
        except WorkerError as error:
            return error
        except ProjectError as error:
            return WorkerError("Loading the project failed", ErrorInfo.of(error), os.getpid())
        return os.getpid()

    def run_chunk(self, chunk: Chunk) -> ChunkResult | WorkerError:
        """Run one chunk (an actor restarted by Ray builds and sets up the job again first)."""
        worker.hold_records(self._spec.log_level)
        try:
            return worker.run_steered(worker.job_for(self._local_spec()), self._spec.key, chunk)
        except WorkerError as error:
            return error
        except ProjectError as error:
            return WorkerError("Loading the project failed", ErrorInfo.of(error), os.getpid())

    @ray.method(concurrency_group="control")  # type: ignore[misc]
    def steer(self, cancelled: bool, limits: int, holds: int) -> None:
        """The driver's word while a chunk runs (``worker.steer``): in its own concurrency group, so it is not queued
        behind the chunk it is about."""
        worker.steer(self._spec.key, cancelled, limits, holds)

    def finish(self) -> tuple[int, ErrorInfo | None, list[logging.LogRecord]]:
        """Finish the job here (nothing when it was never built) and remove the project's private copy; with the log
        records held since the last chunk."""
        try:
            info = worker.finish_job(self._spec.key)
            return os.getpid(), info, worker.take_records()
        finally:
            if self._shipped is not None:
                discard(self._spec.key)

    def _local_spec(self) -> WorkerSpec:
        if self._built is None:
            spec = self._spec
            if self._shipped is not None:
                # Ray runs an actor in its working_dir: the project's files as Ray unpacked them.
                target = adopt(Path.cwd(), self._shipped.manifest, self._shipped.target, spec.key)
                spec = replace(spec, wiring=replace(spec.wiring, target=target))
            if self._cwd is not None and os.path.isdir(self._cwd):
                # Then the driver's directory, as with the process and local Dask workers: a relative path in the
                # job (an output file, a Path param) wrote into Ray's temporary copy of the project, and was lost.
                os.chdir(self._cwd)
            self._built = spec
        return self._built


class RayBackend:
    """Chunks as calls to ``workers`` Ray actors, on the cluster at ``ray_address`` or on a local Ray."""

    def __init__(self, job: Job, wiring: Wiring) -> None:
        config = job.config
        self._address = config.ray_address
        self._workers = config.workers
        bundle = bundle_project(job.project)
        self._spec = WorkerSpec.for_run(config, wiring)
        self._bundle = bundle
        self._staged: Path | None = None
        self._actors: list[Any] = []
        self._next = 0
        self._refs: set[Any] = set()
        self._cancelled = False
        self._limits = 0
        """The limits version last told to the actors (``_steer``)."""
        self._holds = 0
        """The count of holds (cool-downs, pauses) last told to the actors (``_steer``)."""
        self._connected = False
        self._ray_children: set[int] = set()
        """The driver's child processes that ``ray.init`` started (a local Ray only): what ``_shutdown`` kills."""
        """This process's children before it started a local Ray: not Ray's, never killed."""

    async def start(self) -> None:
        try:
            # Ray's calls block; keep them off the run's loop.
            await asyncio.to_thread(self._connect)
            await asyncio.to_thread(self._prepare)
        except BaseException:
            await asyncio.to_thread(self._finish_actors, 10.0)
            await asyncio.to_thread(self._shutdown)
            raise

    def slots(self) -> int:
        return max(1, len(self._actors))

    async def submit(self, chunk: Chunk) -> ChunkResult:
        # Round robin: CHUNKS_PER_SLOT chunks per actor in flight, one running and one queued in the actor.
        actor = self._actors[self._next % len(self._actors)]
        self._next += 1
        ref = actor.run_chunk.remote(chunk)
        self._refs.add(ref)
        try:
            outcome = await asyncio.wrap_future(ref.future())
        except RayActorError as error:
            raise WorkerLost(f"The Ray actor {_actor_of(error)} died", started=not self._cancelled) from None
        except TaskCancelledError:
            raise WorkerLost("the run was cancelled", started=False) from None
        finally:
            self._refs.discard(ref)
        if isinstance(outcome, WorkerError):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    def queued(self, chunk: Chunk) -> bool:
        return False  # the cluster has every chunk at once: none is held back here

    def limits_changed(self, version: int) -> None:
        # Running chunks give back the items waiting for a start slot under the old rate (RayWorker.steer).
        self._steer(False, version)

    def hold(self, count: int) -> None:
        # Running chunks start none of their remaining items (RayWorker.steer), as on a cancel, until the driver goes on.
        self._holds = count
        self._steer(False, self._limits)

    def _steer(self, cancelled: bool, limits: int) -> None:
        self._limits = limits
        for actor in self._actors:
            try:
                actor.steer.remote(cancelled, limits, self._holds)  # not awaited: a dead actor's chunks fail as they would
            except Exception as error:
                log.debug("Could not steer a Ray actor: %s", error)

    def abandon(self) -> None:
        """Nothing more than the exit does: Ray's own processes outlive a driver that exits, as Ray arranges."""

    def cancel(self) -> None:
        self._cancelled = True
        self._steer(True, self._limits)  # a running chunk starts none of its remaining items
        # Told, a running chunk comes back at once with the items it finished: they are kept (what came back after a
        # cancel was dropped, and a resume did those items again). Calls still queued or running after
        # CANCEL_GRACE_S are cancelled then: queued ones are dropped; a running one cannot be interrupted.
        try:
            asyncio.get_running_loop().call_later(CANCEL_GRACE_S, _drop_unfinished, list(self._refs))
        except RuntimeError:  # not on the run's loop: cancel them now
            _drop_unfinished(list(self._refs))

    async def close(self, timeout: float | None) -> WorkerError | None:
        try:
            return await asyncio.to_thread(self._finish_actors, timeout)
        finally:
            await asyncio.to_thread(self._shutdown)

    # On worker threads.

    def _connect(self) -> None:
        # The driver's SIGTERM is the run's to handle (a graceful stop): Ray's core worker would also print a
        # crash report for it ("*** SIGTERM received ... PC: @"). Only this process; its workers keep theirs.
        constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
        if constants is not None and hasattr(constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"):
            constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
        # Ray uploads a local working_dir only for a whole job, so the project is shipped at ray.init.
        options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        shipped = None
        if self._bundle is not None:
            self._staged = stage(self._bundle)
            options["runtime_env"] = {"working_dir": str(self._staged)}
            shipped = Shipped(self._bundle.target, manifest_of(self._bundle))
        if self._address is None:
            # A Ray of our own: its processes share the driver's process group, so they must not take the
            # group's Ctrl-C or SIGTERM (spawning() blocks both in what it starts); we shut it down after.
            before = _children()
            with spawning(), _quiet():
                ray.init(
                    address="local",
                    num_cpus=self._workers or os.cpu_count() or 1,
                    object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                    include_dashboard=False,
                    **options,
                )
            # Only these are Ray's: a child the driver starts later (a Source's subprocess) is not ours to kill.
            self._ray_children = _children() - before
        else:
            try:
                with _quiet():
                    ray.init(address=self._address.strip(), **options)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ProjectError(
                    f"Cannot reach the Ray cluster at ray_address={self._address!r} ({error}). Start one with "
                    "`ray start --head` and give the address it prints (-p ray_address=HOST:6379), or leave "
                    "ray_address out to start a local Ray for the run."
                ) from None
        self._connected = True
        workers = self._workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # steer runs in a group of its own, beside a chunk; chunks still run one at a time.
        remote = ray.remote(concurrency_groups={"control": 1})(RayWorker).options(  # type: ignore[call-overload]
            max_restarts=-1,  # a dead actor comes back (and sets the job up again); its chunks fail once
            max_task_retries=0,  # the driver decides retries: one attempt per item of a lost chunk
        )
        self._actors = [remote.remote(self._spec, shipped, os.getcwd()) for _ in range(workers)]

    def _prepare(self) -> None:
        """Set the job up in every actor, so setup errors end the run before any item."""
        refs = [actor.prepare.remote() for actor in self._actors]
        try:
            outcomes = ray.get(refs, timeout=SETUP_TIMEOUT_S)
        except GetTimeoutError:
            raise ProjectError(
                f"The Ray actors did not start, load the project and finish setup() within {SETUP_TIMEOUT_S:.0f}s. "
                "Check `ray status` for free resources, and the actors' logs for a setup() that hangs."
            ) from None
        except RayActorError as error:
            raise ProjectError(
                f"A Ray actor could not start ({error}). Install batchcli and the job's dependencies where the Ray "
                "workers run, in the same versions as here."
            ) from None
        for outcome in outcomes:
            if isinstance(outcome, WorkerError):
                raise outcome

    def _finish_actors(self, timeout: float | None) -> WorkerError | None:
        """Call ``finish()`` in every actor: for as long as it takes (``timeout`` None), else at most ``timeout``."""
        if not self._actors:
            return None
        refs = [actor.finish.remote() for actor in self._actors]
        deadline = None if timeout is None else time.monotonic() + timeout
        return finish_results(
            [functools.partial(_get, ref) for ref in refs],
            lambda: self._cancelled or (deadline is not None and time.monotonic() > deadline),
            "in a Ray actor",
        )

    def _shutdown(self) -> None:
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self._actors = []
        if self._connected:
            self._connected = False
            if self._address is None:
                _stop_local_ray(self._ray_children)
            else:
                ray.shutdown()  # a cluster at ray_address only loses this driver
        if self._staged is not None:
            unstage(self._staged)
            self._staged = None


def _stop_local_ray(ray_children: set[int]) -> None:
    """Stop the run's own Ray at once: its processes block SIGTERM (see ``_connect``).

    ``ray.shutdown`` would give each a second to leave on SIGTERM before its SIGKILL, and the agents the
    raylet starts would outlive it; so its node kills without the grace, and every process ``ray.init``
    started (``ray_children`` that are still the driver's children, and theirs, found in /proc) gets a SIGKILL after.
    Ray has no public call for either; if its internals move, ``ray.shutdown`` still stops it, slowly.
    """
    tree = _process_tree()
    doomed = [pid for pid in tree.get(os.getpid(), []) if pid in ray_children]
    for pid in doomed:
        doomed.extend(tree.get(pid, []))
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    kill = getattr(node, "kill_all_processes", None)
    if kill is not None:

        def at_once(check_alive: bool = True, allow_graceful: bool = False, wait: bool = False) -> None:
            kill(check_alive=check_alive, allow_graceful=False, wait=wait)

        node.kill_all_processes = at_once  # type: ignore[union-attr]
    ray.shutdown()
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _children() -> set[int]:
    return set(_process_tree().get(os.getpid(), []))


def _process_tree() -> dict[int, list[int]]:
    """Parent pid -> child pids of every live process, from /proc (empty where there is none)."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


@contextmanager
def _quiet() -> Iterator[None]:
    """Ray's own notes while it connects (which thread got its SIGTERM handler, token auth) stay off the console."""
    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _drop_unfinished(refs: list[Any]) -> None:
    """Cancel the chunk calls of ``refs`` that have not come back (``RayBackend.cancel``)."""
    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:  # done meanwhile, or Ray shutting down
            pass


def _actor_of(error: RayActorError) -> str:
    actor_id = getattr(error, "actor_id", None)
    return f"{actor_id[:8]}" if isinstance(actor_id, str) else "(unknown)"


def _get(ref: Any, timeout: float) -> tuple[int, ErrorInfo | None, list[logging.LogRecord]]:
    """What an actor's ``finish()`` returned, waiting at most ``timeout`` (``TimeoutError`` past it)."""
    result: tuple[int, ErrorInfo | None, list[logging.LogRecord]] = ray.get(ref, timeout=timeout)
    return result
