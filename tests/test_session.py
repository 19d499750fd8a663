"""One Session runs every job, whatever the entry point; the commands that only read runs load no driver."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import subprocess_env

from batchcli.outcome import Tally
from batchcli.run.controller import RunController
from batchcli.run.session import Session
from batchcli.testing import run_job

PROJECTS = Path(__file__).resolve().parent / "projects"
ORDERS = PROJECTS / "journal_retry" / "orders.py"


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Every ``Session.run`` call from now on: the launch's kind and how the run ended (None: nothing ran)."""
    calls: list[tuple[str, str | None]] = []
    original = Session.run

    def spy(self: Session, launch: Any) -> Any:
        result = original(self, launch)
        calls.append((type(launch).__name__, None if result is None else result.status))
        return result

    monkeypatch.setattr(Session, "run", spy)
    return calls


def test_exec_resume_retry_and_run_job_all_go_through_the_one_session(
    cli: Any, tmp_path: Path, sessions: list[tuple[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """exec, resume, retry and testing.run_job each hand their run to Session.run, once, and nothing else runs it."""
    monkeypatch.setenv("ORDERS_PERSIST_DIR", str(tmp_path))
    logs = tmp_path / "logs"
    logs.mkdir()
    first = cli("exec", ORDERS, "-d", "out", "-p", "count=8", "-p", f"log_dir={logs}")
    assert first.exit_code == 1, first.output
    assert sessions == [("ShardStart", "finished")]  # exec's launch: Fresh's, or one shard of a group

    resumed = cli("resume", first.run_dir)
    assert resumed.exit_code == 0 and "finished already" in resumed.output, resumed.output
    assert sessions[-1] == ("Resume", None)

    retried = cli("retry", first.run_dir, "-p", "strict=false")
    assert retried.exit_code == 0, retried.output
    assert sessions[-1] == ("Retry", "finished")

    outcome = run_job(ORDERS, params={"count": 4, "log_dir": logs}, output_dir=tmp_path / "tests")
    assert outcome.failed == 1
    assert sessions[-1] == ("Fresh", "finished")
    assert len(sessions) == 4


def test_a_bad_param_is_shown_by_the_error_itself_with_its_exit_code(cli: Any) -> None:
    """A domain error raised inside a command prints one 'Error:' paragraph with the fix and exits 2, with no traceback."""
    result = cli("exec", ORDERS, "-d", "out", "-p", "count")
    assert result.exit_code == 2
    assert result.output.startswith("Error: -p 'count' is not NAME=VALUE. Write it as -p count=VALUE"), result.output
    assert "Traceback" not in result.output


def _modules_after(*args: str) -> list[str]:
    """Run ``batchcli ARGS`` in a fresh interpreter; the batchcli executor and driver modules it imported."""
    code = (
        "import json, sys\n"
        "from batchcli.cli import app\n"
        "try:\n"
        f"    app({list(args)!r}, prog_name='batchcli')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "loaded = [m for m in sys.modules if m.startswith('batchcli.executors') or m == 'batchcli.run.driver']\n"
        "print(json.dumps(sorted(loaded)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_runs_and_show_import_no_executor_and_no_driver(run_batchcli: Any, tmp_path: Path) -> None:
    """`runs` and `show` only read run directories: they load neither an executor module nor the run driver."""
    logs = tmp_path / "logs"
    logs.mkdir()
    first = run_batchcli(
        "exec", ORDERS, "-d", "out", "-p", "count=4", "-p", f"log_dir={logs}", ORDERS_PERSIST_DIR=str(tmp_path)
    )
    assert first.run_dir is not None, first.output
    assert _modules_after("runs", "-d", str(tmp_path / "out")) == []
    assert _modules_after("show", str(first.run_dir)) == []


def test_the_controller_needs_only_the_run_handle(capsys: pytest.CaptureFixture[str]) -> None:
    """`self` in the pause shell works over any RunHandle: its stats read the handle's events, and stop() waits for the shell to close."""
    tally = Tally()
    tally.total = 5
    handle = SimpleNamespace(
        job=SimpleNamespace(config=SimpleNamespace(concurrency=3, rate_limit=None, breaker_window=100)),
        tally=tally,
        run_dir=Path("runs/x"),
        display=None,
        paused=threading.Event(),
        stop_requested=threading.Event(),
        fatal=None,
        loop=None,
        executor=None,
    )
    controller = RunController(handle)  # type: ignore[arg-type]
    assert not controller.stats().paused
    handle.paused.set()
    stats = controller.stats()
    assert stats.paused and not stats.stopping and stats.concurrency == 3 and stats.unprocessed == 5
    assert stats.breaker == "closed"
    assert controller.in_flight == {}
    controller.stop()
    assert controller.stats().stopping and not handle.stop_requested.is_set()
    assert "The run stops when you leave the shell" in capsys.readouterr().out
