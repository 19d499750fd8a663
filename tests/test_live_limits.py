"""Live controls in the pause shell: bad values are refused in one line, and good ones keep their promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from joblog import JobLog, wait_for
from test_shell import PROMPT, pause, terminal  # noqa: F401  (the fixture)

JOB = "blocking_threads"


def running(lines: list[str]) -> list[int]:
    """The Service's own count of attempts running at once, at each start in ``lines``."""
    return [int(m.group(1)) for line in lines if (m := re.search(r" running=(\d+)", line))]


def threads(lines: list[str]) -> set[str]:
    """The threads (pid/name) that ran attempts in ``lines``."""
    return {m.group(1) for line in lines if (m := re.search(r" thread=(\S+)", line))}


def drained(log: JobLog) -> bool:
    return sorted(log.started()) == sorted(log.done())


BAD_CONCURRENCY = ["2.5", "'5'", "True", "0", "-1", "10**6", "None"]
BAD_RATES = ["0", "-1", "1e-300", "1/86_401", "float('nan')", "float('inf')", "'5'", "True", "10**400"]


def test_bad_limits_are_refused_in_one_line_and_the_run_loses_nothing(terminal) -> None:
    """Each bad concurrency or rate shows one line naming it and the fix; then 10,000 starts only the workers there is work for, and every item is processed."""
    term = terminal(JOB, "-p", "count=40", "-p", "delay=0.3", "-p", "concurrency=4")
    log = term.log
    pause(term, after=4)
    for value in BAD_CONCURRENCY:
        term.run(f"self.set_concurrency({value})", re.escape("Error: concurrency must be") + ".*got " + re.escape(repr(eval(value))))
    for value in BAD_RATES:
        term.run(f"self.set_rate_limit({value})", r"Error: rate_limit must be a positive number .* or None, got ")
    term.run("print('LIMITS', self.stats().concurrency, self.stats().rate_limit)", "LIMITS 4 None")
    term.run("self.set_concurrency(10_000)", "Concurrency is now 10000")
    term.run("exit", "Resuming the run")
    wait_for(lambda: len(set(log.started())) == 40, "every item to start")
    term.child.sendintr()
    term.expect(PROMPT)
    # One worker task per item there was, not 10,000 (a cell that awaits runs on the run's loop).
    term.run("import asyncio", PROMPT)
    term.run("await asyncio.sleep(0); print('TASKS', len(asyncio.all_tasks()))", r"TASKS (\d+)")
    assert int(term.child.match.group(1)) < 100
    term.run("exit", "Resuming the run")
    assert term.exit_code() == 0
    assert "Traceback" not in term.output()
    summary = term.summary()
    assert (summary["status"], summary["succeeded"], summary["failed"]) == ("finished", 40, 0)
    assert sorted(log.done()) == list(range(40))
    assert len(threads(log.lines())) <= 40 + 4  # threads follow the work too


def test_concurrency_for_a_sync_service_adds_and_removes_threads(terminal) -> None:
    """Raised from 2 to 8, the Service sees 8 of its calls run at once; lowered to 1, never more than one."""
    term = terminal(JOB, "-p", "count=60", "-p", "delay=0.02", "-p", "concurrency=2")
    log = term.log
    pause(term, after=6)
    assert max(running(log.lines())) == 2
    term.run("self.set_concurrency(8)", "Concurrency is now 8")
    term.run("exit", "Resuming the run")
    wait_for(lambda: 8 in running(log.lines()), "8 calls running at once")
    pause(term, after=len(log.done()) + 8)
    wait_for(lambda: drained(log), "the in-flight items to finish")
    lowered_at = len(log.lines())
    term.run("self.set_concurrency(1)", "Concurrency is now 1")
    term.run("exit", "Resuming the run")
    assert term.exit_code() == 0
    assert sorted(log.done()) == list(range(60))
    assert set(running(log.lines()[lowered_at:])) == {1}


@pytest.mark.parametrize(("executor", "slots"), [("async", 1), ("process", 2)])
def test_lifting_a_slow_rate_wakes_the_workers_waiting_for_their_slot(terminal, executor: str, slots: int) -> None:
    """set_rate_limit(0.01) leaves workers waiting 100 s for a slot; set_rate_limit(None) lets them start at once."""
    term = terminal(
        JOB, "-p", "count=40", "-p", "delay=0.01", "-p", "concurrency=4", "-p", f"executor={executor}",
        "-p", "workers=2",
    )
    log = term.log
    pause(term, after=5)
    wait_for(lambda: drained(log), "the in-flight items to finish")
    term.run("self.set_rate_limit(0.01)", r"Rate limit is now 0.01/s")
    slowed_at = len(log.started())
    term.run("exit", "Resuming the run")
    wait_for(lambda: len(log.started()) > slowed_at, "the one start the slow rate allows")
    term.child.sendintr()
    term.expect(PROMPT)
    # One start per slot (a worker process takes its share of the rate); the next slot is 100 s or more away.
    assert slowed_at < len(log.started()) <= slowed_at + slots
    term.run("self.set_rate_limit(None)", "Rate limit is now none")
    term.run("exit", "Resuming the run")
    assert term.exit_code() == 0  # long before any 100 s slot: pexpect gives up after 30 s
    assert sorted(log.done()) == list(range(40))
