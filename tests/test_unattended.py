"""Running unattended: watch, ctl, runs, metrics, JSON logs and notifications, on real runs without a terminal."""

from __future__ import annotations

import concurrent.futures
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from batchcli import read_results
from conftest import PROJECTS, subprocess_env
from joblog import JobLog, wait_for

JOB = PROJECTS / "unattended" / "job.py"


def batchcli(*args: Any, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m batchcli ARGS`` without a terminal, waited for."""
    return subprocess.run(
        [sys.executable, "-m", "batchcli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=subprocess_env()
    )


def start(*args: Any, stderr: Path) -> subprocess.Popen[str]:
    """``python -m batchcli ARGS`` in the background, without a terminal; stderr to a file."""
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("w"),
        text=True,
        env=subprocess_env(),
    )


def live_run_dir(out: Path) -> Path:
    """The run directory of the one run in ``out``, once its control socket is up."""
    wait_for(lambda: any(out.glob("*/control.sock")), "the run's control socket")
    return next(out.glob("*/control.sock")).parent


def ctl(run_dir: Path, *words: str) -> subprocess.CompletedProcess[str]:
    """``batchcli ctl RUN WORDS`` as a process of its own."""
    return batchcli("ctl", run_dir, *words)


def test_watch_and_ctl_steer_a_run_that_has_no_terminal(tmp_path: Path, cli: Any) -> None:
    """watch follows a headless run as its journal does, and every ctl command changes the run as the pause shell would; stop then resume loses and repeats nothing."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    run = start(
        "exec", JOB, "-d", out, "-p", "count=400", "-p", "delay_s=0.05", "-p", "concurrency=2",
        "-p", "fail_every=25", "-p", "max_retries=0", "-p", f"ledger={ledger}",
        stderr=tmp_path / "run.err",
    )
    try:
        run_dir = live_run_dir(out)
        log = JobLog(ledger)

        # watch, in plain mode (no terminal): frames advance; Ctrl-C leaves watch, not the run.
        watcher = subprocess.Popen(
            [sys.executable, "-m", "batchcli", "watch", str(run_dir), "-n", "0.2"],
            stdout=subprocess.PIPE, text=True, env=subprocess_env(),
        )
        assert watcher.stdout is not None
        seen: list[int] = []
        for line in watcher.stdout:
            if " ok " in line:
                seen.append(int(line.split(" ok ")[1].split()[0]))
                if len(seen) >= 2 and seen[-1] > seen[0]:
                    break
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=30) == 0
        assert seen == sorted(seen) and seen[-1] > seen[0]
        assert run.poll() is None, "Ctrl-C in watch reached the run"

        # SIGTERM leaves watch too, at once (it was remembered until the run ended), as a terminated process does.
        watcher = subprocess.Popen(
            [sys.executable, "-m", "batchcli", "watch", str(run_dir), "-n", "0.2"],
            stdout=subprocess.PIPE, text=True, env=subprocess_env(),
        )
        assert watcher.stdout is not None
        assert " ok " in watcher.stdout.readline() + watcher.stdout.readline()  # watching now, past start-up
        watcher.terminate()
        assert watcher.wait(timeout=30) == 128 + signal.SIGTERM
        assert run.poll() is None, "SIGTERM to watch reached the run"

        # runs marks the live run and its current rate.
        listing = cli("runs", "-d", out)
        assert re.search(r"running\s+\d+ / \d+ / 400 .* [\d.]+/s now", listing.output)

        # set concurrency: the Service sees more items at once, then fewer.
        assert "Concurrency is now 5." in cli("ctl", run_dir, "set", "concurrency=5").output
        wait_for(lambda: log.in_flight_peak(0) >= 5, "5 items in flight at once")
        assert cli("ctl", run_dir, "set", "concurrency=1").exit_code == 0
        time.sleep(0.3)  # the items started at 5 finish
        mark = len(log.lines())
        wait_for(lambda: len(log.lines()) > mark + 10, "items processed at concurrency 1")
        assert log.in_flight_peak(mark) == 1

        # pause: no new item starts, and watch says so; resume: they start again.
        assert cli("ctl", run_dir, "pause").exit_code == 0
        time.sleep(0.3)
        paused_at = len(log.started())
        frame = cli("watch", run_dir, "--once").output
        assert "paused" in frame
        time.sleep(0.3)
        assert len(log.started()) == paused_at
        assert cli("ctl", run_dir, "resume").exit_code == 0
        wait_for(lambda: len(log.started()) > paused_at, "items starting after resume")
        again = cli("ctl", run_dir, "resume")  # it said "Resumed." and changed nothing
        assert again.exit_code == 0 and "Not paused: the run is running, and there is nothing to resume." in again.output

        # set rate_limit: at most ~2 starts a second, then none again.
        assert "Rate limit is now 2/s." in cli("ctl", run_dir, "set", "rate_limit=2").output
        time.sleep(0.3)
        before = len(log.started())
        time.sleep(1.0)
        assert len(log.started()) - before <= 4  # unlimited, one at a time, 50 ms items start 20 a second
        cli("ctl", run_dir, "set", "rate_limit=1.23456")  # stats shows four digits (a learnt rate had 16)
        assert "\n  rate_limit: 1.235\n" in cli("ctl", run_dir, "stats").output
        assert "Rate limit is now none." in cli("ctl", run_dir, "set", "rate_limit=none").output

        # Paused (so no new failure comes in between): stats, then retry-failed once the cause is fixed: the
        # failures succeed and leave the counts.
        assert cli("ctl", run_dir, "pause").exit_code == 0
        time.sleep(0.2)
        stats = cli("ctl", run_dir, "stats")
        assert stats.exit_code == 0 and "failed:" in stats.output
        failed_before = int(stats.output.split("failed: ")[1].split()[0])
        assert failed_before > 0
        (tmp_path / "ledger.fixed").touch()
        # Two at once (two terminals): each used to retry every failure, so each item's side effects ran twice
        # more. The second waits for the first, then finds nothing left to retry (done_twice below says so too).
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            replies = sorted(r.stdout for r in pool.map(lambda _: ctl(run_dir, "retry-failed"), range(2)))
        assert replies == ["0 of 0 failed item(s) succeeded now.\n", f"{failed_before} of {failed_before} failed item(s) succeeded now.\n"], replies
        assert "failed: 0" in cli("ctl", run_dir, "stats").output
        assert cli("ctl", run_dir, "resume").exit_code == 0

        # stop: graceful and resumable; the socket goes with the run, and ctl then says it was stopped.
        assert "Stopping" in cli("ctl", run_dir, "stop").output
        assert run.wait(timeout=30) == 130
        assert not (run_dir / "control.sock").exists()
        after = ctl(run_dir, "stats")
        assert after.returncode == 1 and "was stopped" in after.stderr
    finally:
        if run.poll() is None:
            run.kill()
    resumed = batchcli("resume", run_dir, "-p", "concurrency=20")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(set(log.done())) == list(range(400))
    assert log.done_twice() == []
    final = cli("watch", run_dir)  # the finished run: watch prints what the journal and the summary say
    summary = json.loads((run_dir / "summary.json").read_text())
    assert final.exit_code == 0 and f"400/400 (100%)  ok {summary['succeeded']}  failed {summary['failed']}" in final.output


def test_a_cool_down_leaves_the_eta_blank_and_ctl_resume_says_how_long_it_lasts(tmp_path: Path, cli: Any) -> None:
    """Cooling down 600 s after a throttle, watch, ctl stats and the progress lines gave an ETA of seconds from the
    rate before it, and ctl resume answered "Resumed." and changed nothing. The ETA is blank until the cool-down
    ends, and resume says the run is not paused and how long the cool-down has left."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    run = start(
        "exec", JOB, "-d", out, "-p", "count=100", "-p", "delay_s=0.02", "-p", "concurrency=2", "-p", "throttle_at=20",
        "-p", "throttle_s=600", "-p", "throttle_max_wait_s=600", "-p", f"ledger={ledger}",
        stderr=tmp_path / "run.err",
    )  # fmt: skip
    try:
        run_dir = live_run_dir(out)
        wait_for(lambda: "throttled 20" in JobLog(ledger).lines(), "the throttle")
        wait_for(lambda: "cooling down" in cli("watch", run_dir, "--once").output, "watch to show the cool-down")
        frame = cli("watch", run_dir, "--once").output
        assert "eta -:--:--" in frame, frame
        stats = cli("ctl", run_dir, "stats").output
        assert "cooling down" in stats and "eta -:--:--" in stats, stats
        resumed = cli("ctl", run_dir, "resume")
        said = " ".join(resumed.output.split())
        assert resumed.exit_code == 0 and re.search(
            r"Not paused, and nothing to resume: the run is cooling down after a throttle, [56]\d\ds left \(until \d\d:\d\d:\d\d\)", said
        ), said
        # The journal has the cool-down at once now, so the steps above may all come before the run's next plain
        # line: wait for one printed during the cool-down before stopping it.
        wait_for(lambda: "cooling down" in (tmp_path / "run.err").read_text(), "a progress line of the cool-down")
        assert "Stopping" in cli("ctl", run_dir, "stop").output
        assert run.wait(timeout=60) == 130
    finally:
        if run.poll() is None:
            run.kill()
    cooling = [line for line in (tmp_path / "run.err").read_text().splitlines() if "cooling down" in line]
    assert cooling and all("eta -:--:--" in line for line in cooling), cooling  # the run's own progress lines


class Hook(BaseHTTPRequestHandler):
    """Records each POSTed JSON body on the server."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[ThreadingHTTPServer]:
    """A local HTTP server that receives notifications."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.posts = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_json_logs_notifications_and_a_stale_socket(tmp_path: Path, hook: ThreadingHTTPServer, cli: Any) -> None:
    """A headless run serves /metrics, logs JSON lines, refuses another user's connection, and after kill -9 its resume replaces the stale socket and notifies the end."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    port = free_port()
    url = f"http://127.0.0.1:{hook.server_port}/done"
    args = ("-p", f"notify_url={url}", "--log-format", "json", "-v")
    run = start(
        "exec", JOB, "-d", out, "-p", "count=300", "-p", "delay_s=0.05", "-p", "concurrency=2", "-p", "fail_every=10",
        "-p", "max_retries=1", "-p", "backoff_s=0", "-p", f"ledger={ledger}", "-p", f"metrics_port={port}", *args,
        stderr=tmp_path / "run.err",
    )
    try:
        run_dir = live_run_dir(out)
        wait_for(lambda: "ConnectionError" in (run_dir / "batchcli.log").read_text(), "a retried item")  # metrics served by now
        # Item 0 fails before any item succeeds: the metrics come to count a success and a retry.
        wait_for(lambda: (values := scrape(port))["batchcli_items_succeeded_total"] > 0 and values["batchcli_items_retried_total"] > 0, "a success and a retry")
        assert scrape(port)["batchcli_concurrency_configured"] == 2
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert f'run_id="{run_dir.name}"' in scraped and 'batchcli_job="job"' in scraped
        assert "{job=" not in scraped and ",job=" not in scraped  # Prometheus's own target label, left to it

        # Another user (uid 65534) is refused by the run itself, even past the file modes (a hard link of the
        # socket in a directory they can reach, the socket made writable for them).
        if os.getuid() == 0:
            reachable = Path(tempfile.mkdtemp(dir=tmp_path.anchor + "tmp"))
            try:
                reachable.chmod(0o711)
                os.link(run_dir / "control.sock", reachable / "s")
                os.chmod(reachable / "s", 0o666)
                probe = (
                    "import os, socket, sys; os.setuid(65534); s = socket.socket(socket.AF_UNIX);"
                    "s.connect(sys.argv[1]); s.sendall(b'{\"command\": \"stop\"}\\n'); print(s.recv(4096).decode())"
                )
                refused = subprocess.run([sys.executable, "-c", probe, str(reachable / "s")], capture_output=True, text=True, timeout=30)
            finally:
                os.chmod(run_dir / "control.sock", 0o600)
                shutil.rmtree(reachable)
            assert '"refused": true' in refused.stdout, refused.stderr
            assert "may not control it" in refused.stdout
            assert run.poll() is None  # the stop was not carried out
        failed_file = run_dir / "failed.jsonl"  # appended after the journal commits a failure
        wait_for(lambda: failed_file.exists() and failed_file.stat().st_size > 0, "a failure in the journal")
        run.kill()  # kill -9: the socket stays behind, stale
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert (run_dir / "control.sock").exists()
    crashed = cli("ctl", run_dir, "pause")
    assert crashed.exit_code == 1 and "crashed" in crashed.output

    resumed = start("resume", run_dir, *args, stderr=tmp_path / "resume.err")
    try:
        # The stale socket refuses connections; the resumed run's answers (ctl waits for it to appear).
        wait_for(lambda: cli("ctl", run_dir, "stats").exit_code == 0, "the resumed run's fresh socket")
        (tmp_path / "ledger.fixed").touch()
        # Until the executor has started, a limit cannot change yet: exit 1, "try again in a moment".
        wait_for(lambda: cli("ctl", run_dir, "set", "concurrency=50").exit_code == 0, "a higher concurrency")
        assert resumed.wait(timeout=60) == 1  # the failures of the first session stay failed
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert not (run_dir / "control.sock").exists()

    records = [json.loads(line) for line in (run_dir / "batchcli.log").read_text().splitlines()]
    retry = next(r for r in records if r["event"] == "retry")
    assert {"time", "level", "run_id", "ordinal", "item", "error_type", "attempt", "delay"} <= retry.keys()
    assert retry["run_id"] == run_dir.name and retry["error_type"] == "ConnectionError"
    failed = next(r for r in records if r["event"] == "item_failed")
    assert failed["ordinal"] % 10 == 0 and failed["attempt"] == 2
    stderr_lines = [json.loads(line) for line in (tmp_path / "resume.err").read_text().splitlines() if line.startswith("{")]
    assert any(r["event"] == "log" for r in stderr_lines)
    assert url not in (run_dir / "batchcli.log").read_text()  # the URL is a secret

    wait_for(lambda: len(hook.posts) >= 1, "the notification")  # type: ignore[attr-defined]
    note = hook.posts[-1]  # type: ignore[attr-defined]
    assert note["event"] == "finished" and note["run_id"] == run_dir.name
    assert note["exit_code"] == 1 and note["succeeded"] + note["failed"] == 300


def test_time_paused_by_ctl_is_not_run_time(tmp_path: Path) -> None:
    """ctl pause left the run's clock going (the shell's pause stops it): the rate and ETA sank while nothing ran, and
    summary.json's duration and rate counted the pause."""
    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", str(out), "-p", "count=300", "-p", "delay_s=0.02",
         "-p", "concurrency=2", "-p", f"ledger={ledger}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )  # fmt: skip
    log = JobLog(ledger)
    try:
        wait_for(lambda: any(out.glob("*/control.sock")) and len(log.done()) >= 5, "the run under way")
        run_dir = next(out.glob("*/control.sock")).parent
        assert ctl(run_dir, "pause").returncode == 0
        time.sleep(1.5)
        assert ctl(run_dir, "resume").returncode == 0
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["paused_s"] >= 1.5, summary


def test_ctl_retry_failed_runs_the_failures_in_the_workers_where_setup_ran(tmp_path: Path) -> None:
    """With executor=process the Services set up are the workers': retry-failed called the driver's, whose setup()
    never ran, and answered "0 of 26 failed item(s) succeeded now" for a cause that was fixed."""
    fixed = tmp_path / "fixed"
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "needs_setup" / "needs_setup_job.py"), "-d", str(out),
         "-p", f"fixed={fixed}", "-p", "executor=process", "-p", "workers=2", "-p", "breaker_window=0",
         "-p", "max_retries=0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: any(out.glob("*/control.sock")), "the run to listen")
        run_dir = next(out.glob("*/control.sock")).parent

        def failed_now() -> int:
            stats = ctl(run_dir, "stats").stdout
            return int(stats.split("failed: ")[1].split()[0]) if "failed: " in stats else 0

        wait_for(lambda: failed_now() >= 3, "a few failures")
        assert ctl(run_dir, "pause").returncode == 0
        time.sleep(0.5)
        failed = failed_now()
        fixed.touch()
        reply = ctl(run_dir, "retry-failed")
        assert reply.stdout == f"{failed} of {failed} failed item(s) succeeded now.\n", reply.stdout + reply.stderr
        assert ctl(run_dir, "stop").returncode == 0
        assert run.wait(timeout=60) == 130
    finally:
        if run.poll() is None:
            run.kill()
    results = {row.ordinal: row.value for row in read_results(run_dir)}
    retried = [results[n] for n in results if n % 10 == 0]
    assert len(retried) == failed
    assert all(value.split(" via conn-")[1] != str(run.pid) for value in retried), retried  # made in a worker


def test_ctl_pause_reaches_the_chunks_worker_processes_hold(tmp_path: Path) -> None:
    """`ctl pause` with executor=process and a fixed chunk_size: no item starts after it, though the workers hold
    chunks of 60 (they went on with them: 38-56 requests after the pause); resumed, every item is served once."""
    from test_throttle import JOB, FlakyApi

    out = tmp_path / "out"
    with FlakyApi() as api:
        run = subprocess.Popen(
            [sys.executable, "-m", "batchcli", "exec", str(JOB), "-d", str(out), "-p", f"url={api.url}",
             "-p", "count=160", "-p", "delay_s=0.05", "-p", "executor=process", "-p", "workers=2",
             "-p", "concurrency=2", "-p", "chunk_size=60"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
        )  # fmt: skip
        try:
            wait_for(lambda: any(out.glob("*/control.sock")), "the run to listen")
            run_dir = next(out.glob("*/control.sock")).parent
            wait_for(lambda: len(api.served) >= 10, "some items served")
            paused = ctl(run_dir, "pause")
            paused_at = time.time()
            # it said "95 in flight finish", counting the chunks' items that come back unstarted
            assert paused.returncode == 0 and re.search(
                r"Paused: no new item starts; of the \d+ sent to the process workers, those started finish and are "
                r"recorded, the others come back unstarted\. Resume with ctl resume\.", paused.stdout
            ), paused.stdout
            time.sleep(1.5)
            late = [when for when, *_ in api.requests if when > paused_at + 0.5]
            assert late == [], f"{len(late)} requests after the pause"
            assert ctl(run_dir, "resume").returncode == 0
            assert run.wait(timeout=120) == 0
        finally:
            if run.poll() is None:
                run.kill()
        assert sorted(api.served) == list(range(160)) and set(api.served.values()) == {1}


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {line.split(" ")[0].split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("batchcli_")}


def test_the_failed_counter_never_goes_down_when_failures_are_taken_back(tmp_path: Path, cli: Any) -> None:
    """ctl retry-failed turns failures into successes: the run's failed count drops to 0, but Prometheus reads a
    counter that goes down as a reset (and counts its failures twice); the failures taken back get their own counter."""
    ledger, out, port = tmp_path / "ledger.txt", tmp_path / "out", free_port()
    run = start(
        "exec", JOB, "-d", out, "-p", "count=400", "-p", "delay_s=0.02", "-p", "concurrency=2", "-p", "fail_every=5",
        "-p", "max_retries=0", "-p", "breaker_window=0", "-p", f"ledger={ledger}", "-p", f"metrics_port={port}",
        stderr=tmp_path / "run.err",
    )  # fmt: skip
    try:
        run_dir = live_run_dir(out)
        wait_for(lambda: scrape(port).get("batchcli_items_failed_total", 0) >= 3, "three failures")
        assert cli("ctl", run_dir, "pause").exit_code == 0
        time.sleep(0.3)  # in-flight items settle
        before = scrape(port)
        failed = before["batchcli_items_failed_total"]
        assert before["batchcli_items_failures_taken_back_total"] == 0
        (tmp_path / "ledger.fixed").touch()
        assert ctl(run_dir, "retry-failed").stdout == f"{failed:.0f} of {failed:.0f} failed item(s) succeeded now.\n"
        after = scrape(port)
        assert after["batchcli_items_failed_total"] == failed  # not 0
        assert after["batchcli_items_failures_taken_back_total"] == failed
        assert after["batchcli_items_succeeded_total"] == before["batchcli_items_succeeded_total"] + failed
        assert "Stopping" in cli("ctl", run_dir, "stop").output
        assert run.wait(timeout=30) == 130
    finally:
        if run.poll() is None:
            run.kill()


def test_a_notification_endpoint_that_is_down_leaves_the_run_alone(cli: Any, tmp_path: Path) -> None:
    """A run whose notify_url refuses connections finishes with its own exit code and says so in its log."""
    url = f"http://127.0.0.1:{free_port()}/hook"
    outcome = cli("exec", JOB, "-d", tmp_path / "out", "-p", "count=5", "-p", "delay_s=0", "-p", f"notify_url={url}", "--no-shell")
    assert outcome.exit_code == 0, outcome.output
    assert "Could not send the 'finished' notification to http://127.0.0.1" in (outcome.run_dir / "batchcli.log").read_text()


def test_a_notification_endpoint_that_never_answers_is_logged_too(cli: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """An endpoint that accepts the connection and never answers: the run's exit ended the try before it gave up,
    so nothing was logged, where the docs promise a warning."""
    monkeypatch.setattr("batchcli.run.notify.END_WAIT_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        outcome = cli("exec", JOB, "-d", tmp_path / "out", "-p", "count=3", "-p", "delay_s=0", "-p", f"notify_url={url}",
                      "--no-shell")  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    log = (outcome.run_dir / "batchcli.log").read_text()
    assert "Could not send the 'finished' notification to http://127.0.0.1" in log and "no answer within 0.5s" in log


def test_ctl_and_watch_refuse_bad_input(cli: Any, tmp_path: Path) -> None:
    """ctl and watch on a finished run, a non-run directory, another user's run, or with an unknown command or field: one paragraph, the right exit code."""
    done = cli("exec", JOB, "-d", tmp_path / "out", "-p", "count=3", "-p", "delay_s=0", "--no-shell")
    run_dir = done.run_dir
    assert run_dir is not None

    for interval in ("inf", "1e10", "0"):  # time.sleep(inf) raised OverflowError: a traceback, exit 1
        slow = cli("watch", "-n", interval, run_dir)
        assert slow.exit_code == 2 and "--interval" in slow.output and "Traceback" not in slow.output, slow.output
    watched = cli("watch", run_dir)  # a finished run: its final state, then exit
    assert watched.exit_code == 0 and "3/3 (100%)  ok 3  failed 0" in watched.output and "finished" in watched.output

    finished = cli("ctl", run_dir, "pause")
    assert finished.exit_code == 1 and "has finished" in finished.output and "batchcli show" in finished.output
    unknown = cli("ctl", run_dir, "faster")
    assert unknown.exit_code == 2 and "Unknown ctl command 'faster'" in unknown.output and "pause, resume" in unknown.output
    field = cli("ctl", run_dir, "set", "workers=3")
    assert field.exit_code == 2 and "cannot change 'workers'" in field.output and "concurrency" in field.output
    value = cli("ctl", run_dir, "set", "concurrency=lots")
    assert value.exit_code == 2 and "'lots' is not a whole number" in value.output
    # Out of the pause shell's bounds: refused here, with exit 2 (ctl said "Concurrency is now 0" while the run
    # printed its refusal on its own console).
    for word in ("concurrency=0", "concurrency=-3", "concurrency=99999999999999999999", "rate_limit=0",
                 "rate_limit=-1", "rate_limit=nan", "rate_limit=inf", "rate_limit=1e-300", "rate_limit=5e-324"):  # fmt: skip
        refused = cli("ctl", run_dir, "set", word)
        flat = " ".join(refused.output.split())
        assert refused.exit_code == 2 and f"ctl set {word.replace('=', '=' + chr(39))}' is out of range" in flat, (word, refused.output)
        if word == "rate_limit=1e-300":  # positive, but below the lowest rate: the reply names it
            assert "at least 1.15741e-05 (one item a day)" in flat, flat
    for command in ("ctl", "watch"):
        words = ["pause"] if command == "ctl" else []
        nothing = cli(command, tmp_path, *words)
        assert nothing.exit_code == 2 and "not a batchcli run directory" in nothing.output
    if os.getuid() == 0:
        os.chown(run_dir, 65534, 65534)
        try:
            theirs = cli("ctl", run_dir, "stats")
            assert theirs.exit_code == 2 and "belongs to user id 65534, not to you" in theirs.output
        finally:
            os.chown(run_dir, 0, 0)
    bad_format = cli("exec", JOB, "-d", tmp_path / "out", "--log-format", "xml")
    assert bad_format.exit_code == 2 and "--log-format 'xml'" in bad_format.output


@pytest.mark.parametrize("word", ["concurrency=\u0663", "concurrency=1_0", "rate_limit=\u0663", "rate_limit=1_0", "rate_limit=\uff17.5"])
def test_ctl_set_takes_the_digits_people_type(cli: Any, tmp_path: Path, word: str) -> None:
    """int() and float() also read "1_0" as 10 and an Arabic-Indic 3 as 3: ctl set put them in force where any other
    stray character is refused; they are refused as it is, before the run directory is looked at."""
    refused = cli("ctl", tmp_path, "set", word)
    field, _, value = word.partition("=")
    fix = "a whole number, e.g. concurrency=4" if field == "concurrency" else "items per second, e.g. rate_limit=20, or none"
    assert refused.exit_code == 2 and refused.output.strip() == f"Error: ctl set {field}={value!r} is not {fix}.", refused.output


def test_metrics_port_errors_come_before_any_run(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy metrics_port, or one without prometheus_client, is bad input: exit 2 and no run directory."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = cli("exec", JOB, "-d", tmp_path / "out", "-p", f"metrics_port={port}")
    assert taken.exit_code == 2 and f"metrics_port={port} cannot be served" in taken.output
    assert f"metrics_port={port + 1}" in taken.output
    with socket.socket() as busy:  # the last port: the suggestion was 65536, which no port is
        busy.bind(("127.0.0.1", 65535))  # above the kernel's ephemeral range: free unless a test server holds it
        busy.listen()
        last = cli("exec", JOB, "-d", tmp_path / "out", "-p", "metrics_port=65535")
    assert last.exit_code == 2 and "metrics_port=65534" in last.output and "65536" not in last.output, last.output
    for host in ("no.such.host.invalid", "192.0.2.1"):  # a name that does not resolve; an address not this machine's
        # Said to be a port "another program uses", with another port suggested, which could not help.
        wrong = cli("exec", JOB, "-d", tmp_path / "out", "-p", f"metrics_port={free_port()}", "-p", f"metrics_host={host}")
        said = " ".join(wrong.output.split())
        assert wrong.exit_code == 2 and f"metrics_host='{host}' is not an address of this machine" in said, said
        assert "another program" not in said and "Traceback" not in said
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    missing = cli("exec", JOB, "-d", tmp_path / "out", "-p", "metrics_port=9464")
    assert missing.exit_code == 2 and "pip install 'batchcli[metrics]'" in missing.output
    assert not list((tmp_path / "out").glob("*/journal.sqlite"))


def test_metrics_host_with_an_empty_label_is_bad_input(cli: Any, tmp_path: Path) -> None:
    """A host name the resolver cannot even encode (an empty label) gets the bad-host message, not a traceback."""
    for host in ("a..b", "x" * 64 + ".example"):
        wrong = cli("exec", JOB, "-d", tmp_path / "out", "-p", f"metrics_port={free_port()}", "-p", f"metrics_host={host}")
        said = " ".join(wrong.output.split())
        assert wrong.exit_code == 2 and f"metrics_host='{host}' is not an address of this machine" in said, said
        assert "label is empty or over 63 characters" in said and "-p metrics_host=127.0.0.1" in said, said
    assert not list((tmp_path / "out").glob("*/journal.sqlite"))


def test_a_tripped_breaker_and_the_stop_it_leads_to_are_notified(cli: Any, tmp_path: Path, hook: ThreadingHTTPServer) -> None:
    """A run whose items all fail notifies the breaker's trip with its reason, then the resumable stop it ends in."""
    url = f"http://127.0.0.1:{hook.server_port}/hook"
    outcome = cli(
        "exec", JOB, "-d", tmp_path / "out", "-p", "count=50", "-p", "delay_s=0", "-p", "fail_every=1", "-p", "max_retries=0",
        "-p", "breaker_window=10", "-p", "breaker_cooldown_s=0.1", "-p", "breaker_max_wait_s=0.3",
        "-p", f"ledger={tmp_path / 'ledger.txt'}", "-p", f"notify_url={url}", "--no-shell",
    )
    assert outcome.exit_code == 130, outcome.output
    events = [post["event"] for post in hook.posts]  # type: ignore[attr-defined]
    assert events[0] == "breaker" and events[-1] == "stopped"
    assert "items failed: ConnectionError: item" in hook.posts[0]["reason"]  # type: ignore[attr-defined]
    assert hook.posts[-1]["exit_code"] == 130  # type: ignore[attr-defined]


def test_ctl_answers_again_once_a_job_that_ran_out_of_file_descriptors_frees_them(tmp_path: Path) -> None:
    """A job that holds every file descriptor for a while (EMFILE): the control channel could not take a connection
    and its thread ended, so ctl and attach stayed dead for the rest of the run. Now the connection waits and is
    answered once descriptors are free, and later ones are too."""
    ledger, release = tmp_path / "ledger.txt", tmp_path / "release"
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "misbehaving" / "job.py"), "-d", str(out), "-p",
         "count=100", "-p", f"grab_fds_until={release}", "-p", "delay_s=0.05", "-p", "concurrency=2",
         "-p", f"ledger={ledger}", "-p", "write_retry_s=120"],  # fmt: skip  # a journal write may wait for a descriptor
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )
    ctl: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: ledger.exists() and "exhausted" in ledger.read_text(), "the job to run out of descriptors", timeout=60)
        run_dir = next(out.glob("*/control.sock")).parent
        command = [sys.executable, "-m", "batchcli", "ctl", str(run_dir), "stats"]
        ctl = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env())
        warning = "ctl: cannot take a connection ([Errno 24] Too many open files); trying again."
        # Usually the accept fails and is logged; it may also get a descriptor another thread freed an instant
        # before the job took it back, and then ctl is simply answered. Either way it must be answered.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and ctl.poll() is None and warning not in (run_dir / "batchcli.log").read_text():
            time.sleep(0.05)
        release.touch()  # the job lets its descriptors go: a waiting connection is answered
        answer, _ = ctl.communicate(timeout=60)
        assert ctl.returncode == 0, answer
        after = subprocess.run(command, capture_output=True, text=True, timeout=60, env=subprocess_env())
        assert after.returncode == 0, after.stdout + after.stderr
        assert run.wait(timeout=60) == 0
    finally:
        release.touch()
        for process in (run, ctl):
            if process is not None and process.poll() is None:
                process.kill()
    assert (run_dir / "batchcli.log").read_text().count(warning) <= 1  # once per streak of refused accepts


EXIT_DISPOSITION = """
import atexit, signal, sys
atexit.register(lambda: print("ignored at exit:", all(signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM))))
sys.argv = ["batchcli", *sys.argv[1:]]
from batchcli.__main__ import main
main()
"""


@pytest.mark.parametrize(
    "args", [["runs", "-d", "nowhere"], ["exec", str(JOB), "-d", "out", "-p", "count=3", "-p", "delay_s=0", "--no-shell"]]
)
def test_stop_signals_are_ignored_once_a_command_has_decided_its_exit(tmp_path: Path, args: list[str]) -> None:
    """After the command's outcome is written, a late SIGINT or SIGTERM must not kill the exiting interpreter: it
    resets Python-level handlers to the defaults as it finalises, and a signal then gave exit 130 or 143 where a
    finished run's summary.json said 0. Only a stopped run (130) was covered; now every exit is."""
    ran = subprocess.run(
        [sys.executable, "-c", EXIT_DISPOSITION, *args],
        capture_output=True, text=True, timeout=120, env=subprocess_env(), cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "ignored at exit: True" in ran.stdout, ran.stdout + ran.stderr


def test_ctl_set_while_setup_runs_says_the_run_is_still_starting(tmp_path: Path) -> None:
    """ctl set before the executor exists was refused in the pause shell's words ("self.set_concurrency() needs the
    executor"); it says what ctl can do: try again once the run runs (exit 1, not now)."""
    out = tmp_path / "out"
    run = start(
        "exec", PROJECTS / "shell_slow", "-d", out, "-p", f"log_file={tmp_path / 'job.log'}", "-p", "setup_s=60",
        "-p", "stop_timeout_s=1", "--no-shell", stderr=tmp_path / "run.err",
    )  # fmt: skip
    try:
        run_dir = live_run_dir(out)
        wait_for(lambda: (tmp_path / "job.log").exists(), "setup() to start")
        early = ctl(run_dir, "set", "concurrency=3")
        flat = " ".join(early.stderr.split())
        assert early.returncode == 1, early.stderr
        assert f"The run is still starting (its setup() runs), so its limits cannot change yet: try batchcli ctl {run_dir} set concurrency=3 again" in flat
        assert "self.set_concurrency" not in flat
        frame = " ".join(batchcli("watch", run_dir, "--once").stdout.split())  # said "concurrency None of 10 (adapting)"
        assert "concurrency 10 (starting)" in frame and "None" not in frame, frame
        assert ctl(run_dir, "stop").returncode == 0
        assert run.wait(timeout=30) == 130
    finally:
        if run.poll() is None:
            run.kill()


GATED_SOURCE = """
import asyncio
from pathlib import Path

from batchcli import Param, Service, Source, inject


@inject
class Gated(Source[int]):
    '''An async source (a queue, a paginated API): item 0 at once, the others only while ``gate`` exists.'''

    def __init__(self, gate: Param[Path], given: Param[Path], count: Param[int] = 6) -> None:
        self.gate, self.given, self.count = gate, given, count

    def __len__(self) -> int:
        return self.count

    async def __aiter__(self):
        for n in range(self.count):
            while n and not self.gate.exists():
                await asyncio.sleep(0.02)
            with self.given.open("a") as log:
                log.write(f"gave {n}\\n")
            yield n


@inject
class Ledger(Service[int]):
    def __init__(self, ledger: Param[Path]) -> None:
        self.ledger = ledger

    async def process(self, item: int) -> None:
        with self.ledger.open("a") as log:
            log.write(f"done {item}\\n")
"""


def test_pause_and_stop_hold_while_an_async_source_waits_for_its_next_item(tmp_path: Path) -> None:
    """Workers waiting on an async source's next item started it when it came, paused or not (up to concurrency
    items ran under "Paused: no new item starts"); and a stop with nothing in flight waited the whole stop timeout
    for that next item. Now an item that comes during a pause waits for the resume, and a stop ends at once."""
    job, gate, given, ledger, out = (tmp_path / name for name in ("gated.py", "gate", "given.txt", "ledger.txt", "out"))
    job.write_text(GATED_SOURCE)
    params = ["-p", f"gate={gate}", "-p", f"given={given}", "-p", f"ledger={ledger}", "-p", "concurrency=3"]
    run = start("exec", job, "-d", out, *params, "-p", "stop_timeout_s=600", stderr=tmp_path / "stderr.txt")

    def lines(path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    try:
        run_dir = live_run_dir(out)
        wait_for(lambda: lines(ledger) == ["done 0"], "the first item")
        paused = ctl(run_dir, "pause")
        assert paused.returncode == 0, paused.stderr
        assert re.search(r"Paused: no new item starts; the [01] in flight finish and are recorded\. Resume", paused.stdout)
        gate.touch()
        wait_for(lambda: {"gave 1", "gave 2"} <= set(lines(given)), "the source to give items while paused")
        gate.unlink()
        assert ctl(run_dir, "stats").returncode == 0  # the loop has run what came since: nothing may have started
        assert lines(ledger) == ["done 0"]
        assert ctl(run_dir, "stop").returncode == 0
        assert run.wait(timeout=30) == 130  # not the 600 s stop timeout: nothing was in flight
    finally:
        if run.poll() is None:
            run.kill()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["unprocessed"]) == (1, 5), summary
    gate.touch()
    resumed = batchcli("resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(int(line.split()[1]) for line in lines(ledger)) == list(range(6))  # each once


def test_a_retry_failed_still_running_when_the_items_run_out_finishes_before_the_run_ends(tmp_path: Path) -> None:
    """The run's end cut a live retry short: the retried items, in threads that cannot be cancelled, succeeded (the
    ledger has them) but stayed failed in the summary and failed.jsonl, so a later `batchcli retry` did them twice.
    The retried items are in flight as the run's own are: the run waits for them, as a stop does."""
    fix, release, ledger, out = tmp_path / "fix", tmp_path / "release", tmp_path / "ledger.txt", tmp_path / "out"
    run = start(
        "exec", PROJECTS / "retry_live" / "job.py", "-d", out, "-p", "count=200", "-p", "concurrency=2",
        "-p", "max_retries=0", "-p", "breaker_window=0", "-p", f"fix={fix}", "-p", f"release={release}",
        "-p", f"ledger={ledger}", stderr=tmp_path / "run.err",
    )  # fmt: skip
    try:
        run_dir = live_run_dir(out)
        log = JobLog(ledger)
        wait_for(lambda: len(log.done()) >= 25, "a few failures")  # items 0, 10 and 20 failed by now
        fix.touch()
        retrying = subprocess.Popen(
            [sys.executable, "-m", "batchcli", "ctl", str(run_dir), "retry-failed"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(),
        )  # fmt: skip
        wait_for(lambda: 199 in log.done(), "the run's last item")  # the source ran out: the run is ending
        time.sleep(0.5)
        release.touch()
        said, _ = retrying.communicate(timeout=60)
        assert run.wait(timeout=60) == 0, (tmp_path / "run.err").read_text()
    finally:
        if run.poll() is None:
            run.kill()
    retried = int(said.split(" of ")[1].split()[0])
    assert retried >= 3 and said == f"{retried} of {retried} failed item(s) succeeded now.\n", said
    assert sorted(log.done()) == list(range(200))  # each item succeeded exactly once
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"], summary["failed"]) == ("finished", 200, 0), summary
    assert (run_dir / "failed.jsonl").read_text() == ""
