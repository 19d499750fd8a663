"""Shared fixtures: the real CLI in-process and as a subprocess, isolated from each other."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from batchcli.cli import app

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = Path(__file__).resolve().parent / "projects"
EXAMPLES = ROOT / "examples"


LIBRARY_DIRS = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, str(ROOT / "batchcli")})


def _is_project_module(module: Any) -> bool:
    """A module a test loaded from a project (not a library, not batchcli, not a built-in)."""
    locations = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
    return any(loc and not str(loc).startswith(LIBRARY_DIRS) for loc in locations)


@pytest.fixture(scope="session", autouse=True)
def child_bytecode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Python children of the tests cache their bytecode in this session's temp directory.

    The machine may set PYTHONDONTWRITEBYTECODE, and then each of the suite's hundreds of ``python -m
    batchcli`` children compiled batchcli (and the project) from source again: about 90 ms of CPU
    each. The cache lives outside the checkout, so no test sees ``__pycache__`` in a project.
    """
    with pytest.MonkeyPatch.context() as env:
        env.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        env.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.mktemp("pycache")))
        yield


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each test runs in its own directory and leaves sys.modules and sys.path as it found them.

    Only project modules are dropped: dropping a library's lazily imported submodules would split
    it in two (typer's help would hold rich classes from one import and get objects from another).
    """
    monkeypatch.chdir(tmp_path)
    modules = dict(sys.modules)
    path = list(sys.path)
    yield
    for name in [n for n, m in sys.modules.items() if n not in modules and _is_project_module(m)]:
        del sys.modules[name]
    sys.path[:] = path


@dataclass
class Outcome:
    """What one CLI invocation did."""

    exit_code: int
    output: str
    run_dir: Path | None

    @property
    def summary(self) -> dict[str, Any]:
        assert self.run_dir is not None, self.output
        return json.loads((self.run_dir / "summary.json").read_text())  # type: ignore[no-any-return]

    @property
    def failed(self) -> list[dict[str, Any]]:
        assert self.run_dir is not None, self.output
        path = self.run_dir / "failed.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def newest_run(output_dir: Path) -> Path | None:
    runs = sorted(output_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime) if output_dir.exists() else []
    return runs[-1].parent if runs else None


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """Run ``batchcli ARGS...`` in-process with typer's CliRunner."""

    def invoke(*args: str, input: str | None = None) -> Outcome:
        out = tmp_path / "out"
        before = set(out.glob("*")) if out.exists() else set()
        result = CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
        after = newest_run(out)
        return Outcome(result.exit_code, result.output, after if after not in before else None)

    return invoke


@pytest.fixture(params=["memory", "disk"])
def keys_kept(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where a run holds the item keys it skips: a set in memory, or (as past ``KEYS_HELD_MAX`` keys) a ``KeyIndex``
    on disk; the test runs once each way, in-process (``cli``)."""
    if request.param == "disk":
        monkeypatch.setattr("batchcli.journal.keyindex.KEYS_HELD_MAX", 0)
    return str(request.param)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m batchcli`` child: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("BATCHCLI_PROGRESS_INTERVAL", "0.2")
    env.update(extra)
    return env


@pytest.fixture
def run_batchcli(tmp_path: Path) -> Any:
    """Run ``python -m batchcli ARGS...`` as a real process (no terminal) and wait for it."""

    def run(*args: str, timeout: float = 120, **env: str) -> Outcome:
        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, "-m", "batchcli", *[str(a) for a in args]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=subprocess_env(**env),
        )
        return Outcome(proc.returncode, proc.stdout + proc.stderr, newest_run(out))

    return run



RAY = Path(sys.executable).parent / "ray"


@pytest.fixture(scope="session")
def ray_site(ray_head: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory on the PYTHONPATH of ``ray_head``'s workers: what a test installs there, the actors can import."""
    return _ray_shared(tmp_path_factory) / "ray-site"


def _ray_shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory both xdist workers of this session see (only this worker's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_TESTRUNUID") else base


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `ray start --head` on this machine (2 CPUs, a small object store, no dashboard) shared by the Ray tests.

    Ray takes 5-13 s to start here, so both pytest-xdist workers share one: the first to need it starts it
    under a file lock, each registers while it uses it, and the last to leave stops it. (xdist's
    ``--dist loadgroup`` would keep them on one worker, but with pytest 9 it no longer groups anything.)
    """
    import fcntl

    shared = _ray_shared(tmp_path_factory)
    me = shared / "ray-users" / os.environ.get("PYTEST_XDIST_WORKER", "main")
    state = shared / "ray-head.json"

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        with (shared / "ray-head.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    with locked():
        if not state.exists():
            (shared / "ray-site").mkdir(exist_ok=True)
            state.write_text(json.dumps(_start_ray_head(shared / "ray-site")))
        me.parent.mkdir(exist_ok=True)
        me.touch()
        head = json.loads(state.read_text())
    try:
        yield head["address"]
    finally:
        with locked():
            me.unlink()
            if not any(me.parent.iterdir()):
                _stop_ray_head(head)
                state.unlink()


def _start_ray_head(site: Path) -> dict[str, Any]:
    """Start Ray in a session of its own (a group signal a test sends to a run never reaches it).

    Its temp dir is a short private directory (Ray's sockets have a path limit); no token auth (a driver
    given an explicit address does not read the token), no usage stats, no dashboard.
    """
    import re
    import tempfile
    import time

    temp = Path(tempfile.mkdtemp(prefix="bcray-", dir="/tmp"))
    log = temp / "start.log"
    env = subprocess_env(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(site)])
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(RAY), "start", "--head", "--block", "--port=0", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                "--include-dashboard=false", "--object-store-memory=150000000", f"--temp-dir={temp / 'r'}",
                "--disable-usage-stats",
            ],
            env=env, cwd=temp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    head = {"pid": proc.pid, "temp": str(temp)}
    deadline = time.monotonic() + 90
    while not (found := re.search(r"ray start --address='[^:']+:(\d+)'", log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_ray_head(head)
            raise AssertionError(f"ray start did not come up:\n{log.read_text()}")
        time.sleep(0.1)
    return {**head, "address": f"127.0.0.1:{found.group(1)}"}


def _stop_ray_head(head: dict[str, Any]) -> None:
    """SIGKILL to Ray's session (SIGTERM makes it drain for up to 30 s); its workers leave once the raylet is gone."""
    import shutil
    import signal

    try:
        os.killpg(head["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    shutil.rmtree(head["temp"], ignore_errors=True)
