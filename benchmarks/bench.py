"""Measure batchcli against a bare asyncio worker pool, in the same run, and check the targets.

    python benchmarks/bench.py            # every scenario
    python benchmarks/bench.py overhead   # one or more by name
    python benchmarks/bench.py shards     # --shard I/4 as 4 processes vs executor=process, 4 workers
    python benchmarks/bench.py clusters   # executor=ray vs dask vs process, CPU-bound and no-op items

Each measurement runs in a fresh child process (so peak RSS is its own). batchcli runs with the
journal on and the live display rendering to /dev/null as if to a terminal. Exits 1 when a target is
missed. See docs/architecture.md for where the per-item time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOOP = HERE / "jobs" / "noop.py"
FAIL = HERE / "jobs" / "fail.py"
HTTP_JOB = HERE / "jobs" / "api_client.py"
RESULTS_JOB = HERE / "jobs" / "results.py"
KEYED_JOB = HERE / "jobs" / "keyed.py"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measured child: this checkout on its path, and Python's bytecode cache on, as in any
    installation. ``PYTHONDONTWRITEBYTECODE`` would have every child compile batchcli from source first (0.13 s
    here), which flatters a ratio against a short run; the best of several runs is the one with the cache warm."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# ---------------------------------------------------------------- children: one measurement each


def bare_pool(count: int, concurrency: int, sleep_ms: float) -> float:
    """The yardstick: ``concurrency`` coroutines pulling from one shared iterator."""
    delay = sleep_ms / 1000

    async def process(item: int) -> None:
        if delay:
            await asyncio.sleep(delay)

    async def main() -> float:
        items = iter(range(count))

        async def worker() -> None:
            for item in items:
                await process(item)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start

    return asyncio.run(main())


def http_pool(count: int, concurrency: int, url: str, meter: str) -> float:
    """A bare asyncio pool (or aiometer's) calling the API with httpx; a 429/503 waits its Retry-After, then retries."""
    import httpx

    async def main() -> float:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": "Bearer good"}, timeout=30, limits=limits
        ) as client:

            async def process(item: int) -> None:
                while True:
                    response = await client.get(f"/items/{item}")
                    if response.status_code not in (429, 503):
                        response.raise_for_status()
                        return
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

            start = time.perf_counter()
            if meter == "aiometer":
                import aiometer

                await aiometer.run_on_each(process, range(count), max_at_once=concurrency)
            else:
                items = iter(range(count))

                async def worker() -> None:
                    for item in items:
                        await process(item)

                await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start

    return asyncio.run(main())


def batchcli_run(
    job: str, count: int, concurrency: int, sleep_ms: float, extra: dict[str, str], expect_ok: bool = True
) -> float:
    """batchcli on the same work, in-process, journal and display on; times the run, not the import."""
    import tempfile

    from rich.console import Console

    from batchcli.load.configuration import bind_runtime
    from batchcli.load.wiring import Wiring, build_job
    from batchcli.load.project import load_project
    from datetime import datetime

    from batchcli.run.driver import Run
    from batchcli.run.session import RunOptions, make_run_dir

    values = {"count": (str(count),), "concurrency": (str(concurrency),), **{k: (v,) for k, v in extra.items()}}
    if sleep_ms:
        values["sleep_ms"] = (str(sleep_ms),)
    wiring = Wiring(target=job, config_name=None, values=values)
    job_obj = build_job(load_project(job), wiring)
    with open(os.devnull, "w") as devnull, tempfile.TemporaryDirectory() as out:
        console = Console(file=devnull, force_terminal=True, width=120)
        options = RunOptions(output_dir=Path(out), console=console, handle_signals=False)
        # The Session's steps before the driver, done here so only the run itself is timed.
        started = datetime.now().astimezone()
        run_dir = make_run_dir(Path(out), job_obj.project.name, started)
        # As the Session does: worker processes rebuild the job from these (process, dask, ray).
        bind_runtime(job_obj.config, output_dir=Path(out), run_dir=run_dir, started_at=started)
        run = Run(job_obj, wiring, options, run_dir, started)
        start = time.perf_counter()
        _run_started[:] = [start]
        result = run.execute()
        elapsed = time.perf_counter() - start
    if (result.succeeded if expect_ok else result.succeeded + result.failed) != count:
        raise SystemExit(f"batchcli settled {result.succeeded} + {result.failed} of {count} items")
    return elapsed


def loop_cpu(job: str, count: int) -> float:
    """CPU seconds of the run's loop thread (where items are processed and failures decided) for ``count`` items."""
    from batchcli.run import driver

    spent: list[float] = []
    loop_main = driver.Run._loop_main

    def timed(self: driver.Run) -> None:
        start = time.thread_time()
        try:
            loop_main(self)
        finally:
            spent.append(time.thread_time() - start)

    driver.Run._loop_main = timed  # type: ignore[method-assign]
    batchcli_run(job, count, 10, 0.0, {"max_retries": "0", "breaker_window": "0"}, expect_ok=False)
    return spent[0]


def after_start(job: str, count: int, concurrency: int, extra: dict[str, str]) -> float:
    """A chunked executor's run from the moment its workers are ready to the end: a cluster's start-up (seconds,
    and varying by seconds) left out, so a slope between two counts is the per-item cost."""
    from batchcli.executors import chunked

    ready: list[float] = []
    start = chunked.ChunkedExecutor.start

    async def timed(self: chunked.ChunkedExecutor) -> None:
        await start(self)
        ready.append(time.perf_counter())

    chunked.ChunkedExecutor.start = timed  # type: ignore[method-assign]
    whole = batchcli_run(job, count, concurrency, 0.0, extra)
    return whole - (ready[0] - _run_started[0])


_run_started: list[float] = []


def resume_run(run_dir: str, held_max: int) -> float:
    """``batchcli resume RUN_DIR`` in-process, the keys it skips held in a set up to ``held_max`` of them."""
    from batchcli.journal import keyindex
    from batchcli.__main__ import main

    keyindex.KEYS_HELD_MAX = held_max
    sys.argv = ["batchcli", "resume", run_dir, "-p", "stop_at=-1"]
    start = time.perf_counter()
    try:
        main()
    except SystemExit as end:
        if end.code not in (0, None):
            raise
    return time.perf_counter() - start


def child(argv: list[str]) -> None:
    impl, count, concurrency, sleep_ms, job, extra = argv[0], int(argv[1]), int(argv[2]), float(argv[3]), argv[4], json.loads(argv[5])
    if impl == "loopcpu":
        elapsed = loop_cpu(job, count)
    elif impl == "bare":
        elapsed = bare_pool(count, concurrency, sleep_ms)
    elif impl in ("bare_http", "aiometer"):
        elapsed = http_pool(count, concurrency, extra["url"], impl)
    elif impl == "resume":
        with contextlib.redirect_stdout(sys.stderr):  # the run's own lines: stdout carries the measurement
            elapsed = resume_run(extra["run_dir"], int(extra["held_max"]))
    elif impl == "after_start":
        elapsed = after_start(job, count, concurrency, extra)
    else:
        elapsed = batchcli_run(job, count, concurrency, sleep_ms, extra)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"elapsed": elapsed, "rss_mb": rss_mb}))


def measure(impl: str, count: int, concurrency: int = 10, sleep_ms: float = 0.0, job: Path = NOOP, **extra: str) -> dict[str, float]:
    """Run one measurement in a fresh process and return its time and peak RSS."""
    env = child_env()
    proc = subprocess.run(
        [sys.executable, __file__, "_child", impl, str(count), str(concurrency), str(sleep_ms), str(job), json.dumps(extra)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{impl} x{count} failed:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def best(repeat: int, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The fastest of ``repeat`` runs (the least disturbed by the rest of the machine)."""
    return min((fn() for _ in range(repeat)), key=lambda r: r["elapsed"])


# ---------------------------------------------------------------- scenarios


Row = tuple[str, str, str, str, str, float, float, bool]


def overhead() -> list[Row]:
    """Per-item cost of the async executor vs the bare pool: slope between 200k and 1M no-op items."""
    small, large = 200_000, 1_000_000
    b_small, b_large = best(3, lambda: measure("bare", small)), best(3, lambda: measure("bare", large))
    c_small, c_large = best(3, lambda: measure("batchcli", small)), best(3, lambda: measure("batchcli", large))
    bare_us = (b_large["elapsed"] - b_small["elapsed"]) / (large - small) * 1e6
    ours_us = (c_large["elapsed"] - c_small["elapsed"]) / (large - small) * 1e6
    ratio = ours_us / bare_us
    return [(
        "overhead (no-op, per item)",
        f"{ours_us:.2f} us/item",
        f"{bare_us:.2f} us/item",
        f"{1e6 / ours_us:,.0f}/s",
        f"{c_large['rss_mb']:.0f} MB",
        ratio, 5.0, ratio <= 5.0,
    )]


def io_bound() -> list[Row]:
    """100k items of 10 ms latency at concurrency 1000."""
    n = 100_000
    bare = best(2, lambda: measure("bare", n, concurrency=1000, sleep_ms=10))
    ours = best(2, lambda: measure("batchcli", n, concurrency=1000, sleep_ms=10))
    ratio = ours["elapsed"] / bare["elapsed"]
    return [(
        "I/O-bound (100k x 10 ms, c=1000)",
        f"{ours['elapsed']:.2f} s",
        f"{bare['elapsed']:.2f} s",
        f"{n / ours['elapsed']:,.0f}/s",
        f"{ours['rss_mb']:.0f} MB",
        ratio, 1.25, ratio <= 1.25,
    )]


def memory() -> list[Row]:
    """Peak RSS for 5M no-op items minus that for 100k."""
    small = measure("batchcli", 100_000)
    large = measure("batchcli", 5_000_000)
    growth = large["rss_mb"] - small["rss_mb"]
    return [(
        "memory (5M vs 100k items)",
        f"+{growth:.1f} MB",
        f"{small['rss_mb']:.0f} MB at 100k",
        f"{5_000_000 / large['elapsed']:,.0f}/s",
        f"{large['rss_mb']:.0f} MB",
        growth, 20.0, growth <= 20.0,
    )]


def startup() -> list[Row]:
    """Wall time of ``batchcli exec`` on a one-item job, and of ``batchcli --help``."""
    import tempfile

    env = child_env()

    def wall(*args: str) -> float:
        times = []
        with tempfile.TemporaryDirectory() as out:
            for _ in range(5):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "batchcli", *args], capture_output=True, env=env, cwd=out, check=True)
                times.append(time.perf_counter() - start)
        return min(times)

    exec_s = wall("exec", str(NOOP), "-p", "count=1")
    help_s = wall("--help")
    return [
        ("start-up: exec of a 1-item job", f"{exec_s:.2f} s", "", "", "", exec_s, 0.6, exec_s <= 0.6),
        ("start-up: --help", f"{help_s:.2f} s", "", "", "", help_s, 0.6, help_s <= 0.6),
    ]


def scale_out() -> list[Row]:
    """The process executor vs the async one on a CPU-bound job of a few ms per item."""
    cpu_job = HERE / "cpu_job.py"
    if not cpu_job.exists():
        return [("scale-out (process vs async)", "skipped: no benchmarks/cpu_job.py", "", "", "", 0.0, 1.6, True)]
    n = 2000  # enough that worker start-up does not dominate
    ours_async = measure("batchcli", n, job=cpu_job, executor="async")
    ours_proc = measure("batchcli", n, job=cpu_job, executor="process")
    speedup = ours_async["elapsed"] / ours_proc["elapsed"]
    return [(
        "scale-out (CPU-bound, process vs async)",
        f"{ours_proc['elapsed']:.2f} s",
        f"{ours_async['elapsed']:.2f} s (async)",
        f"{n / ours_proc['elapsed']:,.0f}/s",
        f"{ours_proc['rss_mb']:.0f} MB",
        speedup, 1.6, speedup >= 1.6,
    )]


def shards(n: int = 2000, k: int = 4) -> list[Row]:
    """``exec --shard I/4`` as 4 processes at once vs one run with executor=process and 4 workers, same CPU-bound job.

    Both through the real CLI, wall time from launch to the last exit (start-up and journals included)."""
    import tempfile

    cpu_job = HERE / "cpu_job.py"
    env = child_env()
    base = [sys.executable, "-m", "batchcli", "exec", str(cpu_job), "-p", f"count={n}", "-p", "max_retries=0"]

    def wall(*commands: list[str]) -> float:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            procs = [
                subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=out)
                for c in commands
            ]
            codes = [p.wait() for p in procs]
            elapsed = time.perf_counter() - start
        assert codes == [0] * len(codes), codes
        return elapsed

    # A sync process holds the GIL: one thread per shard is what it can use anyway.
    sharded = min(wall(*[[*base, "-p", "concurrency=1", "--shard", f"{i}/{k}"] for i in range(k)]) for _ in range(2))
    pooled = min(wall([*base, "-p", "executor=process", "-p", f"workers={k}", "-p", f"concurrency={k}"]) for _ in range(2))
    ratio = sharded / pooled
    return [(
        f"shards: {k} processes vs executor=process, {k} workers ({n:,} CPU items)",
        f"{sharded:.2f} s",
        f"{pooled:.2f} s (process)",
        f"{n / sharded:,.0f}/s",
        "",
        ratio, 1.5, ratio <= 1.5,
    )]


def clusters(n: int = 2000, small: int = 20_000, large: int = 100_000) -> list[Row]:
    """Ray against Dask against process, 2 workers each (the run starts its own local Ray or Dask cluster).

    2,000 CPU-bound items of about 5 ms (the run's wall time, the cluster's start included), and the
    per-item overhead on no-op items by slope (20k -> 100k items, timed from the workers being ready: a
    cluster's start varies by seconds, more than the items cost). No target: the figures are reported."""
    cpu_job = HERE / "cpu_job.py"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rows: list[Row] = []
    cpu: dict[str, float] = {}
    for executor in ("process", "dask", "ray"):
        common = {"executor": executor, "workers": "2"}
        cpu[executor] = best(2, lambda: measure("batchcli", n, 2, job=cpu_job, rounds="25000", **common))["elapsed"]
        few = best(2, lambda: measure("after_start", small, **common))
        many = best(2, lambda: measure("after_start", large, **common))
        slope_us = (many["elapsed"] - few["elapsed"]) / (large - small) * 1e6
        rows.append((
            f"{executor}: {n:,} CPU items of ~5 ms; no-op per item (slope {small // 1000}k -> {large // 1000}k)",
            f"{cpu[executor]:.2f} s; {slope_us:.1f} us/item",
            f"{cpu['process']:.2f} s (process)",
            f"{n / cpu[executor]:,.0f}/s; {1e6 / slope_us:,.0f}/s",
            f"{many['rss_mb']:.0f} MB",
            cpu[executor] / cpu["process"], float("inf"), True,
        ))
    return rows


API_JOB = ROOT / "tests" / "projects" / "breaker" / "breaker_job.py"  # the breaker tests' job, measured


class ApiServer:
    """examples/flaky_api/server.py in a process of its own (so it does not share the run's GIL)."""

    def __init__(self, *args: str) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        server = ROOT / "examples" / "flaky_api" / "server.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(server), "--port", str(self.port), "--rate", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "flaky API on ...": it listens

    def stats(self) -> dict[str, Any]:
        """Answers by status, items served, items served more than once."""
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/stats") as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()


def api_run(out: str, *args: str) -> tuple[float, int, dict[str, Any]]:
    """``batchcli ARGS`` as a user runs it: wall time, exit code, and its summary."""
    env = child_env()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "batchcli", *args], capture_output=True, text=True, env=env, cwd=out)
    elapsed = time.perf_counter() - start
    runs = sorted(Path(out).glob("out/*/summary.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(runs[-1].read_text()) if runs else {}
    summary["_run_dir"] = str(runs[-1].parent) if runs else ""
    return elapsed, proc.returncode, summary


def outage() -> list[Row]:
    """A 10 s outage (refused connections) inside a 20,000-item run, against the same run without one."""
    import tempfile

    count, down_s, cooldown_s = 20_000, 10.0, 4.0
    flags = ["-p", f"count={count}", "-p", "concurrency=50", "-p", "max_retries=2", "-p", "backoff_s=0.1",
             "-p", f"breaker_cooldown_s={cooldown_s}"]  # fmt: skip
    with tempfile.TemporaryDirectory() as out, ApiServer() as api:
        calm_s, calm_code, calm = api_run(out, "exec", str(API_JOB), "-d", "out", "-p", f"url={api.url}", *flags)
    with tempfile.TemporaryDirectory() as out, ApiServer("--down-after", "3", "--down-for", str(down_s), "--refuse") as api:
        hit_s, code, summary = api_run(out, "exec", str(API_JOB), "-d", "out", "-p", f"url={api.url}", *flags)
        stats = api.stats()
    extra, allowed = hit_s - calm_s, down_s + 2 * cooldown_s
    breaker = summary.get("breaker") or {}
    ok = calm_code == 0 and code == 0 and summary.get("failed") == 0 and stats["served"] == count and extra <= allowed
    return [(
        f"outage {down_s:g} s in {count:,} items (cool-down {cooldown_s:g} s)",
        f"{hit_s:.1f} s, exit {code}, {summary.get('failed')} failed",
        f"{calm_s:.1f} s without outage",
        f"{breaker.get('trips')} trip(s), {breaker.get('probes')} probe(s)",
        f"served {stats['served']:,} ({stats['twice']} twice)",
        extra, allowed, ok,
    )]


def expired_token() -> list[Row]:
    """Every request 401: the run stops (exit 130) after at most window + concurrency attempts; resume finishes."""
    import tempfile

    count, window, concurrency = 20_000, 100, 10
    flags = ["-p", f"count={count}", "-p", f"concurrency={concurrency}", "-p", f"breaker_window={window}",
             "-p", "breaker_cooldown_s=1", "-p", "breaker_max_wait_s=1"]  # fmt: skip
    with tempfile.TemporaryDirectory() as out, ApiServer() as api:
        stop_s, code, stopped = api_run(out, "exec", str(API_JOB), "-d", "out", "-p", f"url={api.url}", "-p", "token=bad", *flags)
        attempts = api.stats()["statuses"].get("401", 0)
        resume_s, resume_code, resumed = api_run(out, "resume", stopped["_run_dir"], "-p", "token=good")
        stats = api.stats()
    limit = window + concurrency
    ok = code == 130 and resume_code == 0 and resumed.get("failed") == 0 and stats["served"] == count
    return [(
        f"expired token ({count:,} items, window {window}, concurrency {concurrency})",
        f"stopped in {stop_s:.1f} s, exit {code}",
        f"resume: {resume_s:.1f} s, exit {resume_code}, {resumed.get('failed')} failed",
        f"{attempts} attempts before the stop",
        f"served {stats['served']:,} ({stats['twice']} twice)",
        float(attempts), float(limit), ok and attempts <= limit,
    )]


def cli_wall(job: Path, count: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``batchcli exec JOB -p count=N -p max_retries=0 -p breaker_window=0``, the live display drawn to /dev/null."""
    import tempfile

    env = child_env(TTY_COMPATIBLE="1")
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "batchcli", "exec", str(job), "-p", f"count={count}", "-p", "max_retries=0", "-p", "breaker_window=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=out, check=False,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def flood() -> list[Row]:
    """100k items that fail at once vs 100k that succeed, through the real CLI; and the loop thread's cost per failure.

    The CPU times are printed beside the wall times: on a machine shared with other work they say more."""
    n = 100_000
    ok = min((cli_wall(NOOP, n) for _ in range(3)), key=lambda r: r[0])
    failing = min((cli_wall(FAIL, n) for _ in range(3)), key=lambda r: r[0])
    ratio = failing[0] / ok[0]
    loop_us = min(measure("loopcpu", n, job=FAIL)["elapsed"] for _ in range(3)) / n * 1e6
    return [
        (
            "flood: 100k failures vs 100k successes (exec)",
            f"{failing[0]:.2f} s (CPU {failing[1]:.2f} s)",
            f"{ok[0]:.2f} s (CPU {ok[1]:.2f} s)",
            f"{n / failing[0]:,.0f}/s",
            "",
            ratio, 3.0, ratio <= 3.0,
        ),
        ("flood: loop-thread CPU per final failure", f"{loop_us:.1f} us", "", "", "", loop_us, 20.0, loop_us <= 20.0),
    ]


def quota_out() -> list[Row]:
    """The API answers every request "429, Retry-After: 0" for 10 s inside a 20,000-item run (a quota run out, a
    server clock behind ours): the requests it refused in that window, batchcli against a bare pool that takes the
    0 at its word. Neither loses an item; the bare pool asks again at once, every time."""
    count, window = 20_000, 10.0
    args = ("--retry-after", "0", "--quota-after", "2", "--quota-for", str(window))
    seen: dict[str, tuple[float, dict[str, Any]]] = {}
    for impl in ("batchcli", "bare_http"):
        with ApiServer(*args) as api:
            elapsed = measure(impl, count, 100, job=HTTP_JOB, url=api.url)["elapsed"]
            seen[impl] = elapsed, api.stats()
    (ours_s, ours), (bare_s, bare) = seen["batchcli"], seen["bare_http"]
    refused, bare_refused = ours["statuses"].get("429", 0), bare["statuses"].get("429", 0)
    ok = all(stats["served"] == count and stats["twice"] == 0 for stats in (ours, bare))
    return [(
        f"quota out: every request 429 'Retry-After: 0' for {window:g} s in {count:,} items (c=100)",
        f"{refused:,} refused ({refused / window:,.0f}/s), {ours_s:.1f} s",
        f"bare pool {bare_refused:,} refused ({bare_refused / window:,.0f}/s), {bare_s:.1f} s",
        "",
        f"served {ours['served']:,} ({ours['twice']} twice)",
        refused / window, float("inf"), ok,
    )]


def _against_api(impl: str, count: int, rate: float | None, concurrency: int = 100, **extra: str) -> tuple[float, float, float]:
    """Goodput (items/s) of one client on a fresh API process, its share of 429s after the first 5 s, and its
    goodput after the first 5 s (once the rate is found).

    Both goodputs are the server's count: 200s over the time from the first request to the last 200, the same
    yardstick for every client (a client's own timer would also count its start and its shutdown)."""
    rate_args = ("--rate", str(rate)) if rate is not None else ()
    with ApiServer(*rate_args) as api:
        measure(impl, count, concurrency, job=HTTP_JOB, url=api.url, **extra)
        requests = [(t, status) for t, status in api.stats()["requests"]]
    first = min(t for t, _ in requests)
    served_all = [t for t, status in requests if status == 200]
    goodput = len(served_all) / (max(served_all) - first) if len(served_all) > 1 else 0.0
    late = [(t, status) for t, status in requests if t >= first + 5]
    share = sum(1 for _, status in late if status == 429) / max(1, len(late))
    served = [t for t, status in late if status == 200]
    steady = len(served) / (max(served) - first - 5) if len(served) > 1 else 0.0
    return goodput, share, steady


def throttled_api(shares: tuple[float, ...] = (0.5, 0.6), seconds: float = 30.0) -> list[Row]:
    """Throttled API (429 + Retry-After: 1 above R requests/s), concurrency=100: goodput and late 429s, side by side.

    The issue asks for R=500/s, but this machine's httpx client tops out far below that, and a client cannot
    be throttled by a rate it never reaches: R is set to ``shares`` of the client's unthrottled ceiling,
    measured first. The API's token bucket holds R/10 requests (its burst), and a 429 says ``Retry-After: 1``.
    """
    import importlib.util

    ceiling, _, _ = _against_api("bare_http", 4000, None)  # what this machine's httpx client reaches unthrottled
    rows: list[Row] = []
    for share in shares:
        r = round(ceiling * share)
        count = int(r * seconds)
        ours, ours_429, ours_steady = _against_api("batchcli", count, r)
        bare, bare_429, bare_steady = _against_api("bare_http", count, r)
        rows.append((
            f"throttled API (R={r:g}/s = {share:.0%} of the client's ceiling, burst {max(1.0, r / 10):g}, c=100, {count:,} items)",
            f"{ours:,.0f}/s (after 5 s {ours_steady:,.0f}/s), 429s {ours_429:.1%}",
            f"bare pool {bare:,.0f}/s (after 5 s {bare_steady:,.0f}/s), 429s {bare_429:.1%}",
            f"unthrottled ceiling {ceiling:,.0f}/s",
            "",
            ours / r, 0.9, ours / r >= 0.9 and ours_429 <= 0.05,
        ))
        if importlib.util.find_spec("aiometer") is not None:
            meter, meter_429, meter_steady = _against_api("aiometer", count, r)
            rows.append((
                "  aiometer (max_at_once=100)", "", f"{meter:,.0f}/s (after 5 s {meter_steady:,.0f}/s), 429s {meter_429:.1%}",
                "", "", meter / r, 0.0, True,  # no target of its own: printed for comparison
            ))
        else:  # said, not skipped in silence: the issue asks for it beside batchcli
            rows.append(("  aiometer: not installed (pip install -e '.[bench]')", "", "", "", "", 0.0, 0.0, True))
    return rows


def results() -> list[Row]:
    """1M items returning a small dict (kept in the journal) vs the same items returning None, in one run of this script."""
    n = 1_000_000
    none = best(3, lambda: measure("batchcli", n, job=RESULTS_JOB))
    kept = best(3, lambda: measure("batchcli", n, job=RESULTS_JOB, keep="true"))
    ratio = kept["elapsed"] / none["elapsed"]
    extra_mb = kept["rss_mb"] - none["rss_mb"]
    return [
        (
            "results: 1M returning a dict vs None",
            f"{kept['elapsed']:.2f} s",
            f"{none['elapsed']:.2f} s",
            f"{n / kept['elapsed']:,.0f}/s",
            f"{kept['rss_mb']:.0f} MB",
            ratio, 2.0, ratio <= 2.0,
        ),
        ("results: peak RSS over the None run", f"+{extra_mb:.1f} MB", f"{none['rss_mb']:.0f} MB", "", "", extra_mb, 20.0, extra_mb <= 20.0),
    ]


def keyed_resume() -> list[Row]:
    """Peak RSS of resuming a keyed run with 1.5M settled keys (looked up on disk) against one with 100k (in a set),
    and the 1.5M run resumed with its keys in a set, as before the key index."""
    import shutil
    import tempfile

    env = child_env()

    def killed_run(out: Path, count: int, stop_at: int) -> Path:
        subprocess.run(
            [sys.executable, "-m", "batchcli", "exec", str(KEYED_JOB), "-d", str(out), "-p", f"count={count}",
             "-p", f"stop_at={stop_at}"],
            capture_output=True, env=env, check=False,
        )  # fmt: skip
        return next(out.iterdir())

    def resumed(run: Path, held_max: int) -> dict[str, float]:
        copy = run.parent.parent / f"{run.parent.name}-{held_max}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run.parent, copy, ignore=shutil.ignore_patterns("*.sock"))  # the killed run left its socket
        return measure("resume", 0, run_dir=str(copy / run.name), held_max=str(held_max))

    with tempfile.TemporaryDirectory() as tmp:
        large = killed_run(Path(tmp) / "large", 1_600_000, 1_500_000)
        small = killed_run(Path(tmp) / "small", 200_000, 100_000)
        on_disk = resumed(large, 1_000_000)
        in_set = resumed(large, 10**12)
        few = resumed(small, 1_000_000)
    growth = on_disk["rss_mb"] - few["rss_mb"]
    return [
        (
            "keyed resume: ~1.5M settled keys on disk vs 100k",
            f"{on_disk['rss_mb']:.0f} MB, {on_disk['elapsed']:.1f} s",
            f"{few['rss_mb']:.0f} MB (100k)",
            "",
            f"{on_disk['rss_mb']:.0f} MB",
            growth, 20.0, growth <= 20.0,
        ),
        (
            "  the same 1.5M keys held in a set",
            f"{in_set['rss_mb']:.0f} MB, {in_set['elapsed']:.1f} s",
            "", "", f"{in_set['rss_mb']:.0f} MB",
            in_set["rss_mb"] - few["rss_mb"], float("inf"), True,
        ),
    ]


SCENARIOS: dict[str, Callable[[], list[Row]]] = {
    "overhead": overhead,
    "io": io_bound,
    "memory": memory,
    "startup": startup,
    "scaleout": scale_out,
    "shards": shards,
    "clusters": clusters,
    "outage": outage,
    "token": expired_token,
    "flood": flood,
    "throttled": throttled_api,
    "quota": quota_out,
    "results": results,
    "keyed": keyed_resume,
}


def main(names: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"Unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}.", file=sys.stderr)
        return 2
    rows: list[Row] = []
    for name in names or list(SCENARIOS):
        rows += SCENARIOS[name]()
    table = Table(title=f"batchcli vs bare asyncio pool — {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for column in ("scenario", "batchcli", "bare / baseline", "throughput", "peak RSS", "measure", "target", "ok"):
        table.add_column(column)
    for scenario, ours, bare, rate, rss, value, target, ok in rows:
        bound = "≥" if "scale-out" in scenario or "throttled" in scenario else "≤"
        # An indented row is a peer's, printed beside ours: it has no target.
        wanted = "" if scenario.startswith("  ") else "reported" if target == float("inf") else f"{bound} {target}"
        table.add_row(scenario, ours, bare, rate, rss, f"{value:.2f}", wanted, "[green]yes[/]" if ok else "[red]NO[/]")
    Console(width=160).print(table)
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        child(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
