"""The attempt-duration histogram of /metrics, scraped with a plain HTTP client from real runs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from conftest import PROJECTS, subprocess_env
from joblog import wait_for

FAST_S, SLOW_S = 0.03, 0.6
"""Even items sleep FAST_S, odd ones SLOW_S: on either side of the 0.5 s bucket bound, whatever the load."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_after_the_items(tmp_path: Path, project: str, *params: str) -> tuple[dict[tuple[str, str, str], float], subprocess.CompletedProcess[str]]:
    """Run ``project`` (items of ``FAST_S`` and ``SLOW_S``, the last one failing) headless with metrics on; scrape once every item is
    done and ``finish()`` holds the run open. Returns the histogram's samples by (name, outcome, le) and the run."""
    port, hold = free_port(), tmp_path / "hold"
    run = subprocess.Popen(
        [
            sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "durations" / project), "-d", str(tmp_path / "out"),
            "-p", f"metrics_port={port}", "-p", "max_retries=0", "-p", f"fast_s={FAST_S}", "-p", f"slow_s={SLOW_S}",
            "-p", f"hold={hold}", *params,
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(),
    )
    try:
        wait_for(lambda: hold.with_suffix(".waiting").exists() or run.poll() is not None, "the run's finish()", timeout=60)
        assert run.poll() is None, run.communicate()[0]
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        hold.touch()
        output = run.communicate(timeout=60)[0]
    samples: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if sample.name.startswith("batchcli_attempt_duration_seconds"):
                samples[sample.name, sample.labels["outcome"], sample.labels.get("le", "")] = sample.value
    return samples, subprocess.CompletedProcess(run.args, run.returncode, output)


def assert_timed_attempts(samples: dict[tuple[str, str, str], float], count: int) -> None:
    """``count`` items: the fast half and all slow ones but the last succeeded, that one failed; each in its bucket, and the sums."""
    fast, slow = (count + 1) // 2, count // 2
    name = "batchcli_attempt_duration_seconds"
    ok = {le: value for (n, outcome, le), value in samples.items() if n == f"{name}_bucket" and outcome == "succeeded"}
    failed = {le: value for (n, outcome, le), value in samples.items() if n == f"{name}_bucket" and outcome == "failed"}
    assert ok["0.025"] == 0 and ok["0.5"] == fast and ok["+Inf"] == count - 1, ok  # nothing beats its sleep; the fast ones are fast
    assert failed["0.5"] == 0 and failed["+Inf"] == 1, failed
    assert samples[f"{name}_count", "succeeded", ""] == count - 1 and samples[f"{name}_count", "failed", ""] == 1
    slept = fast * FAST_S + (slow - 1) * SLOW_S
    assert slept <= samples[f"{name}_sum", "succeeded", ""] < slept + 5  # generous: a loaded machine oversleeps
    assert SLOW_S <= samples[f"{name}_sum", "failed", ""] < SLOW_S + 5


def test_async_executor_counts_every_attempt_in_its_bucket(tmp_path: Path) -> None:
    """With metrics on, the async executor times each attempt of an async process() into the histogram, by outcome."""
    samples, run = scrape_after_the_items(tmp_path, "timed_async.py", "-p", "count=8", "-p", "concurrency=8")
    assert run.returncode == 1, run.stdout  # the failed item
    assert_timed_attempts(samples, 8)


def test_process_workers_send_their_timings_back_with_each_chunk(tmp_path: Path) -> None:
    """With executor=process, each worker times its attempts (a sync process() run inline) and the driver's histogram adds them up."""
    samples, run = scrape_after_the_items(
        tmp_path, "timed_sync.py", "-p", "count=4", "-p", "executor=process", "-p", "workers=2", "-p", "concurrency=2",
        "-p", "chunk_size=2",
    )
    assert run.returncode == 1, run.stdout
    assert_timed_attempts(samples, 4)


def test_without_metrics_an_async_attempt_is_process_itself() -> None:
    """Without metrics the success path gets no timing wrapper: the call is ``process`` itself; with them, it is timed."""
    from batchcli.durations import BOUNDS, Durations
    from batchcli.executors.calls import ItemCalls

    async def process(item: int) -> None:
        return None

    assert ItemCalls(process, 1, None).call is process
    durations = Durations()
    timed = ItemCalls(process, 1, None, durations)
    assert timed.call is not process
    asyncio.run(timed.call(1))
    assert sum(durations.counts[0]) == 1 and durations.counts[0][0] == 1  # a no-op is under the first bound
    durations.count(0, BOUNDS[3])  # a bound is inclusive, as Prometheus's ``le``
    assert durations.counts[0][3] == 1
