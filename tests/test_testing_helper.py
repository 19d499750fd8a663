"""batchcli.testing.run_job: a job's author tests it with pytest in a few lines."""

from __future__ import annotations

import json
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, PROJECTS

from batchcli.errors import ProjectError, UsageError
from batchcli.testing import FailedItem, JobOutcome, raw_values, run_job

FLAKY = PROJECTS / "ux_flaky" / "job.py"


def summary(outcome: JobOutcome) -> dict[str, Any]:
    return json.loads((outcome.run_dir / "summary.json").read_text())  # type: ignore[no-any-return]


def test_outcome_has_counts_failures_with_reasons_and_the_run_dir(tmp_path: Path) -> None:
    """The outcome carries the counts, each failed input with its reason, the exit code and the run directory."""
    outcome = run_job(FLAKY, output_dir=tmp_path)
    assert (outcome.succeeded, outcome.failed, outcome.total, outcome.unprocessed) == (4, 1, 5, 0)
    assert (outcome.exit_code, outcome.status, outcome.ok) == (1, "finished", False)
    assert outcome.failures == (FailedItem(input=3, error_type="ValueError", message="3 is not allowed", attempts=1),)
    assert outcome.run_dir.parent == tmp_path
    assert (outcome.run_dir / "failed.jsonl").exists()
    assert outcome.fatal is None


def test_backoff_is_off_unless_given(tmp_path: Path) -> None:
    """Retries do not wait (backoff_s=0 overrides the configuration, unrecorded) unless the test sets backoff_s itself."""
    outcome = run_job(FLAKY, output_dir=tmp_path)
    assert "backoff_s" not in summary(outcome)["params"]  # injected for the test, not asked for
    assert outcome.succeeded == 4  # number 2 succeeded on its retry
    outcome = run_job(FLAKY, params={"backoff_s": 0.01, "count": 2}, output_dir=tmp_path)
    assert summary(outcome)["params"]["backoff_s"] == 0.01


def test_params_take_python_values(tmp_path: Path) -> None:
    """Ints, sets and other Python values are passed as the -p text that casts back to them."""
    outcome = run_job(FLAKY, params={"count": 4, "fail_on": {2, 4}}, output_dir=tmp_path)
    assert sorted(f.input for f in outcome.failures) == [2, 4]
    assert outcome.succeeded == 2


def test_a_list_param_with_commas_in_its_elements_reaches_the_job_whole(tmp_path: Path) -> None:
    """run_job passes a list element holding a comma (or a double quote) as one element, not split at the comma."""
    tags = ["Smith, J", 'say "hi"', "plain"]
    params = {"count": 1, "target": "out/here", "since": "2024-01-31", "color": "red", "tags": tags}
    outcome = run_job(PROJECTS / "typed_params" / "typed_params_job.py", params=params, output_dir=tmp_path)
    values = json.loads((outcome.run_dir / "values.json").read_text())
    assert values["tags"] == [tags, "list"]


def test_raw_values_round_trip_through_casting() -> None:
    """raw_values writes values the way -p takes them."""
    assert raw_values(True) == ("true",)
    assert raw_values(None) == ("none",)
    assert raw_values(timedelta(minutes=90)) == ("5400s",)
    assert raw_values([1, 2]) == ("1", "2")
    assert raw_values({"a": 1, "b": 2}) == ("a:1,b:2",)
    assert raw_values(Path("x/y")) == ("x/y",)


def test_a_mistake_raises_the_cli_message(tmp_path: Path) -> None:
    """A misspelt param raises the same UsageError the CLI prints, suggestion included."""
    with pytest.raises(UsageError, match="'cuont' \\(did you mean 'count'\\?\\)"):
        run_job(FLAKY, params={"cuont": 3}, output_dir=tmp_path)
    with pytest.raises(ProjectError, match="Path 'no/such/job.py' does not exist"):  # as documented in projects.md
        run_job("no/such/job.py", output_dir=tmp_path)


def test_empty_targets_output_dirs_and_unnamed_params_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_job('') loaded the current directory as a project (importing every .py file in it), output_dir='' made the
    run directory in it, and params={1: 2} raised a TypeError from inside batchcli; exec refuses the first two."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stray.py").write_text("raise SystemExit('stray.py was imported')\n")
    with pytest.raises(UsageError, match="target '' is empty"):
        run_job("")
    with pytest.raises(UsageError, match="output_dir '' is empty"):
        run_job(FLAKY, output_dir="")
    with pytest.raises(UsageError, match="params must be named by strings"):
        run_job(FLAKY, params={1: 2})  # type: ignore[dict-item]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stray.py"]


def test_a_crash_is_reported_not_raised(tmp_path: Path) -> None:
    """When the source raises, the outcome says crashed with exit code 3 and keeps the error."""
    outcome = run_job(FLAKY, params={"explode": True}, output_dir=tmp_path)
    assert (outcome.status, outcome.exit_code) == ("crashed", 3)
    assert isinstance(outcome.fatal, RuntimeError)
    assert "the source lost its connection" in outcome.output


def test_environment_is_read_only_when_passed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment does not leak into a test; environ= passes variables explicitly."""
    monkeypatch.setenv("BATCHCLI_COUNT", "1")
    assert run_job(FLAKY, output_dir=tmp_path).total == 5
    assert run_job(FLAKY, output_dir=tmp_path, environ={"BATCHCLI_COUNT": "2"}).total == 2


def test_default_output_dir_is_a_temporary_directory_removed_afterwards() -> None:
    """Without output_dir the run directory goes to a temporary directory (not the working directory), removed on return."""
    outcome = run_job(FLAKY, params={"count": 1})
    assert outcome.succeeded == 1
    assert not outcome.run_dir.exists()
    assert not Path("batchcli_outputs").exists()


def test_runs_from_a_module_name_and_twice_in_one_process(tmp_path: Path) -> None:
    """A module target works, and the same job can run again in the same process."""
    sys.path.insert(0, str(PROJECTS / "ux_installed"))
    first = run_job("ux_demo_jobs.squares", config="config_prod", params={"count": 2}, output_dir=tmp_path)
    second = run_job("ux_demo_jobs.squares", config="config_dev", output_dir=tmp_path)
    assert (first.succeeded, second.succeeded) == (2, 4)
    assert (second.run_dir / "squares.txt").read_text().startswith("dev: 1")


def test_runs_off_the_main_thread(tmp_path: Path) -> None:
    """No signal handlers are installed, so a job runs from any thread."""
    results: list[JobOutcome] = []
    thread = threading.Thread(target=lambda: results.append(run_job(FLAKY, params={"count": 2}, output_dir=tmp_path)))
    thread.start()
    thread.join()
    assert results[0].succeeded == 2


def test_the_module_docstring_examples(tmp_path: Path) -> None:
    """The examples in batchcli.testing's docstring (and the README) run as written, against examples/reindex."""
    outcome = run_job(EXAMPLES / "reindex", config="config_dev", params={"generate": 20}, output_dir=tmp_path)
    assert outcome.succeeded == 20 and outcome.failed == 0

    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{"title": "no id"}\n')
    outcome = run_job(EXAMPLES / "reindex", config="config_dev", params={"records": tmp_path / "bad.jsonl"}, output_dir=tmp_path)
    assert outcome.failures[0].error_type == "KeyError"


def test_a_keyboard_interrupt_in_run_job_stops_the_run_resumably_before_it_goes_on(tmp_path: Path) -> None:
    """Ctrl-C in a notebook or a test calling run_job raised out of it while the run's threads went on working: the
    run stayed "running" and resume was refused for as long as the process lived. It now stops the run at once,
    recorded as stopped, and then raises; resume in the same process's lifetime finishes exactly the rest."""
    import signal
    import subprocess

    from conftest import subprocess_env
    from joblog import JobLog, wait_for

    ledger = tmp_path / "ledger.txt"
    out = tmp_path / "out"
    script = tmp_path / "interrupted.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        # As in a notebook: Ctrl-C raises KeyboardInterrupt, even when this test runs with SIGINT ignored (a
        # background job of a non-interactive shell), which the child would inherit and never hear the signal.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from batchcli.testing import run_job\n"
        "try:\n"
        f"    run_job({str(PROJECTS / 'unattended' / 'job.py')!r}, output_dir={str(out)!r},\n"
        f"            params={{'count': 150, 'delay_s': 0.05, 'concurrency': 2, 'ledger': {str(ledger)!r}}})\n"
        "except KeyboardInterrupt:\n"
        "    print('INTERRUPTED', flush=True)\n"
        "    time.sleep(1)\n"  # the threads of a run left working would go on writing meanwhile
        f"    run_dir = next(__import__('pathlib').Path({str(out)!r}).iterdir())\n"
        "    resumed = subprocess.run([sys.executable, '-m', 'batchcli', 'resume', str(run_dir)], capture_output=True, text=True)\n"
        "    print('RESUMED', resumed.returncode, resumed.stderr[-300:], flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=subprocess_env())  # fmt: skip
    log = JobLog(ledger)
    try:
        wait_for(lambda: len(log.done()) >= 10, "the run under way")
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert "INTERRUPTED" in stdout, (child.returncode, stderr)
    assert "RESUMED 0" in stdout, stdout + stderr  # before: refused, the run still "running" in this process
    assert sorted(log.done()) == list(range(150)) and log.done_twice() == []


def test_a_keyboard_interrupt_while_the_run_starts_its_threads_is_raised_once_they_run() -> None:
    """Raised between starting the run's loop thread and waiting on it, a KeyboardInterrupt escaped the handler that
    stops the run, and left the loop thread working (resume refused: "still running"). ``held_interrupt`` raises it
    at the end of the block instead, where that handler catches it; code after the signal still ran."""
    import os
    import signal

    from batchcli.run.interrupts import held_interrupt

    ran = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, even if this process ignores SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):
            with held_interrupt():
                os.kill(os.getpid(), signal.SIGINT)
                ran.append("after the signal")
        assert ran == ["after the signal"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with held_interrupt():  # no signal: nothing raised
            ran.append("again")
        assert ran == ["after the signal", "again"]
    finally:
        signal.signal(signal.SIGINT, previous)


GC_JOB = '''
import gc

from batchcli import Param, Service, Source, inject


@inject
class Three(Source[int]):
    def __iter__(self):
        return iter(range(3))


@inject
class Threshold(Service[int]):
    def __init__(self, own: Param[int] = 0) -> None:
        self.own = own

    def setup(self) -> None:
        if self.own:
            gc.set_threshold(self.own)

    async def process(self, item: int) -> int:
        return gc.get_threshold()[0]
'''


def test_the_collector_runs_less_often_during_a_run_and_as_before_after_it(tmp_path: Path) -> None:
    """While the loop runs, the collector's first threshold is raised (waiting results set it off for nothing), and
    put back after the run; a threshold the job's own code set is left as the job set it."""
    import gc

    from batchcli.run.driver import GC_THRESHOLD

    job = tmp_path / "gcjob.py"
    job.write_text(GC_JOB)
    before = gc.get_threshold()
    try:
        outcome = run_job(job, output_dir=tmp_path)
        assert [r.value for r in outcome.results] == [GC_THRESHOLD] * 3
        assert gc.get_threshold() == before
        outcome = run_job(job, params={"own": 1234}, output_dir=tmp_path)
        assert [r.value for r in outcome.results] == [1234] * 3
        assert gc.get_threshold()[0] == 1234
    finally:
        gc.set_threshold(*before)
