"""Log records on the console: a few a second print, the rest are counted by kind and announced; the file has all.
A console that cannot be written at all does not end the run."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import PROJECTS, newest_run, subprocess_env
from rich.console import Console

from batchcli.journal.rundir import read_run
from batchcli.run.logs import ConsoleSample

MORE = re.compile(r"^WARNING misbehaving: (.+?) \.\.\. and ([\d,]+) more like this \(see batchcli\.log\)$", re.M)
JOB = PROJECTS / "misbehaving" / "job.py"


def record(name: str, level: int, message: str, *args: Any) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_a_job_that_logs_a_warning_per_item_prints_a_bounded_console_and_the_file_has_every_one(run_batchcli: Any) -> None:
    result = run_batchcli("exec", JOB, "-d", "out", "-p", "count=5000", "-p", "warn=true")
    assert result.exit_code == 0 and result.run_dir is not None, result.output
    printed = len(re.findall(r"WARNING +record \d+ has no email", result.output))
    more = sum(int(n.replace(",", "")) for _, n in MORE.findall(result.output))
    assert 1 <= printed <= 200 and printed + more == 5000, result.output[-2000:]
    assert set(shape for shape, _ in MORE.findall(result.output)) == {"record N has no email; skipped the mail step"}
    assert len(result.output.splitlines()) < 300
    log = (result.run_dir / "batchcli.log").read_text()
    assert len(re.findall(r"WARNING  misbehaving: record \d+ has no email", log)) == 5000


def test_the_sample_holds_back_beyond_its_budget_counts_by_kind_and_always_passes_batchclis_warnings() -> None:
    now = [0.0]
    out = io.StringIO()
    sample = ConsoleSample(Console(file=out, width=200), lines_per_second=3, more_every_s=10.0, clock=lambda: now[0])
    passed = [sample.filter(record("chatty", logging.WARNING, "record %d is odd", n)) for n in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert sample.filter(record("chatty", logging.INFO, "an info line")) is False  # the budget is for all records
    assert sample.filter(record("batchcli.breaker", logging.WARNING, "Circuit breaker open")) is True  # about the run
    assert sample.filter(record("chatty", logging.WARNING, "bad %d %d", "not a number")) is False  # no exception out
    now[0] = 1.5  # a new second: three more pass
    assert [sample.filter(record("chatty", logging.WARNING, "record %d is odd", n)) for n in range(4)] == [True] * 3 + [False]
    assert out.getvalue() == ""  # nothing announced before more_every_s
    now[0] = 10.5
    sample.filter(record("chatty", logging.WARNING, "record %d is odd", 99))  # passes, and the held ones are announced
    lines = out.getvalue().splitlines()
    assert "WARNING chatty: record N is odd ... and 8 more like this (see batchcli.log)" in lines
    assert "INFO chatty: an info line ... and 1 more like this (see batchcli.log)" in lines
    assert "WARNING chatty: bad %d %d ... and 1 more like this (see batchcli.log)" in lines
    sample.announce()  # nothing held since: nothing printed
    assert len(out.getvalue().splitlines()) == len(lines)


def test_a_console_that_cannot_be_written_leaves_the_run_to_finish_and_say_so_in_its_log(tmp_path: Path) -> None:
    """stderr on a full disk (/dev/full): the run settles every item, writes its summary and ends its session,
    and its log says the console broke; before, the display's last write raised and the run ended as crashed."""
    ledger = tmp_path / "ledger.txt"
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "unattended" / "job.py"), "-d", str(tmp_path / "out"),
             "-p", "count=300", "-p", "delay_s=0.01", "-p", "concurrency=4", "-p", "fail_every=10", "-p", "max_retries=0",
             "-p", f"ledger={ledger}"],  # fmt: skip
            stdout=subprocess.DEVNULL, stderr=full, env=subprocess_env(), timeout=120,
        )
    assert proc.returncode == 1  # the run's own code: some items failed
    run_dir = newest_run(tmp_path / "out")
    assert run_dir is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["succeeded"], summary["failed"]) == ("finished", 270, 30)
    assert read_run(run_dir).status == "finished"
    log = (run_dir / "batchcli.log").read_text()
    assert log.count("The console cannot be written ([Errno 28]") == 1
    assert "Run ended: finished, exit code 1" in log


def test_reports_to_a_stdout_that_cannot_be_written_end_with_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`runs > /dev/full` (show, watch --once, list too) printed batchcli's traceback; results already said why."""
    ran = subprocess.run(
        [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "unattended" / "job.py"), "-d", str(tmp_path / "out"),
         "-p", "count=5", "-p", f"ledger={tmp_path / 'ledger.txt'}"],
        capture_output=True, env=subprocess_env(), timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    run_dir = newest_run(tmp_path / "out")
    for args in (["runs", "-d", str(tmp_path / "out")], ["show", str(run_dir)], ["watch", str(run_dir), "--once"], ["list"]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "batchcli", *args], stdout=full, stderr=subprocess.PIPE,
                                  text=True, env=subprocess_env(), timeout=60)  # fmt: skip
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr == "Error: cannot write the output (No space left on device).\n", (args, proc.stderr)


def test_what_a_job_prints_under_the_live_display_comes_out_whole_and_in_order(tmp_path: Path) -> None:
    """On a terminal, lines the job prints go above the live display a tick at a time (rich printed each one with a
    redraw of the display, 2 ms a line): every line once, in order, stderr's too, and a last line without a newline."""
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "batchcli", "exec", str(JOB), "-d", str(tmp_path / "out"), "-p", "count=2000", "-p", "print_lines=true"],
        env=subprocess_env(TERM="xterm"), encoding="utf-8", timeout=120, dimensions=(50, 150),
    )  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before[-2000:]
    output = child.before
    assert [int(n) for n in re.findall(r"row (\d+) done", output)] == list(range(2000))
    assert [int(n) for n in re.findall(r"note (\d+)", output)] == list(range(0, 2000, 10))
    assert output.count("no newline at the end") == 1


def test_the_progress_lines_after_the_last_item_give_the_runs_rate_and_no_eta(run_batchcli: Any, tmp_path: Path) -> None:
    """While finish() ran, the plain progress lines said "0.0/s ... eta -:--:--" (the last seconds' rate, nothing
    settling), though summary.json said 13/s. Once every item is settled they give the session's rate and eta 0."""
    result = run_batchcli("exec", PROJECTS / "shell_slow", "-d", "out", "-p", "count=20", "-p", "delay=0.01",
                          "-p", f"log_file={tmp_path / 'log'}", "-p", "finish_s=1.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    done = [line for line in result.output.splitlines() if line.startswith("20/20 (100%)")]
    assert len(done) >= 3, result.output  # finish() takes 1.5 s: several lines at 0.2 s
    assert all("eta 0:00:00" in line and " 0.0/s" not in line for line in done), done


def test_control_characters_in_an_error_message_are_written_out_on_the_console(run_batchcli: Any, cli: Any, tmp_path: Path) -> None:
    """A message holding a terminal's escape sequences cleared and recoloured the screen, and a carriage return
    overwrote the line, in the failure lines and the groups alike, and in show and watch afterwards (and in an
    exception class's name). They are written out (``\\x1b``); the files keep the message as it was raised."""
    job = tmp_path / "escapes.py"
    job.write_text(
        "from batchcli import Service, Source, inject\n\n\n@inject\nclass Numbers(Source[int]):\n"
        "    def __iter__(self):\n        return iter(range(3))\n\n\n@inject\nclass Hostile(Service[int]):\n"
        "    def process(self, item: int) -> None:\n"
        "        if item == 2:\n"
        "            raise type('We\\x1b[5mird', (ValueError,), {})('an odd name')\n"
        "        raise ValueError(f'row {item} \\x1b[2J\\x1b[31mcleared\\rover\\x00')\n"
    )
    result = run_batchcli("exec", job, "-d", "out", "-p", "breaker_window=0")
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.output and "\r" not in result.output and "\x00" not in result.output
    assert "row 0 \\x1b[2J\\x1b[31mcleared\\x0dover\\x00" in result.output, result.output
    failed = [json.loads(line) for line in (result.run_dir / "failed.jsonl").read_text().splitlines()]
    assert failed[0]["error_message"] == "row 0 \x1b[2J\x1b[31mcleared\rover\x00"
    for command in (["show"], ["show", "--failures"], ["watch"]):
        output = cli(*command, result.run_dir).output
        assert "\x1b" not in output and "\x00" not in output, (command, output)
        assert "ValueError: row" in output and "\\x1b[" in output, (command, output)  # numbers become N in groups
        assert "We\\x1b[5mird" in output, (command, output)  # the type's name too


def test_python_warnings_are_records_in_the_log_file_and_json_lines_on_stderr(run_batchcli: Any, tmp_path: Path) -> None:
    """A warnings.warn() in the job (or a library's deprecation) went to stderr as two plain lines, past the JSON
    lines of --log-format json, and never into batchcli.log."""
    job = tmp_path / "warns.py"
    job.write_text(
        "import warnings\n\nfrom batchcli import Service, Source, inject\n\n\n@inject\nclass Numbers(Source[int]):\n"
        "    def __iter__(self):\n        return iter(range(3))\n\n\n@inject\nclass Insecure(Service[int]):\n"
        "    def process(self, item: int) -> None:\n        warnings.warn(f'unverified HTTPS request {item}')\n"
    )
    result = run_batchcli("exec", job, "-d", "out", "--log-format", "json")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), result.output
    assert any("unverified HTTPS request" in json.loads(line).get("message", "") for line in lines), result.output
    assert "unverified HTTPS request" in (result.run_dir / "batchcli.log").read_text()
