"""``batchcli exec`` end to end: retries, records, exit codes, sources, concurrency, timeouts, rate, hooks, logs."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

PROJECTS = Path(__file__).resolve().parent / "projects"
FAST = ("-d", "out", "-p", "backoff_s=0")


def project(name: str) -> Path:
    return PROJECTS / name / f"{name}_job.py"


def observed(run_dir: Path | None, name: str) -> object:
    assert run_dir is not None
    return json.loads((run_dir / name).read_text())


# Retries


def test_subclass_of_retryable_error_is_retried(cli) -> None:
    """A ConnectionResetError is retried because ConnectionError is retryable, and succeeds once it stops failing."""
    result = cli("exec", project("retries"), *FAST, "-p", "max_retries=3")
    attempts = observed(result.run_dir, "attempts.json")
    assert attempts["reset-twice"] == 3
    assert "reset-twice" not in [f["input"] for f in result.failed]


def test_non_retryable_error_fails_at_once(cli) -> None:
    """An exception outside the retry set fails the item after exactly one attempt."""
    result = cli("exec", project("retries"), *FAST, "-p", "max_retries=3")
    assert observed(result.run_dir, "attempts.json")["bad-value"] == 1
    (bad,) = [f for f in result.failed if f["input"] == "bad-value"]
    assert bad["attempts"] == 1
    assert bad["error_type"] == "ValueError"


@pytest.mark.parametrize("max_retries", [0, 1, 4])
def test_max_retries_is_respected(cli, max_retries) -> None:
    """An item that always fails retryably is attempted max_retries + 1 times, then recorded as failed."""
    result = cli("exec", project("retries"), *FAST, "-p", f"max_retries={max_retries}")
    assert observed(result.run_dir, "attempts.json")["reset-always"] == max_retries + 1
    (always,) = [f for f in result.failed if f["input"] == "reset-always"]
    assert always["attempts"] == max_retries + 1
    assert always["error_type"] == "ConnectionResetError"
    assert always["error_message"] == "the peer hung up"
    assert result.exit_code == 1


def test_cancelled_error_from_user_code_fails_only_that_item(cli) -> None:
    """A CancelledError raised inside process() fails that item; the worker goes on and every other item is processed."""
    result = cli("exec", project("user_cancelled"), "-d", "out", "-p", "concurrency=1")
    assert result.exit_code == 1, result.output
    assert (result.summary["succeeded"], result.summary["failed"], result.summary["total"]) == (4, 1, 5)
    (failure,) = result.failed
    assert failure["input"] == 1
    assert failure["error_type"].endswith("CancelledError")
    assert "user_cancelled_job.py" in failure["traceback"]


# Records


def test_failed_jsonl_holds_each_failed_input_in_json_form(cli) -> None:
    """failed.jsonl has one record per failed item: its input in JSON form, the error, the attempts and a trimmed traceback."""
    result = cli("exec", project("failure_records"), *FAST)
    assert result.exit_code == 1, result.output
    records = {r["ordinal"]: r for r in result.failed}
    assert sorted(records) == [1, 3, 4, 6, 7]
    assert records[1]["input"] == {"id": 2, "sku": "sku-2"}  # a dataclass, as an object
    assert records[3]["input"] == {"x": 3, "y": 4}  # a named tuple, as an object
    assert records[4]["input"] == "2024-01-31T12:30:00"  # a datetime, as ISO 8601
    assert records[6]["input"] == "<Opaque thing>"  # anything else, as its repr
    assert records[7]["input"] == ["a", 1]  # JSON values as they are
    for record in records.values():
        assert record["error_type"] == "LookupError"
        assert record["error_message"].startswith("no record for ")
        assert record["attempts"] == 1
        trace = record["traceback"]
        assert "failure_records_job.py" in trace
        assert "in check" in trace and "in process" in trace
        assert "batchcli/" not in trace and "batchcli\\" not in trace
        assert trace.rstrip().endswith(f"LookupError: {record['error_message']}")


def test_persist_failed_is_called_once_with_the_failed_inputs_themselves(cli) -> None:
    """persist_failed receives, in one call, the very objects that failed (not copies, not the successes)."""
    result = cli("exec", project("failure_records"), *FAST)
    persisted = observed(result.run_dir, "persisted.json")
    assert persisted == {"calls": 1, "positions": [1, 3, 4, 6, 7], "identical": True}


def test_summary_json_counts_and_times(cli) -> None:
    """summary.json has the counts, total, start and end times and the exit status of the run."""
    result = cli("exec", project("failure_records"), *FAST)
    summary = result.summary
    assert (summary["succeeded"], summary["failed"], summary["total"]) == (3, 5, 8)
    assert summary["unprocessed"] == 0
    assert summary["exit_code"] == 1
    assert summary["status"] == "finished"
    assert summary["fatal"] is None
    started, ended = datetime.fromisoformat(summary["started_at"]), datetime.fromisoformat(summary["ended_at"])
    assert started.tzinfo is not None and started <= ended
    assert summary["job"] == "failure_records_job"
    assert result.run_dir.name.endswith("_failure_records_job")
    assert ":" not in result.run_dir.name
    assert "8/8 (100%)  ok 3  failed 5  retrying 0  in flight 0" in result.output  # the final progress line


def test_run_dir_is_private_and_holds_the_records(cli) -> None:
    """The run directory is owner-only and holds the log file, failed.jsonl and summary.json."""
    result = cli("exec", project("failure_records"), *FAST)
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"batchcli.log", "failed.jsonl", "summary.json"} <= names
    assert result.run_dir.stat().st_mode & 0o077 == 0


# Exit codes


def test_exit_0_when_every_item_succeeds(cli) -> None:
    """Exit code 0 and no failed.jsonl when every item succeeds."""
    result = cli("exec", project("hooks_sync"), "-d", "out")
    assert result.exit_code == 0, result.output
    assert result.failed == []
    assert result.summary["exit_code"] == 0
    assert "Finished: 6 succeeded, 0 failed of 6" in result.output


def test_exit_1_when_some_items_fail(cli) -> None:
    """Exit code 1 when the run finished but some items failed."""
    result = cli("exec", project("retries"), *FAST)
    assert result.exit_code == 1
    assert result.summary["failed"] == 2


@pytest.mark.parametrize("hooks", ["hooks_sync", "hooks_async"])
def test_exit_3_when_the_source_raises_mid_way_and_finish_still_runs(cli, hooks) -> None:
    """A Source raising mid-way is fatal (exit 3, its traceback in the summary), and finish() is still called once."""
    result = cli("exec", project(hooks), "-d", "out", "-p", "fail=source")
    assert result.exit_code == 3, result.output
    summary = result.summary
    assert summary["status"] == "crashed"
    assert summary["fatal"]["type"] == "RuntimeError"
    assert f"{hooks}_job.py" in summary["fatal"]["traceback"]
    assert "batchcli/" not in summary["fatal"]["traceback"]
    events = observed(result.run_dir, "events.json")
    assert events.count("finish") == 1 and events[-1] == "finish"
    assert events.count("setup") == 1 and events[0] == "setup"
    assert "The Source raised" in result.output
    assert "Traceback" in (result.run_dir / "batchcli.log").read_text()


@pytest.mark.parametrize("hooks", ["hooks_sync", "hooks_async"])
def test_exit_3_when_setup_raises_and_no_item_is_processed(cli, hooks) -> None:
    """setup() raising is fatal (exit 3): no item is processed, and finish() is still called."""
    result = cli("exec", project(hooks), "-d", "out", "-p", "fail=setup")
    assert result.exit_code == 3, result.output
    assert result.summary["fatal"]["type"] == "PermissionError"
    assert result.summary["succeeded"] == 0
    assert observed(result.run_dir, "events.json") == ["setup", "finish"]


# Hooks and sources


def test_sync_hooks_run_once_around_the_items(cli) -> None:
    """Sync setup() runs once before the first item and finish() once after the last."""
    result = cli("exec", project("hooks_sync"), "-d", "out")
    events = observed(result.run_dir, "events.json")
    assert events[0] == "setup" and events[-1] == "finish"
    assert sorted(events[1:-1]) == [f"process {n}" for n in range(6)]


def test_async_iterable_source_with_async_hooks(cli) -> None:
    """An async-iterable Source is drained with async for; async setup()/finish() are awaited once each."""
    result = cli("exec", project("hooks_async"), "-d", "out", "-p", "pages=3")
    assert result.exit_code == 0, result.output
    events = observed(result.run_dir, "events.json")
    assert events[0] == "setup" and events[-1] == "finish"
    assert sorted(events[1:-1], key=lambda e: int(e.split()[1])) == [f"process {n}" for n in range(12)]
    assert result.summary["total"] == 12  # no __len__: counted when the source ran out


def test_generator_source_without_len_is_counted_at_the_end(cli) -> None:
    """A generator without __len__ runs, and the total is the number of items it yielded."""
    result = cli("exec", project("generator_source"), "-d", "out", "-p", "count=50", "-p", "concurrency=4")
    assert result.exit_code == 0, result.output
    assert result.summary["total"] == 50
    assert result.summary["succeeded"] == 50
    assert "50 succeeded, 0 failed of 50" in result.output


def test_generator_source_is_streamed_not_materialised(cli) -> None:
    """The source is read only as fast as items are processed: never more than concurrency ahead."""
    result = cli("exec", project("generator_source"), "-d", "out", "-p", "count=200", "-p", "concurrency=4")
    stream = observed(result.run_dir, "stream.json")
    assert stream["processed"] == 200
    assert stream["max_ahead"] <= 4


def test_batchframe_next_source(cli) -> None:
    """A Source that only defines Batchframe's next() (raising StopIteration) yields every item once."""
    result = cli("exec", PROJECTS / "batchframe_style", "-c", "config_dev", "-d", "out", "-p", "fail_every=100")
    assert result.exit_code == 1  # item 7 raises KeyError
    attempts = observed(result.run_dir, "observed.json")["attempts"]
    assert sorted(int(k) for k in attempts) == list(range(1, 11))
    assert result.summary["total"] == 10


# Concurrency, timeouts, rate


@pytest.mark.parametrize("concurrency", [3, 5])
def test_sync_process_runs_in_threads_up_to_concurrency(cli, concurrency) -> None:
    """A plain def process runs in worker threads, exactly concurrency at once when there is enough work, never more."""
    result = cli("exec", project("threads"), "-d", "out", "-p", f"concurrency={concurrency}", "-p", "count=24")
    assert result.exit_code == 0, result.output
    threads = observed(result.run_dir, "threads.json")
    assert threads["max_concurrent"] == concurrency
    assert 1 < len(threads["threads"]) <= concurrency
    assert all(name.startswith("batchcli-item") for name in threads["threads"])


def test_item_timeout_cancels_a_slow_attempt_and_retries_it(cli) -> None:
    """item_timeout_s cancels each slow attempt as a retryable TimeoutError; the item fails after max_retries + 1."""
    result = cli(
        "exec", project("timeout"), *FAST, "-p", "item_timeout_s=0.05", "-p", "max_retries=2",
    )
    assert result.exit_code == 1, result.output
    seen = observed(result.run_dir, "timeout.json")
    assert seen["attempts"] == {"quick": 1, "hangs": 3, "quick-too": 1}
    assert seen["cancelled"] == 3
    (failure,) = result.failed
    assert failure["input"] == "hangs"
    assert failure["error_type"] == "TimeoutError"
    assert failure["attempts"] == 3
    assert "item_timeout_s" in failure["error_message"]


def test_a_blocking_call_in_async_code_is_named_when_it_holds_the_loop_past_the_timeout(cli, tmp_path: Path) -> None:
    """A sync call inside an async process holds the event loop: item_timeout_s cannot interrupt it, and nothing else
    runs. The run hung in silence; it now warns once, naming the job's line, and notes when the loop is free again."""
    ledger = tmp_path / "ledger"
    result = cli("exec", project("loop_held"), "-d", "out", "-p", f"ledger={ledger}", "-p", "item_timeout_s=0.3",
                 "-p", "block_s=1.5", "-p", "at=2")  # fmt: skip
    assert result.exit_code == 0, result.output
    log = (result.run_dir / "batchcli.log").read_text()
    flat = " ".join(log.split())
    job = project("loop_held")
    assert flat.count("The job's code has held the event loop for") == 1, log
    assert f"in process() at {job}:37 (time.sleep(self.block_s)" in flat, log
    assert "make process a plain def" in flat, log
    assert "item_timeout_s cannot interrupt it" in flat and "The event loop had a turn again" in flat, log
    assert sorted(map(int, ledger.read_text().split())) == [0, 1, 2, 3, 4]


def test_a_sync_setup_that_holds_the_loop_is_not_told_to_make_process_sync(cli, tmp_path: Path) -> None:
    """The warning advised "make process a plain def" for a slow sync setup(), which that would not change."""
    ledger = tmp_path / "ledger"
    result = cli("exec", project("loop_held"), "-d", "out", "-p", f"ledger={ledger}", "-p", "item_timeout_s=0.3",
                 "-p", "at=-1", "-p", "setup_s=1.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    flat = " ".join((result.run_dir / "batchcli.log").read_text().split())
    assert f"in setup() at {project('loop_held')}:33" in flat, flat
    assert "make process a plain def" not in flat and "a stop still ends the run" in flat, flat


def test_an_async_job_that_awaits_is_never_said_to_hold_the_loop(cli, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    result = cli("exec", project("loop_held"), "-d", "out", "-p", f"ledger={ledger}", "-p", "item_timeout_s=0.3",
                 "-p", "at=-1", "-p", "count=2000")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "held the event loop" not in (result.run_dir / "batchcli.log").read_text()


def test_rate_limit_spaces_item_starts(cli) -> None:
    """rate_limit caps starts per second: 20 items at 50/s start over at least ~0.38 s, even with 10 in flight."""
    result = cli("exec", project("rate_limit"), "-d", "out", "-p", "rate_limit=50", "-p", "count=20")
    assert result.exit_code == 0, result.output
    starts = observed(result.run_dir, "starts.json")
    assert len(starts) == 20
    assert max(starts) - min(starts) >= 0.3


def test_retrying_item_does_not_hold_a_concurrency_slot(cli) -> None:
    """While an item waits out its backoff, the only slot keeps serving the other items."""
    result = cli(
        "exec", project("retry_slot"), "-d", "out", "-p", "concurrency=1", "-p", "backoff_s=0.3", "-p", "count=6",
    )
    assert result.exit_code == 0, result.output
    events = observed(result.run_dir, "events.json")
    second_attempt = events.index("start 0 attempt 2")
    assert all(events.index(f"done {n}") < second_attempt for n in range(1, 6))


# Logs


def test_default_console_shows_warnings_not_info(cli) -> None:
    """Without -v the console shows the failure but not info or debug lines; the log file has the traceback."""
    result = cli("exec", project("logging_levels"), "-d", "out")
    assert result.exit_code == 1
    assert "record 2 is corrupt" in result.output
    assert "info line" not in result.output
    assert "debug line" not in result.output
    assert "Traceback" not in result.output
    log = (result.run_dir / "batchcli.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "in parse_record" in log and "logging_levels_job.py" in log
    assert "ValueError: record 2 is corrupt" in log
    assert "info line for item 0" in log
    assert "debug line" not in log


def test_the_log_file_leaves_out_the_info_of_libraries_in_a_virtualenv_inside_the_project(cli, tmp_path: Path) -> None:
    """A library's info lines reach the log file only with -v; one installed in a virtualenv inside the project
    (``.venv``) counted as the job's own code, and its httpx wrote a line per request."""
    project = tmp_path / "inside"
    libraries = project / ".venv" / "lib" / "python3.11" / "site-packages"
    libraries.mkdir(parents=True)
    (libraries / "chatty_library.py").write_text(
        "import logging\n\ndef call(item):\n    logging.getLogger('chatty_library').info('library line for %d', item)\n"
    )
    (project / "job.py").write_text(
        "import logging, sys\nfrom pathlib import Path\n"
        "sys.path.insert(0, str(Path(__file__).parent / '.venv' / 'lib' / 'python3.11' / 'site-packages'))\n"
        "import chatty_library\nfrom batchcli import Service, Source, inject\n\n"
        "@inject\nclass Numbers(Source[int]):\n    def __iter__(self):\n        return iter(range(3))\n\n"
        "@inject\nclass Calls(Service[int]):\n    async def process(self, item: int) -> None:\n"
        "        logging.getLogger('inside_job').info('own line for %d', item)\n        chatty_library.call(item)\n"
    )
    quiet = cli("exec", project / "job.py", "-d", "out")
    assert quiet.exit_code == 0, quiet.output
    log = (quiet.run_dir / "batchcli.log").read_text()
    assert "own line for 2" in log and "library line" not in log, log
    verbose = cli("exec", project / "job.py", "-d", "out", "-v")
    assert "library line for 2" in (verbose.run_dir / "batchcli.log").read_text()


def test_v_shows_info_and_vv_shows_debug(cli) -> None:
    """-v raises the console to info, -vv to debug (console and log file)."""
    info = cli("exec", project("logging_levels"), "-d", "out", "-v")
    assert "info line for item 1" in info.output
    assert "debug line" not in info.output
    assert "debug line" not in (info.run_dir / "batchcli.log").read_text()  # -v is info in the file too
    debug = cli("exec", project("logging_levels"), "-d", "out", "-vv")
    assert "debug line for item 1" in debug.output
    assert "debug line for item 1" in (debug.run_dir / "batchcli.log").read_text()


# The real process


def test_subprocess_success_exits_0(run_batchcli) -> None:
    """python -m batchcli exec runs a job to the end and exits 0 when every item succeeds."""
    result = run_batchcli("exec", project("hooks_async"), "-d", "out")
    assert result.exit_code == 0, result.output
    assert result.summary["succeeded"] == 12
    assert "Finished: 12 succeeded, 0 failed of 12" in result.output


def test_subprocess_failures_exit_1(run_batchcli) -> None:
    """python -m batchcli exec exits 1 when some items failed, and writes failed.jsonl."""
    result = run_batchcli("exec", project("retries"), *FAST, "-p", "max_retries=1")
    assert result.exit_code == 1, result.output
    assert sorted(f["input"] for f in result.failed) == ["bad-value", "reset-always", "reset-twice"]


def test_subprocess_bad_param_exits_2_without_traceback(run_batchcli) -> None:
    """python -m batchcli exec with a malformed -p exits 2 with a message and no Python traceback."""
    result = run_batchcli("exec", project("retries"), "-d", "out", "-p", "max_retries")
    assert result.exit_code == 2
    assert "-p max_retries=VALUE" in result.output
    assert "Traceback" not in result.output
    assert result.run_dir is None


# Loading


def test_file_in_a_directory_project_keeps_its_package_imports(cli) -> None:
    """A .py file given inside a directory without __init__.py can import its siblings relatively; others stay unloaded."""
    result = cli("exec", PROJECTS / "file_in_package" / "main.py", "-d", "out")
    assert result.exit_code == 0, result.output
    assert result.summary["succeeded"] == 5
    assert result.summary["job"] == "file_in_package"


@pytest.mark.parametrize(
    "args",
    [[], ["-p", "sync=true"], ["-p", "executor=process", "-p", "workers=2"], ["-p", "interrupt=true"]],
    ids=["async", "sync-in-a-thread", "process-workers", "keyboard-interrupt"],
)
def test_a_process_that_calls_sys_exit_fails_its_item_and_the_run_goes_on(run_batchcli: Any, args: list[str]) -> None:
    """sys.exit() inside process() (a library's main called as a function), or a KeyboardInterrupt it raises: the
    item fails with its own traceback and the others run; before, the worker task died ("Task exception was never
    retrieved", with asyncio's frames) and the run ended as stopped with an item in flight."""
    result = run_batchcli("exec", PROJECTS / "exits" / "job.py", "-d", "out", "-p", "max_retries=0", *args)
    assert result.exit_code == 1, result.output
    assert result.summary["status"] == "finished"
    assert (result.summary["succeeded"], result.summary["failed"]) == (1, 5)
    assert "Task exception was never retrieved" not in result.output and "asyncio" not in result.output
    kind = "KeyboardInterrupt" if "interrupt=true" in args else "SystemExit"
    assert {f["error_type"] for f in result.failed} == {kind}
    expected = "KeyboardInterrupt" if kind == "KeyboardInterrupt" else "SystemExit: 2"
    assert f"failed after 1 attempt: {expected}\n" in result.output  # an empty message adds no ": "
    assert "job.py" in result.failed[0]["traceback"]


@pytest.mark.parametrize(
    ("where", "what"), [("setup", "The job could not start"), ("source", "The Source raised")], ids=["setup", "source"]
)
def test_sys_exit_in_setup_or_the_source_crashes_the_run_with_the_users_traceback(
    run_batchcli: Any, where: str, what: str
) -> None:
    """sys.exit() in setup() (which runs in a task of its own) or in the Source: a crash (exit 3) that names where and
    shows the user's traceback; it used to end the run's loop, and the run said "Stopped" (130) without a word."""
    result = run_batchcli("exec", PROJECTS / "exits" / "job.py", "-d", "out", "-p", f"where={where}", "-p", "exit=4")
    assert result.exit_code == 3, result.output
    assert what in result.output and "SystemExit: 4" in result.output
    assert "job.py" in result.output and "Task exception was never retrieved" not in result.output
    assert result.summary["status"] == "crashed"
