"""The circuit breaker, through the real CLI against the real flaky API on 127.0.0.1."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import PROJECTS, ROOT, Outcome, newest_run, subprocess_env
from joblog import wait_for

sys.path.insert(0, str(ROOT / "examples" / "flaky_api"))
from server import FlakyApi  # noqa: E402

PROJECT = PROJECTS / "breaker"


@pytest.fixture
def api() -> Any:
    """The flaky API, served from this test process."""
    with FlakyApi() as server:
        yield server


def args(api: FlakyApi, out: Path, **params: object) -> list[str]:
    """``exec`` of the breaker project against ``api`` with a small, fast breaker; ``params`` override."""
    given = {"url": api.url, "breaker_window": 20, "breaker_cooldown_s": 0.2, "max_retries": 0, **params}
    flags = [part for name, value in given.items() for part in ("-p", f"{name}={value}")]
    return [sys.executable, "-m", "batchcli", "exec", str(PROJECT), "-d", str(out), *flags]


def run(cmd: list[str]) -> Outcome:
    out = Path(cmd[cmd.index("-d") + 1]) if "-d" in cmd else None
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=subprocess_env())
    run_dir = newest_run(out) if out is not None else Path(cmd[4])
    return Outcome(proc.returncode, proc.stdout + proc.stderr, run_dir)


def on_a_terminal(api: FlakyApi, out: Path, tmp_path: Path, timeout: float = 30, **params: object) -> Any:
    """``exec`` of the breaker project (``args``) in a pseudo-terminal, where a trip opens the pause shell."""
    return pexpect.spawn(
        sys.executable,
        args(api, out, **params)[1:],
        cwd=str(tmp_path),
        env=subprocess_env(TERM="xterm", IPYTHONDIR=str(tmp_path / "ipython"), PROMPT_TOOLKIT_NO_CPR="1"),
        dimensions=(60, 250),
        encoding="utf-8",
        timeout=timeout,
    )


def every_item_served_once(api: FlakyApi, out: Path, count: int) -> dict[str, Any]:
    """The run in ``out`` succeeded on every item, each served once by ``api``, with no failure left in its journal;
    its summary."""
    run_dir = newest_run(out)
    assert run_dir is not None
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (count, 0), summary
    assert sorted(api.served) == list(range(count)) and set(api.served.values()) == {1}
    assert journal_failures(run_dir) == 0
    return summary


def journal_failures(run_dir: Path) -> int:
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return int(conn.execute("SELECT count(*) FROM failures").fetchone()[0])
    finally:
        conn.close()


def check_invariant(summary: dict[str, Any]) -> None:
    assert summary["succeeded"] + summary["failed"] + summary["unprocessed"] == summary["total"]


def test_outage_opens_probes_closes_and_loses_nothing(api: FlakyApi, tmp_path: Path) -> None:
    """An outage (refused connections) mid-run trips the breaker, which probes, closes, and every item is served once."""
    count = 300
    cmd = args(api, tmp_path / "out", count=count, pause_s=0.01, concurrency=4)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env())
    deadline = time.monotonic() + 60
    while len(api.served) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    api.down(1.0, refuse=True)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    run_dir = newest_run(tmp_path / "out")
    assert run_dir is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (count, 0, 0)
    check_invariant(summary)
    assert summary["breaker"]["trips"] >= 1 and summary["breaker"]["probes"] >= 1
    assert sorted(api.served) == list(range(count)) and set(api.served.values()) == {1}
    assert not (run_dir / "failed.jsonl").exists() or (run_dir / "failed.jsonl").read_text() == ""
    assert journal_failures(run_dir) == 0
    log = (run_dir / "batchcli.log").read_text()
    assert "Circuit breaker open: 10 of the last" in log and "Circuit breaker closed (a probe succeeded)" in log
    # The probes are new items; the held ones go back when one succeeded.
    assert " 0 held item(s)" not in log and re.search(r"closed \(a probe succeeded\): 1\d held item\(s\) go back to be processed", log)
    assert "concurrency back up to 4 of 4" in log  # from 1 after the probe, doubling
    assert re.search(r"breaker closed after \d+ trips?", output), output  # the plain progress line says so


def test_a_probe_on_worker_processes_is_one_item(api: FlakyApi, tmp_path: Path) -> None:
    """With executor=process a probe sent a whole chunk (16-56 items): one failure among its successes reopened the
    breaker, doubling its cool-down on a healthy API until breaker_max_wait_s stopped the run. A probe is one item,
    as on async: with every 10th item invalid, the breaker closes after the outage and the run finishes."""
    count, rejected = 300, set(range(5, 300, 10))
    api.reject = frozenset(rejected)
    cmd = args(api, tmp_path / "out", count=count, pause_s=0.01, concurrency=2, executor="process", workers=2,
               chunk_size=20, breaker_max_wait_s=15)  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env())
    wait_for(lambda: len(api.served) >= 50, "50 items served", timeout=60)
    api.down(1.0, refuse=True)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output  # the invalid items failed; not 130, stopped by the breaker
    summary = json.loads((newest_run(tmp_path / "out") / "summary.json").read_text())  # type: ignore[operator]
    assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (count - len(rejected), len(rejected), 0)
    assert sorted(api.served) == sorted(set(range(count)) - rejected) and set(api.served.values()) == {1}
    assert summary["breaker"]["trips"] >= 1


def test_expired_token_stops_resumably_then_resume_finishes(api: FlakyApi, tmp_path: Path) -> None:
    """A bad token stops the run after at most window + concurrency attempts (exit 130); resume with a good one finishes."""
    stopped = run(args(api, tmp_path / "out", token="bad", concurrency=4, breaker_max_wait_s=0.5))
    assert stopped.exit_code == 130, stopped.output
    assert "circuit breaker stayed open for 0.5s" in stopped.output
    assert f"batchcli resume {stopped.run_dir}" in " ".join(stopped.output.split())
    assert api.statuses[401] <= 20 + 4
    summary = stopped.summary
    assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (0, 0, 200)
    assert stopped.failed == [] and journal_failures(stopped.run_dir) == 0
    assert summary["breaker"]["trips"] == 1 and summary["breaker"]["probes"] >= 1

    resumed = run([sys.executable, "-m", "batchcli", "resume", str(stopped.run_dir), "-p", "token=good"])
    assert resumed.exit_code == 0, resumed.output
    summary = resumed.summary
    assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (200, 0, 0)
    check_invariant(summary)
    assert sorted(api.served) == list(range(200)) and set(api.served.values()) == {1}
    assert summary["breaker"]["trips"] == 1  # the first session's, carried over
    # Summed over the sessions, the counts stay whole numbers (they were written as 1.0 after a resume).
    assert {name: type(value) for name, value in summary["breaker"].items()} == {
        "trips": int, "probes": int, "cooldowns": int, "open_s": float}  # fmt: skip

    shown = run([sys.executable, "-m", "batchcli", "show", str(stopped.run_dir)])
    assert "breaker" in shown.output and "opened 1 time," in shown.output


def test_a_damaged_breaker_count_of_an_earlier_session_counts_nothing(api: FlakyApi, tmp_path: Path) -> None:
    """Counts summed over the sessions are whole numbers now; one that is not a finite number (a damaged journal:
    Infinity, NaN) would have made that int() raise while the resume wrote its summary. It counts nothing."""
    stopped = run(args(api, tmp_path / "out", token="bad", concurrency=4, breaker_max_wait_s=0.5))
    assert stopped.exit_code == 130, stopped.output
    conn = sqlite3.connect(stopped.run_dir / "journal.sqlite")
    try:
        for rowid, text in conn.execute("SELECT rowid, state FROM live").fetchall():
            state = json.loads(text)
            state["breaker_counts"].update(trips=float("inf"), probes=float("nan"))
            conn.execute("UPDATE live SET state = ? WHERE rowid = ?", (json.dumps(state), rowid))
        conn.commit()
    finally:
        conn.close()
    resumed = run([sys.executable, "-m", "batchcli", "resume", str(stopped.run_dir), "-p", "token=good"])
    assert resumed.exit_code == 0, resumed.output
    assert (resumed.summary["succeeded"], resumed.summary["breaker"]["trips"], resumed.summary["breaker"]["probes"]) == (200, 0, 0)


def killed_while_open(api: FlakyApi, out: Path) -> Path:
    """A run of a bad token killed with SIGKILL once its breaker tripped and stayed open a second, and its journal
    says so; its run directory (no summary.json)."""
    proc = subprocess.Popen(args(api, out, token="bad", concurrency=4, breaker_max_wait_s=600, breaker_cooldown_s=60),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())  # fmt: skip
    try:
        def tripped() -> bool:
            journals = list(out.glob("*/journal.sqlite"))
            if not journals:
                return False
            conn = sqlite3.connect(journals[0])
            try:
                states = [json.loads(state) for (state,) in conn.execute("SELECT state FROM live")]
            except sqlite3.Error:
                return False
            finally:
                conn.close()
            # Its open time too, though the episode goes on: the killed session's open_s was lost (0.0 after resume).
            return any((state.get("breaker_counts") or {}).get("trips") == 1 and state["breaker_counts"]["open_s"] >= 1.0
                       for state in states)  # fmt: skip

        wait_for(tripped, "the breaker to trip and stay open a second, and the journal to say so")
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = [journal.parent for journal in out.glob("*/journal.sqlite")]
    assert not (run_dir / "summary.json").exists()
    return run_dir


def test_a_trip_in_a_session_killed_before_its_summary_still_counts(api: FlakyApi, tmp_path: Path) -> None:
    """The run's breaker counts were summed from the last summary.json, which a session killed with SIGKILL never
    wrote: its trips vanished from summary.json and show after the resume. Each session's live state keeps them."""
    run_dir = killed_while_open(api, tmp_path / "out")
    # Retries for the resume: under load it once ended with 3 items failed (exit 1), max_retries=0 making any passing
    # error final; what this test is about is the breaker counts.
    resumed = run([sys.executable, "-m", "batchcli", "resume", str(run_dir), "-p", "token=good", "-p", "max_retries=2",
                   "-p", "backoff_s=0"])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert resumed.summary["breaker"]["trips"] == 1 and resumed.summary["breaker"]["open_s"] >= 1.0
    assert "opened 1 time," in run([sys.executable, "-m", "batchcli", "show", str(run_dir)]).output


def test_show_of_a_run_killed_while_the_breaker_was_open_has_its_breaker_line(api: FlakyApi, tmp_path: Path) -> None:
    """show read the breaker's counts from summary.json alone, which a session killed with SIGKILL never wrote: the
    crashed run had no breaker line though its journal holds the trip. It shows what the last flush knew."""
    run_dir = killed_while_open(api, tmp_path / "out")
    shown = run([sys.executable, "-m", "batchcli", "show", str(run_dir)])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "status crashed" in text
    found = re.search(r"breaker opened 1 time, \d+ probes?, \d+ cool-downs?, open for 0:00:(\d\d)", text)
    assert found is not None and int(found.group(1)) >= 1, shown.output


@pytest.mark.parametrize("stop", ["gives up", "SIGTERM"])
def test_items_failing_after_a_stop_while_the_breaker_is_open_are_not_final(
    api: FlakyApi, tmp_path: Path, stop: str
) -> None:
    """Items in flight when the breaker opened, failing only after the run began to stop (the breaker gave up, or
    SIGTERM), became final failures: the stop had ended the breaker, which then ignored them. They are taken back
    as the window's failures are, left unprocessed for the resume."""
    out = tmp_path / "out"
    # Odd items fail at once and trip the breaker while the slow even items are still in flight.
    params: dict[str, object] = {"token": "bad", "count": 60, "concurrency": 8, "breaker_window": 10, "even_pause_s": 1.5}
    if stop == "gives up":
        params.update(breaker_max_wait_s=0.1, breaker_cooldown_s=0.1)
    else:
        params.update(breaker_max_wait_s=600, breaker_cooldown_s=60)
    proc = subprocess.Popen(args(api, out, **params), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=subprocess_env())  # fmt: skip
    try:
        if stop == "SIGTERM":
            def tripped() -> bool:
                logs = list(out.glob("*/batchcli.log"))
                return bool(logs) and "Circuit breaker open" in logs[0].read_text()

            wait_for(tripped, "the breaker to open")
            proc.terminate()
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    run_dir = newest_run(out)
    assert run_dir is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (0, 0, 60), output
    assert journal_failures(run_dir) == 0
    assert not (run_dir / "failed.jsonl").exists() or (run_dir / "failed.jsonl").read_text() == ""

    resumed = run([sys.executable, "-m", "batchcli", "resume", str(run_dir), "-p", "token=good", "-p", "even_pause_s=0"])
    assert resumed.exit_code == 0, resumed.output
    assert (resumed.summary["succeeded"], resumed.summary["failed"], resumed.summary["unprocessed"]) == (60, 0, 0)
    assert sorted(api.served) == list(range(60)) and set(api.served.values()) == {1}


def test_expired_token_with_worker_processes_stops_within_the_window(api: FlakyApi, tmp_path: Path) -> None:
    """With executor=process, chunks already sent stop early: a bad token costs about a window of attempts, not chunks."""
    stopped = run(args(api, tmp_path / "out", token="bad", concurrency=4, breaker_max_wait_s=0.5, executor="process", workers=2))
    assert stopped.exit_code == 130, stopped.output
    assert api.statuses[401] <= 30  # window 20 + concurrency 4, and a probe or two (it was about 70, and 127)
    summary = stopped.summary
    assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (0, 0, 200)
    assert stopped.failed == [] and journal_failures(stopped.run_dir) == 0


def test_plain_progress_line_shows_the_open_breaker_and_its_probe_countdown(api: FlakyApi, tmp_path: Path) -> None:
    """Without a terminal the progress line says the breaker is open and when it probes next."""
    stopped = run(args(api, tmp_path / "out", token="bad", count=40, breaker_window=10, breaker_cooldown_s=1,
                       breaker_max_wait_s=1.5))
    assert stopped.exit_code == 130, stopped.output
    lines = [line for line in stopped.output.splitlines() if line.startswith("0/40")]
    assert any(line.endswith("breaker open: probe in 1s") for line in lines), lines
    assert lines[-1].endswith("breaker open"), lines  # no probe left before breaker_max_wait_s: it gives up
    # After a probe the breaker holds the concurrency at 1: its cap, not a throttle's cut (no 429 here).
    held = [line for line in lines if "concurrency 1 " in line]
    assert held and all("concurrency 1 (held by the breaker)" in line for line in held), lines
    assert not any("(adapting)" in line for line in lines), lines


def test_watch_says_the_breaker_holds_the_concurrency_not_adaptive_concurrency(api: FlakyApi, tmp_path: Path) -> None:
    """watch on a live run whose breaker probes: the concurrency below the configured one is the breaker's cap."""
    cmd = args(api, tmp_path / "out", token="bad", count=60, concurrency=4, breaker_window=10, breaker_cooldown_s=0.2,
               breaker_max_wait_s=60)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    try:
        frames: list[str] = []

        def held() -> bool:
            journals = list((tmp_path / "out").glob("*/journal.sqlite"))  # no summary.json while it runs
            if not journals:
                return False
            run_dir = journals[0].parent
            watched = subprocess.run([sys.executable, "-m", "batchcli", "watch", str(run_dir), "--once"],
                                     capture_output=True, text=True, timeout=60, env=subprocess_env())
            frames.append(watched.stdout)
            return "concurrency 1 of 4" in watched.stdout

        wait_for(held, "watch to show the breaker's cap", timeout=60)
        assert "concurrency 1 of 4 (held by the breaker)" in frames[-1], frames[-1]  # it said "(adapting)"
        # A new ceiling is not what is in force while the breaker holds it: the reply says so ("is now 3" alone read
        # as a command that did nothing).
        run_dir = next((tmp_path / "out").glob("*/journal.sqlite")).parent
        set_to = subprocess.run([sys.executable, "-m", "batchcli", "ctl", str(run_dir), "set", "concurrency=3"],
                                capture_output=True, text=True, timeout=60, env=subprocess_env())  # fmt: skip
        said = " ".join(set_to.stdout.split())
        assert set_to.returncode == 0, set_to.stderr
        assert "Concurrency is now 3. In force now: 1 (the circuit breaker holds it); it grows back toward 3." in said, said
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_ctl_set_on_an_open_breaker_says_nothing_starts_until_it_closes(api: FlakyApi, tmp_path: Path) -> None:
    """``ctl set concurrency=50`` while the breaker is open (its probe a minute away) answered "Concurrency is now 50."
    and nothing more, though no item starts until the breaker closes."""
    cmd = args(api, tmp_path / "out", token="bad", count=60, concurrency=4, breaker_window=10, breaker_cooldown_s=120,
               breaker_max_wait_s=600)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    try:
        def ctl(*command: str) -> subprocess.CompletedProcess[str]:
            run_dir = next((tmp_path / "out").glob("*/journal.sqlite")).parent
            return subprocess.run([sys.executable, "-m", "batchcli", "ctl", str(run_dir), *command],
                                  capture_output=True, text=True, timeout=60, env=subprocess_env())  # fmt: skip

        def opened() -> bool:
            if not list((tmp_path / "out").glob("*/journal.sqlite")):
                return False
            return "\n  breaker: open\n" in ctl("stats").stdout

        wait_for(opened, "the breaker to open", timeout=60)
        for setting, said in (("concurrency=50", "Concurrency is now 50."), ("rate_limit=20", "Rate limit is now 20/s.")):
            answer = ctl("set", setting)
            assert answer.returncode == 0, answer.stderr
            reply = " ".join(answer.stdout.split())
            assert reply.startswith(said), reply
            assert "The circuit breaker is open, though: no item starts until it closes" in reply, reply
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_failures_already_journaled_are_taken_back(api: FlakyApi, tmp_path: Path) -> None:
    """Failures written to the journal and failed.jsonl before the trip leave both when the breaker takes them back."""
    # 0.2 s an item: some five flushes (every 0.2 s) before the trip, so one lands even on a loaded machine.
    stopped = run(args(api, tmp_path / "out", token="bad", count=50, pause_s=0.2, concurrency=2, breaker_max_wait_s=0.3))
    assert stopped.exit_code == 130, stopped.output
    conn = sqlite3.connect(stopped.run_dir / "journal.sqlite")
    try:
        journaled = conn.execute("SELECT sum(failed) FROM timeline").fetchone()[0]
        counts = conn.execute("SELECT succeeded, failed FROM run").fetchone()
    finally:
        conn.close()
    assert journaled >= 1  # some failures were committed by a flush before the trip took them back
    assert counts == (0, 0) and journal_failures(stopped.run_dir) == 0 and stopped.failed == []
    summary = stopped.summary
    assert (summary["failed"], summary["unprocessed"]) == (0, 50)

    resumed = run([sys.executable, "-m", "batchcli", "resume", str(stopped.run_dir), "-p", "token=good", "-p", "pause_s=0"])
    assert resumed.exit_code == 0, resumed.output
    assert (resumed.summary["succeeded"], resumed.summary["failed"]) == (50, 0)
    assert sorted(api.served) == list(range(50)) and set(api.served.values()) == {1}


def test_show_charts_no_failed_rate_for_failures_the_breaker_took_back(api: FlakyApi, tmp_path: Path) -> None:
    """show's chart drew a failed rate from failures journaled before a trip, which the breaker took back and which
    then succeeded: "0 failed" and "No failures." beside a failed peak. It charts final failures only."""
    stopped = run(args(api, tmp_path / "out", token="bad", count=50, pause_s=0.2, concurrency=2, breaker_max_wait_s=0.3))
    assert stopped.exit_code == 130, stopped.output
    conn = sqlite3.connect(stopped.run_dir / "journal.sqlite")
    try:
        assert conn.execute("SELECT sum(failed) FROM timeline").fetchone()[0] >= 1  # journaled before the trip
    finally:
        conn.close()
    resumed = run([sys.executable, "-m", "batchcli", "resume", str(stopped.run_dir), "-p", "token=good", "-p", "pause_s=0"])
    assert resumed.exit_code == 0, resumed.output

    shown = run([sys.executable, "-m", "batchcli", "show", str(stopped.run_dir)])
    assert shown.exit_code == 0, shown.output
    assert "50 succeeded, 0 failed" in shown.output and "No failures." in shown.output
    (ok,) = [line for line in shown.output.splitlines() if line.startswith("ok ")]
    (failed,) = [line for line in shown.output.splitlines() if line.startswith("failed ")]
    assert re.search("[▁▂▃▄▅▆▇█]", ok), shown.output
    assert not re.search("[▁▂▃▄▅▆▇█]", failed) and failed.endswith("peak 0.0/s"), shown.output


def test_probe_failures_double_the_cooldown_until_max_wait(api: FlakyApi, tmp_path: Path) -> None:
    """While the cause stays, each failed probe re-opens the breaker with a doubled cool-down, then the run stops; the
    last probe comes a base cool-down before the max wait (the run gave up when the next cool-down would not end in
    time, saying the cause had not gone away with nothing tried since)."""
    stopped = run(args(api, tmp_path / "out", token="bad", breaker_cooldown_s=0.1, breaker_max_wait_s=1.4))
    assert stopped.exit_code == 130, stopped.output
    log = (stopped.run_dir / "batchcli.log").read_text()
    # 0.1 s, then 0.2 s, then 0.4 s: the next (0.8 s) would end past the 1.4 s allowed (0.7 s of cool-downs and the
    # probes' time), so the last probe waits what is left but 0.1 s.
    assert "cooling down for 0.1s" in log and "cooling down for 0.2s" in log and "cooling down for 0.4s" in log
    assert "cooling down for 0.8s" not in log
    last = [float(s) for s in re.findall(r"cooling down for ([\d.]+)s", log)][3:]
    assert len(last) == 1 and 0 <= last[0] < 0.7, log
    counts = stopped.summary["breaker"]
    assert (counts["trips"], counts["probes"], counts["cooldowns"]) == (1, 4, 4)
    assert "stayed open for 1.4s (breaker_max_wait_s)" in stopped.output


def test_window_zero_turns_the_breaker_off(api: FlakyApi, tmp_path: Path) -> None:
    """With breaker_window=0 every item fails as it always did: exit 1, all recorded in failed.jsonl and the journal."""
    done = run(args(api, tmp_path / "out", token="bad", count=40, breaker_window=0))
    assert done.exit_code == 1, done.output
    assert (done.summary["failed"], done.summary["breaker"]) == (40, None)
    assert len(done.failed) == 40 and journal_failures(done.run_dir) == 40
    assert "Circuit breaker" not in done.output


def test_scattered_failures_do_not_trip(api: FlakyApi, tmp_path: Path) -> None:
    """A failure share below breaker_failure_rate leaves the breaker closed and the failures final."""
    done = run(args(api, tmp_path / "out", token="bad", count=8, breaker_window=20))
    assert done.exit_code == 1, done.output
    assert done.summary["failed"] == 8 and done.summary["breaker"]["trips"] == 0
    assert len(done.failed) == 8 and journal_failures(done.run_dir) == 8


@pytest.mark.parametrize(
    ("field", "value", "fix"),
    [
        ("breaker_window", "-1", "or 0 to turn it off"),
        ("breaker_failure_rate", "1.5", "above 0 and at most 1"),
        ("breaker_cooldown_s", "0", "breaker_cooldown_s=30"),
        ("breaker_max_wait_s", "inf", "breaker_max_wait_s=30"),
        ("breaker_cooldown_s", "1e300", "at most 31,536,000 (a year)"),  # its countdown was printed in 300 digits
    ],
)
def test_bad_breaker_settings_are_refused(api: FlakyApi, tmp_path: Path, field: str, value: str, fix: str) -> None:
    """A bad breaker setting is exit 2 with one paragraph naming the value and the fix, before any run starts."""
    done = run(args(api, tmp_path / "out", **{field: value}))
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert f"{field} must be" in text and fix in text
    assert done.run_dir is None


def test_trip_on_a_terminal_opens_the_pause_shell_with_the_reason(api: FlakyApi, tmp_path: Path) -> None:
    """On a terminal the breaker opens the pause shell with the reason; a new token on the live service finishes the run."""
    out = tmp_path / "out"
    child = on_a_terminal(api, out, tmp_path, token="bad", count=100, breaker_window=10)
    try:
        child.expect("circuit breaker open: run paused")
        child.expect(r"5 of the last 5 items failed: httpx.HTTPStatusError: Client error '401 Unauthorized'")
        child.expect(r"In \[")
        child.sendline("print('BREAKER', self.stats().breaker)")
        child.expect("BREAKER open")
        child.expect(r"In \[")
        child.sendline("service.token = 'good'")
        child.expect(r"In \[")
        child.sendline("exit")
        child.expect("Resuming the run.")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    summary = every_item_served_once(api, out, 100)
    assert summary["breaker"]["trips"] == 1 and summary["breaker"]["probes"] == 0


def test_leaving_the_breakers_shell_before_the_fix_works_leaves_its_items_to_be_processed_again(api: FlakyApi, tmp_path: Path) -> None:
    """The user leaves the breaker's shell without a working fix: the held items fail again as before. They were made
    final (no probe had succeeded), so the next trip showed them as failures and the real fix never redid them
    (exit 1). Now they count as the service's failures, trip the breaker again, and go back once more."""
    out = tmp_path / "out"
    child = on_a_terminal(api, out, tmp_path, token="bad", count=100, breaker_window=10, concurrency=5)
    try:
        child.expect("circuit breaker open: run paused")
        child.expect(r"In \[")
        child.sendline("exit")  # no fix yet
        child.expect("Resuming the run.")
        child.expect("circuit breaker open: run paused")  # the held items failed again: the service's failures
        child.expect(r"In \[")
        child.sendline("print('FAILED', len(failures))")
        child.expect(r"FAILED (\d+)")
        assert child.match.group(1) == "0"  # the held items are not final failures
        child.expect(r"In \[")
        child.sendline("service.token = 'good'")
        child.expect(r"In \[")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert every_item_served_once(api, out, 100)["breaker"]["trips"] == 2


def test_the_breakers_shell_on_worker_processes_does_not_advise_a_fix_that_cannot_reach_them(api: FlakyApi, tmp_path: Path) -> None:
    """With executor=process the banner said "Fix the cause on the live objects (e.g. service.token = ...)": the
    workers have Services of their own, so the fix reached none and the breaker tripped again."""
    out = tmp_path / "out"
    child = on_a_terminal(api, out, tmp_path, timeout=60, token="bad", count=40, breaker_window=10, executor="process", workers=1)
    try:
        child.expect("circuit breaker open: run paused")
        child.expect("have Services of their own")
        banner = child.before
        child.expect(r"In \[")
        child.sendline("self.stop()")
        child.expect(r"In \[")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert "service.token = ..." not in banner + child.before
    assert child.exitstatus == 130


def test_the_breaker_gives_back_the_users_concurrency_not_its_own(api: FlakyApi, tmp_path: Path) -> None:
    """The breaker set the concurrency through the user's own setter: resumed by `ctl resume` after a failed probe,
    the run stayed at the probe's 1 for good; and a `ctl set concurrency=2` made while it was open was grown back
    over, to the 8 it had before the trip."""
    out = tmp_path / "out"
    cmd = args(api, out, concurrency=8, count=100_000, pause_s=0.01, breaker_cooldown_s=0.5, breaker_max_wait_s=600)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())

    def ctl(*words: str) -> str:
        done = subprocess.run([sys.executable, "-m", "batchcli", "ctl", str(run_dir), *words], capture_output=True,
                              text=True, timeout=60, env=subprocess_env())  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def logged(text: str, after: int = 0) -> bool:
        return text in (run_dir / "batchcli.log").read_text()[after:]

    def concurrency() -> int:
        return int(ctl("stats").split("concurrency: ")[1].split()[0])

    try:
        wait_for(lambda: any(out.glob("*/control.sock")), "the run's control socket")
        run_dir = next(out.glob("*/control.sock")).parent
        wait_for(lambda: len(api.served) > 50, "some items served")
        api.token = "expired"  # every request is answered 401 from now on
        wait_for(lambda: logged("the probe failed"), "a failed probe")
        assert re.search(r"^  breaker: (open|probing)$", ctl("stats"), re.M)
        api.token = "good"
        ctl("resume")  # as leaving the pause shell: the breaker closes now
        assert concurrency() == 8
        assert "\n  breaker: closed\n" in ctl("stats")

        mark = len((run_dir / "batchcli.log").read_text())
        api.token = "expired"
        wait_for(lambda: logged("the probe failed", mark), "a failed probe after the second trip")
        ctl("set", "concurrency=2")
        api.token = "good"
        wait_for(lambda: logged("Circuit breaker: concurrency back up to 2 of 2.", mark), "the growth back to 2")
        assert concurrency() == 2
        assert not logged(" of 8.", mark)
        ctl("stop")
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_retry_of_items_failing_as_before_does_not_trip_the_breaker(api: FlakyApi, tmp_path: Path) -> None:
    """Every retried item failing as it did before (bad records, a token still bad) says the items are bad, not that
    the API went down: the retry settled them in a moment. It tripped the breaker, which probed the same bad items
    until breaker_max_wait_s (an hour by default) and stopped the retry with nothing done. A failure unlike the
    item's earlier one still counts, and a resumed retry knows the earlier failures too."""
    out = tmp_path / "out"
    first = run(args(api, out, token="bad", count=40, breaker_window=0))
    assert (first.exit_code, first.summary["failed"]) == (1, 40), first.output
    assert first.run_dir is not None
    retry = [sys.executable, "-m", "batchcli", "retry", str(first.run_dir), "-p", "breaker_window=20",
             "-p", "breaker_max_wait_s=3"]  # fmt: skip

    again = run(retry)
    again_dir = newest_run(out)
    assert again_dir not in (None, first.run_dir)
    again = Outcome(again.exit_code, again.output, again_dir)
    assert again.exit_code == 1, again.output
    assert (again.summary["failed"], again.summary["unprocessed"], again.summary["breaker"]["trips"]) == (40, 0, 0)
    assert len(again.failed) == 40 and {f["error_type"] for f in again.failed} == {"httpx.HTTPStatusError"}
    assert "Circuit breaker" not in again.output

    # The API gone (nothing listens on the port): a refused connection is not how these items failed.
    other = run([*retry, "-p", "url=http://127.0.0.1:9"])
    other_dir = newest_run(out)
    assert other_dir not in (None, first.run_dir, again_dir)
    other = Outcome(other.exit_code, other.output, other_dir)
    assert other.exit_code == 130, other.output
    assert other.summary["breaker"]["trips"] == 1 and other.summary["unprocessed"] > 0
    assert "circuit breaker stayed open for 3s" in other.output

    # Its resume knows how its inputs failed before, as the retry did: the API back, the token still bad.
    resumed = run([sys.executable, "-m", "batchcli", "resume", str(other_dir), "-p", f"url={api.url}"])
    assert resumed.exit_code == 1, resumed.output
    assert (resumed.summary["failed"], resumed.summary["unprocessed"]) == (40, 0)
    assert resumed.summary["breaker"]["trips"] == 1  # the stopped session's, none of its own


def test_bad_records_settling_before_a_slow_api_answers_do_not_stop_the_run(tmp_path: Path) -> None:
    """A healthy but slow API with a minority of bad records: the 422s settle at once, before any slow success,
    and trip the breaker. Its probes were the held bad records, which failed, and after a probe that succeeded
    they failed again in a row and tripped it again: the run stopped (exit 130), "the cause did not go away". Now a
    probe is a new item, and a held record failing again as it did is final, not counted again.

    The source ends with 60 good records: a trip among its last items, with nothing new left to probe with, has
    only held records to probe and stops the run by design, which a loaded machine made happen now and then (the
    resume then makes them final: test_bad_records_at_the_end_of_the_source_do_not_hold_every_resume)."""
    count = 200
    bad = {n for n in range(count - 60) if n % 10 in (1, 3, 5, 7)}  # 40%, all odd: fast; every even item takes 0.2 s
    with FlakyApi(reject=bad) as api:
        done = run(args(api, tmp_path / "out", count=count, even_pause_s=0.2, concurrency=40, breaker_max_wait_s=30))
    assert done.exit_code == 1, done.output
    assert (done.summary["succeeded"], done.summary["failed"], done.summary["unprocessed"]) == (count - len(bad), len(bad), 0)
    assert sorted(api.served) == sorted(set(range(count)) - bad) and set(api.served.values()) == {1}
    assert {f["ordinal"] for f in done.failed} == bad and journal_failures(done.run_dir) == len(bad)


def test_an_outage_answered_with_bare_503s_trips_the_breaker(tmp_path: Path) -> None:
    """A 503 without Retry-After (a load balancer with nothing behind it) was read as a throttle: no item ever
    failed, the breaker never opened, and the run made about a request a minute for as long as the outage lasted.
    It is an ordinary failure now: the breaker opens within its window and the run stops as documented."""
    with FlakyApi(down_retry_after=False) as api:
        api.down(600)
        stopped = run(args(api, tmp_path / "out", count=100, concurrency=4, breaker_max_wait_s=0.5))
    assert stopped.exit_code == 130, stopped.output
    assert "circuit breaker stayed open for 0.5s" in stopped.output
    assert stopped.summary["breaker"]["trips"] == 1 and stopped.summary["unprocessed"] == 100
    assert api.statuses[503] <= 20 + 4 + 3  # the window, the items in flight, a few probes


def log_time(line: str) -> float:
    """The time a ``batchcli.log`` line was written (local time, to the millisecond)."""
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def test_items_in_flight_when_the_breaker_opens_are_no_probe(api: FlakyApi, tmp_path: Path) -> None:
    """Every 10th item works 1.5 s more once the API answered it. An outage trips the breaker while such items run;
    one of them succeeding counted as the probe: the breaker closed with the API still down, and the held items,
    failing again as before, were final (exit 1). The probe waits for them, and is a new item."""
    count = 200
    cmd = args(api, tmp_path / "out", count=count, concurrency=8, breaker_cooldown_s=0.3, slow_every=10, slow_s=1.5)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env())
    deadline = time.monotonic() + 60
    while len(api.served) < 45 and time.monotonic() < deadline:
        time.sleep(0.005)
    api.down(3.0, refuse=True)
    back = time.time() + 3.0
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    summary = every_item_served_once(api, tmp_path / "out", count)
    assert summary["breaker"]["trips"] >= 1
    run_dir = newest_run(tmp_path / "out")
    assert run_dir is not None
    closed = [line for line in (run_dir / "batchcli.log").read_text().splitlines() if "Circuit breaker closed" in line]
    assert closed and all(log_time(line) >= back - 0.1 for line in closed), (back, closed)


def test_a_hanging_probe_does_not_outlast_breaker_max_wait(api: FlakyApi, tmp_path: Path) -> None:
    """The probe's call hangs (no client timeout, no item_timeout_s): the run probed for as long as it hung. Open,
    probing included, for breaker_max_wait_s, it stops, resumable, and the resume finishes."""
    started = time.monotonic()
    stopped = run(args(api, tmp_path / "out", token="bad", count=40, concurrency=1, breaker_window=10,
                       breaker_cooldown_s=0.2, breaker_max_wait_s=1.5, hang_after=5, hang_s=60, stop_timeout_s=1))
    assert stopped.exit_code == 130, stopped.output
    assert time.monotonic() - started < 30, "the run waited for the hanging probe"
    assert "The circuit breaker stayed open for 1.5s (breaker_max_wait_s)" in " ".join(stopped.output.split())
    summary = json.loads((stopped.run_dir / "summary.json").read_text())
    check_invariant(summary)
    assert summary["failed"] == 0 and summary["breaker"]["probes"] >= 1
    resumed = run([sys.executable, "-m", "batchcli", "resume", str(stopped.run_dir), "-p", "token=good", "-p", "hang_after=0"])
    assert resumed.exit_code == 0, resumed.output
    every_item_served_once(api, tmp_path / "out", 40)


def test_a_cool_down_longer_than_the_max_wait_is_refused(api: FlakyApi, tmp_path: Path) -> None:
    """The run would stop before its first probe: refused before it starts, saying both values."""
    done = run(args(api, tmp_path / "out", breaker_cooldown_s=120, breaker_max_wait_s=60))
    assert done.exit_code == 2, done.output
    said = " ".join(done.output.split())
    assert "breaker_cooldown_s (120) is longer than breaker_max_wait_s (60)" in said, said
    assert "Traceback" not in done.output and not (tmp_path / "out").exists()


def test_failures_the_breaker_takes_back_are_in_the_log_and_the_rate_never_goes_negative(
    api: FlakyApi, tmp_path: Path
) -> None:
    """The taken-back failures were in batchcli.log only when the recorder had flushed them before the trip, though
    the console printed them; and the plain progress line's rate went negative as the settled count fell."""
    env = subprocess_env(BATCHCLI_PROGRESS_INTERVAL="0.1")
    cmd = args(api, tmp_path / "out", token="bad", count=100, concurrency=4, breaker_window=40, breaker_cooldown_s=0.5,
               breaker_max_wait_s=1.5)  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    run_dir = newest_run(tmp_path / "out")
    assert run_dir is not None
    log = (run_dir / "batchcli.log").read_text()
    trip = re.search(r"Circuit breaker open: .*? will be processed again \((#\d+(?:, #\d+)*)(?: and [\d,]+ more)?: their "
                     r"failures are in this log, not in failed.jsonl\)", log)  # fmt: skip
    assert trip, log
    taken = {int(n) for n in re.findall(r"#(\d+)", trip.group(1))}
    logged = {int(n) for n in re.findall(r"batchcli.failures: Item #(\d+) ", log)}
    assert taken and taken <= logged, (taken, logged)
    rates = re.findall(r"in flight \d+\s+(-?[\d.,]+)/s", proc.stdout + proc.stderr)
    assert rates and all(not rate.startswith("-") for rate in rates), rates


class Held:
    """The breaker's host and a retry scheduler's hold, kept to what the breaker calls: it records, nothing runs."""

    def __init__(self) -> None:
        self.executor = self
        self.held: list[int] = []
        self.released: list[int] = []
        self.effective_concurrency = 4

    def hold_concurrency(self, concurrency: int | None) -> None:
        pass

    def breaker_changed(self) -> None:
        pass

    def breaker_tripped(self, reason: str) -> bool:
        return False  # no terminal: the breaker probes

    def breaker_gave_up(self, message: str) -> None:
        raise AssertionError(message)

    def hold(self, ordinal: int) -> Any:
        def take() -> Any:
            self.held.append(ordinal)

            def release() -> int:
                count = len(self.held)
                self.released += self.held
                self.held.clear()
                return count

            return release

        return take


def test_a_flapping_api_does_not_make_the_held_items_final() -> None:
    """A probe succeeds (the API answers once), the held items go back and fail as before because the API is down
    again: they were final at once, as bad records, while new items failing the same way were taken back. A trip
    before a window's worth of items succeeded since takes them back too."""
    import asyncio

    from batchcli.load.configuration import Configuration
    from batchcli.outcome import Failure, Tally
    from batchcli.run.breaker import Breaker

    loop = asyncio.new_event_loop()
    try:
        tally, host = Tally(), Held()
        breaker = Breaker(Configuration(breaker_window=10, breaker_cooldown_s=1), tally, host, loop)
        tally.watch = breaker.watch

        def fail(ordinal: int) -> None:
            failure = Failure(ordinal, ordinal, "job.ApiError", f"HTTP 503 for item {ordinal}: down", "", 1, 0.0, 0.0)
            tally.fail(failure)
            breaker.watch(failure, host.hold(ordinal))

        for ordinal in range(5):  # the outage: 5 of the last 10 settled failed
            fail(ordinal)
        assert breaker.state == "open" and tally.failed == 0 and host.held == [0, 1, 2, 3, 4]
        breaker._probe()  # the cool-down is over; nothing in flight
        tally.succeeded += 1  # the probe, a new item, succeeded: the API answered once
        breaker._check_probe()
        assert breaker.state == "closed" and host.released == [0, 1, 2, 3, 4]
        for ordinal in range(5):  # the held items go back, and fail as they did: the API is down again
            fail(ordinal)
        assert tally.failed == 5 and breaker.state == "closed"  # final for now: bad records, or a flapping API
        for ordinal in range(5, 10):  # new items fail the same way: the outage trips the breaker again
            fail(ordinal)
        assert breaker.state == "open"
        assert tally.failed == 0 and sorted(host.held) == list(range(10))  # the earlier five are held again too
    finally:
        loop.close()


def test_held_items_failing_as_before_on_a_healthy_api_stay_final() -> None:
    """The other side of the flapping rule: once a window's worth of items succeeded after them, held items that
    failed as before are bad records, and a later outage's trip leaves them final."""
    import asyncio

    from batchcli.load.configuration import Configuration
    from batchcli.outcome import Failure, Tally
    from batchcli.run.breaker import Breaker

    loop = asyncio.new_event_loop()
    try:
        tally, host = Tally(), Held()
        breaker = Breaker(Configuration(breaker_window=10, breaker_cooldown_s=1), tally, host, loop)

        def fail(ordinal: int, message: str) -> None:
            failure = Failure(ordinal, ordinal, "job.ApiError", message, "", 1, 0.0, 0.0)
            tally.fail(failure)
            breaker.watch(failure, host.hold(ordinal))

        for ordinal in range(5):
            fail(ordinal, f"HTTP 422 for item {ordinal}: bad record")
        breaker._probe()
        tally.succeeded += 1
        breaker._check_probe()
        for ordinal in range(5):
            fail(ordinal, f"HTTP 422 for item {ordinal}: bad record")
        tally.succeeded += 10  # the API serves the rest: those five are bad records
        for ordinal in range(100, 105):
            fail(ordinal, f"HTTP 503 for item {ordinal}: down")
        assert breaker.state == "open"
        assert tally.failed == 5 and sorted(host.held) == list(range(100, 105))
    finally:
        loop.close()


def test_bad_records_at_the_end_of_the_source_do_not_hold_every_resume(tmp_path: Path) -> None:
    """Twelve bad records end the source: they trip the breaker, every probe is one of them, and the run stops at
    breaker_max_wait_s. Each resume did the same, for ever (nothing new to probe with). The resume now knows how the
    held items failed: failing again as they did, they are final (exit 1, in failed.jsonl, for a retry)."""
    bad = range(88, 100)
    with FlakyApi(reject=bad) as api:
        out = tmp_path / "out"
        stopped = run(args(api, out, count=100, concurrency=4, breaker_window=20, breaker_max_wait_s=1.5))
        assert stopped.exit_code == 130, stopped.output
        said = " ".join(stopped.output.split())
        assert "Only the items it holds are left; if they are bad records rather than an outage" in said, said
        summary = json.loads((stopped.run_dir / "summary.json").read_text())
        assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (88, 0, 12), summary

        resumed = run([sys.executable, "-m", "batchcli", "resume", str(stopped.run_dir)])
        assert resumed.exit_code == 1, resumed.output
        summary = json.loads((stopped.run_dir / "summary.json").read_text())
        assert (summary["succeeded"], summary["failed"], summary["unprocessed"]) == (88, 12, 0), summary
        assert journal_failures(stopped.run_dir) == 12
        lines = (stopped.run_dir / "failed.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["ordinal"] for line in lines) == list(bad)
        assert sorted(api.served) == list(range(88)) and set(api.served.values()) == {1}


def test_failures_taken_back_during_a_slow_flush_are_not_recorded(api: FlakyApi, tmp_path: Path) -> None:
    """A trip while the recorder held the window's failures (taken for the journal, not yet written): taken back,
    they were queued as recorded, their delete came before their insert in the same flush, and they stayed in the
    journal and failed.jsonl: counted failed, left out of the resume, retried though they succeeded."""
    out = tmp_path / "out"
    # 100 failures a second: the recorder takes the first ones, then spends a second logging them; the trip comes
    # meanwhile.
    stopped = run(args(api, out, token="bad", count=400, concurrency=4, pause_s=0.04, breaker_window=100,
                       breaker_failure_rate=1, breaker_cooldown_s=0.5, breaker_max_wait_s=1, slow_log_s=1.0))  # fmt: skip
    assert stopped.exit_code == 130, stopped.output
    summary = json.loads((stopped.run_dir / "summary.json").read_text())
    check_invariant(summary)
    assert summary["failed"] == 0 and summary["breaker"]["trips"] == 1, summary
    assert journal_failures(stopped.run_dir) == 0
    assert not (stopped.run_dir / "failed.jsonl").exists() or (stopped.run_dir / "failed.jsonl").read_text() == ""
    resumed = run([sys.executable, "-m", "batchcli", "resume", str(stopped.run_dir), "-p", "token=good"])
    assert resumed.exit_code == 0, resumed.output
    every_item_served_once(api, out, 400)
