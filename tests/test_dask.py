"""The Dask executor on the cluster's side: shipped code that nobody else can swap, workers that die and come
back, long-lived clusters serving several projects, and addresses that are bad input.

The executor behaviour shared with the other executors is in ``test_executors.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import EXAMPLES, PROJECTS, newest_run, subprocess_env
from tests.test_executors import SHIPPED, _free_port, dask_cluster, isolated, separate_dask_cluster  # noqa: F401 (fixtures)

DEATHS = PROJECTS / "dask_deaths" / "job.py"
SPY = PROJECTS / "executors" / "spy.py"
REINDEX = EXAMPLES / "reindex"


def ok_items(records: Path) -> Counter[int]:
    """How many times each item succeeded, over every worker process."""
    return Counter(int(line.split()[0]) for path in records.glob("ok-*") for line in path.read_text().splitlines())


# Defect: another local user could run code as us through the bundle cache.


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None, reason="playing the other user needs root and runuser"
)
@pytest.mark.parametrize("planted", [["batchcli-projects"], ["batchcli-projects", f"batchcli-projects-{os.getuid()}"]])
def test_bundle_directory_planted_by_another_user_is_never_trusted(
    tmp_path: Path, run_batchcli: Any, request: pytest.FixtureRequest, planted: list[str]
) -> None:
    """A bundle cache another user created first, with their code and a .complete marker, is neither used nor run."""
    from batchcli.executors.bundle import bundle_project
    from batchcli.load.project import load_project

    # A world-writable temp directory like /tmp, outside pytest's (private) one so that nobody can reach it.
    shared = Path(tempfile.mkdtemp(prefix="batchcli-shared-tmp-"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o1777)
    bundle = bundle_project(load_project(str(SHIPPED)))
    assert bundle is not None
    evil = f"import pathlib\npathlib.Path({str(shared / 'pwned')!r}).write_text('ran as victim')\n"
    for name in planted:  # played by the other user: the whole cache, ready to be trusted
        cache = shared / name / bundle.digest
        script = (
            'mkdir -p "$CACHE/shipped/config" && printf %s "$EVIL" > "$CACHE/shipped/job.py" && '
            ': > "$CACHE/shipped/config/config_dev.py" && : > "$CACHE/.complete" && chmod -R 777 "$CACHE/.."'
        )
        subprocess.run(
            ["runuser", "-u", "nobody", "--", "env", f"CACHE={cache}", f"EVIL={evil}", "sh", "-c", script],
            check=True,
            timeout=60,
        )
        assert (shared / name).stat().st_uid != os.getuid()
    records = tmp_path / "rec"
    records.mkdir()
    result = run_batchcli(
        "exec", SHIPPED, "-c", "config_dev", "-d", "out", "-p", f"record_dir={records}",
        "-p", "executor=dask", "-p", "workers=1", "-p", "count=10",
        TMPDIR=str(shared),
    )  # fmt: skip
    assert not (shared / "pwned").exists(), "the other user's code ran as us"
    assert result.exit_code == 0, result.output
    assert sorted(ok_items(records)) == list(range(10))
    [loaded_from] = {p.read_text() for p in records.glob("setup-*")}
    assert not any(loaded_from.startswith(str(shared / name) + os.sep) for name in planted)
    assert loaded_from.endswith(os.path.join("shipped", "job.py"))
    ours = [p for p in shared.iterdir() if p.name.startswith("batchcli-projects") and p.stat().st_uid == os.getuid()]
    assert len(ours) == 1 and ours[0].stat().st_mode & 0o777 == 0o700
    assert list(ours[0].iterdir()) == []  # what the run unpacked is gone


def test_unpacked_files_are_checked_before_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that changes between unpacking and importing is refused, naming the file and what to check."""
    from batchcli.errors import ProjectError
    from batchcli.executors import bundle as bundles
    from batchcli.load.project import load_project

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    shipped = bundles.bundle_project(load_project(str(SHIPPED)))
    assert shipped is not None
    extract = zipfile.ZipFile.extractall

    def extract_and_swap(self: zipfile.ZipFile, path: Any = None, *args: Any, **kwargs: Any) -> None:
        extract(self, path, *args, **kwargs)
        (Path(path) / "shipped" / "helpers.py").write_text("print('someone else')\n")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_and_swap)
    with pytest.raises(ProjectError, match=r"'shipped/helpers.py' differs.*TMPDIR"):
        bundles.unpack(shipped, "run1")
    assert list((tmp_path / "batchcli-projects").iterdir()) == []  # nothing half-unpacked is left


@pytest.mark.parametrize(("owner", "mode"), [("nobody", 0o755), ("self", 0o777)])
def test_temp_directory_others_can_rename_in_is_refused(tmp_path: Path, owner: str, mode: int) -> None:
    """A TMPDIR another user owns, or that others may write without the sticky bit, is refused with the fix."""
    from batchcli.errors import ProjectError
    from batchcli.executors.bundle import private_root

    if owner == "nobody":
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another user needs root")
        shutil.chown(tmp_path, "nobody")
    tmp_path.chmod(mode)
    with pytest.raises(ProjectError, match=r"lets someone else replace .*Point TMPDIR at a directory of your own"):
        private_root(tmp_path)
    assert not (tmp_path / "batchcli-projects").exists()


def test_bundle_that_does_not_match_its_digest_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle whose bytes do not hash to its digest is never unpacked."""
    from batchcli.errors import ProjectError
    from batchcli.executors.bundle import Bundle, unpack

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("job.py", "x = 1\n")
    with pytest.raises(ProjectError, match="does not match its digest"):
        unpack(Bundle("0" * 64, data.getvalue(), "job.py"), "run1")


UNPACK_AND_WAIT = """
import sys
from batchcli.executors.bundle import bundle_project, unpack
from batchcli.load.project import load_project
print(unpack(bundle_project(load_project(sys.argv[1])), sys.argv[2]), flush=True)
sys.stdin.read()
"""


def test_copies_left_by_workers_that_died_are_removed_and_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A worker killed with its copy of the project unpacked left it in the temp directory for good. The next unpack
    on the machine removes it, once its owner file is old and nobody holds its lock; a live worker's copy stays,
    however old, and so does a copy with no owner file (a batchcli from before them)."""
    from batchcli.executors.bundle import ABANDONED_AFTER_S, OWNER_SUFFIX, bundle_project, private_root, unpack
    from batchcli.load.project import load_project

    env = subprocess_env(TMPDIR=str(tmp_path))
    copies = {}
    for key in ("dead", "alive"):
        worker = subprocess.Popen(
            [sys.executable, "-c", UNPACK_AND_WAIT, str(SHIPPED), key],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        request.addfinalizer(worker.kill)
        target = Path(worker.stdout.readline().strip())  # type: ignore[union-attr]
        copies[key] = (worker, next(p for p in target.parents if p.parent.name == "batchcli-projects"))
    dead_worker, dead = copies["dead"]
    dead_worker.kill()
    dead_worker.wait(timeout=30)
    _, alive = copies["alive"]
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    root = private_root()
    older = root / "older.abc123"  # no owner file
    (older / "shipped").mkdir(parents=True)
    aged = time.time() - ABANDONED_AFTER_S - 60
    for path in (Path(f"{dead}{OWNER_SUFFIX}"), Path(f"{alive}{OWNER_SUFFIX}"), older):
        os.utime(path, (aged, aged))
    assert dead.is_dir() and alive.is_dir()

    bundle = bundle_project(load_project(str(SHIPPED)))
    assert bundle is not None
    fresh = unpack(bundle, "next")
    assert not dead.exists() and not Path(f"{dead}{OWNER_SUFFIX}").exists()
    assert alive.is_dir() and Path(f"{alive}{OWNER_SUFFIX}").exists()
    assert older.is_dir()
    assert Path(fresh).exists()


STAGE_AND_WAIT = """
import sys
from batchcli.executors.bundle import bundle_project, stage
from batchcli.load.project import load_project
print(stage(bundle_project(load_project(sys.argv[1]))), flush=True)
sys.stdin.read()
"""


def test_a_project_staged_by_a_driver_that_died_is_removed_and_a_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The project a Ray driver stages as its working_dir (up to 50 MB) had no owner file, so a driver killed with -9
    left it in the temp directory for good. It is claimed as unpacked copies are: the next one made on the machine
    removes it once its owner file is old and nobody holds its lock; a live driver's stays."""
    from batchcli.executors.bundle import ABANDONED_AFTER_S, OWNER_SUFFIX, bundle_project, stage, unstage
    from batchcli.load.project import load_project

    env = subprocess_env(TMPDIR=str(tmp_path))
    staged = {}
    for key in ("dead", "alive"):
        driver = subprocess.Popen(
            [sys.executable, "-c", STAGE_AND_WAIT, str(SHIPPED)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        request.addfinalizer(driver.kill)
        staged[key] = (driver, Path(driver.stdout.readline().strip()))  # type: ignore[union-attr]
    dead_driver, dead = staged["dead"]
    dead_driver.kill()
    dead_driver.wait(timeout=30)
    _, alive = staged["alive"]
    aged = time.time() - ABANDONED_AFTER_S - 60
    for path in (Path(f"{dead}{OWNER_SUFFIX}"), Path(f"{alive}{OWNER_SUFFIX}")):
        os.utime(path, (aged, aged))
    assert any(dead.iterdir()) and any(alive.iterdir())

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    bundle = bundle_project(load_project(str(SHIPPED)))
    assert bundle is not None
    fresh = stage(bundle)
    assert not dead.exists() and not Path(f"{dead}{OWNER_SUFFIX}").exists()  # there for good before
    assert alive.is_dir() and Path(f"{alive}{OWNER_SUFFIX}").exists()
    unstage(fresh)
    assert not fresh.exists() and not Path(f"{fresh}{OWNER_SUFFIX}").exists()


# Defect: a Dask run hung after two worker deaths.


def test_dask_run_survives_two_worker_deaths(
    tmp_path: Path, run_batchcli: Any, dask_cluster: str  # noqa: F811 (the fixture)
) -> None:
    """Two items that each kill their Dask worker: the replacement workers get the run, and every item succeeds."""
    records = tmp_path / "rec"
    records.mkdir()
    result = run_batchcli(
        "exec", DEATHS, "-d", "out", "-p", f"record_dir={records}", "-p", "backoff_s=0",
        "-p", "executor=dask", "-p", f"dask_address={dask_cluster}", "-p", "count=40",
        "-p", "kill_first=5", "-p", "kill_second=25",
        timeout=240,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(ok_items(records)) == set(range(40))
    assert [len((records / f"{n}.attempts").read_text().splitlines()) for n in (5, 25)] == [2, 2]
    assert result.output.count("died") >= 2


# Defect: a lone file with package-relative imports crashed under Dask ("cannot be imported as '122e3e...'"):
# the bundle re-derived the project's root without the relative-import rule, and shipped main.py alone.


@pytest.mark.parametrize("cluster", ["running", "started by the run"])
def test_file_with_relative_imports_finishes_on_dask(
    run_batchcli: Any, request: pytest.FixtureRequest, cluster: str
) -> None:
    """A main.py that imports its siblings relatively finishes every item on a LocalCluster, as with async and process."""
    where = ["-p", f"dask_address={request.getfixturevalue('dask_cluster')}"] if cluster == "running" else ["-p", "workers=2"]
    result = run_batchcli(
        "exec", PROJECTS / "file_in_package" / "main.py", "-d", "out", "-p", "executor=dask", *where, timeout=240
    )
    assert result.exit_code == 0, result.output
    assert "cannot be imported" not in result.output
    assert (result.summary["job"], result.summary["succeeded"], result.summary["failed"]) == ("file_in_package", 5, 0)
    assert result.summary["params"]["executor"] == "dask"


# Defect: one directory project broke a long-lived cluster for every later project.


@pytest.fixture(scope="module")
def long_lived_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`dask scheduler` and `dask worker` (2 processes) started on their own, left running for the module.

    Yields the scheduler's address and the workers' temp directory.
    """
    workdir = tmp_path_factory.mktemp("cluster")  # the workers cannot see the projects from where they run
    (workdir / "tmp").mkdir()
    env = subprocess_env(DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0", TMPDIR=str(workdir / "tmp"))
    with separate_dask_cluster(workdir, env) as address:
        yield address, workdir / "tmp"


def _reindex(tmp_path: Path, address: str, name: str, *values: str) -> list[str]:
    return [
        sys.executable, "-m", "batchcli", "exec", str(REINDEX), "-c", "config_prod", "-d", str(tmp_path / name),
        "-p", "executor=dask", "-p", f"dask_address={address}",
        *(arg for value in values or ("generate=40",) for arg in ("-p", value)),
    ]  # fmt: skip


def _shipped(tmp_path: Path, address: str, name: str) -> list[str]:
    records = tmp_path / f"{name}-rec"
    records.mkdir()
    return [
        sys.executable, "-m", "batchcli", "exec", str(SHIPPED), "-c", "config_dev", "-d", str(tmp_path / name),
        "-p", f"record_dir={records}", "-p", "executor=dask", "-p", f"dask_address={address}", "-p", "count=30",
    ]  # fmt: skip


def _check(tmp_path: Path, name: str, output: str, total: int) -> None:
    run = newest_run(tmp_path / name)
    assert run is not None, output
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (total, 0), output


def test_several_projects_in_turn_on_one_long_lived_cluster(tmp_path: Path, long_lived_cluster: Any) -> None:
    """A directory project, then another project, then the first again, all on one cluster left running;
    each run leaves nothing unpacked behind on the workers."""
    address, worker_tmp = long_lived_cluster
    for n, (make, total) in enumerate([(_reindex, 40), (_shipped, 30), (_reindex, 40), (_shipped, 30)]):
        name = f"run{n}"
        proc = subprocess.run(
            make(tmp_path, address, name), capture_output=True, text=True, timeout=180, env=subprocess_env()
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert "Traceback" not in output
        _check(tmp_path, name, output, total)
        assert list((worker_tmp / "batchcli-projects").iterdir()) == []
    records = tmp_path / "run1-rec"
    assert sorted(ok_items(records)) == list(range(30))


def test_two_projects_at_once_on_one_long_lived_cluster(tmp_path: Path, long_lived_cluster: Any) -> None:
    """Another project started while a directory project is still running on the same workers: both finish."""
    address, _ = long_lived_cluster
    records = tmp_path / "spy-rec"
    records.mkdir()
    spy = [
        sys.executable, "-m", "batchcli", "exec", str(SPY), "-d", str(tmp_path / "spy"), "-p", f"record_dir={records}",
        "-p", "executor=dask", "-p", f"dask_address={address}", "-p", "count=40",
    ]  # fmt: skip
    slow_reindex = _reindex(tmp_path, address, "reindex", "generate=60", "rate_limit=20")
    runs = {"reindex": (subprocess.Popen(slow_reindex, **_pipes()), 60)}
    try:
        _wait_for_progress(tmp_path / "reindex", runs["reindex"][0])  # loaded on the workers, and running
        runs["spy"] = (subprocess.Popen(spy, **_pipes()), 40)
        outputs = {name: proc.communicate(timeout=180)[0] for name, (proc, _) in runs.items()}
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, (proc, total) in runs.items():
        assert proc.returncode == 0, outputs[name]
        _check(tmp_path, name, outputs[name], total)
    assert sorted(ok_items(records)) == list(range(40))


def _wait_for_progress(output_dir: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the run in ``output_dir`` has journaled a success and is still going."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        for journal in output_dir.glob("*/journal.sqlite"):
            with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)) as db:
                if db.execute("SELECT count(*) FROM done_ranges").fetchone()[0]:
                    return
        time.sleep(0.05)


def _pipes() -> dict[str, Any]:
    return {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "env": subprocess_env()}


# Defect: a bad dask_address ran for many seconds, printed a traceback and left a run directory.


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("notaurl", ["'notaurl' is not a Dask scheduler address", "missing port number", "tcp://HOST:8786"]),
        ("http://127.0.0.1:8786", ["unknown scheme 'http'", "tcp://HOST:8786"]),
        ("tcp://127.0.0.1:99999", ["port 99999 is out of range"]),
        ("UNREACHABLE", ["Cannot reach the Dask scheduler", "Connection refused", "dask scheduler"]),
        ("NOT_DASK", ["does not answer as a Dask scheduler", "tcp://HOST:8786"]),
    ],
)
def test_bad_dask_address_is_a_usage_error(tmp_path: Path, cli: Any, address: str, says: list[str], monkeypatch) -> None:
    """A malformed, unreachable or non-Dask dask_address exits 2 with the value and the fix, and makes no run dir."""
    from batchcli.executors import daskcluster

    monkeypatch.setattr(daskcluster, "CONNECT_TIMEOUT_S", 1.0)  # the silent listener is waited for this long
    with socket.socket() as silent:  # accepts connections (the kernel does) but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        if address == "UNREACHABLE":
            address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
        elif address == "NOT_DASK":
            address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        result = cli(
            "exec", SHIPPED, "-c", "config_dev", "-d", "out", "-p", f"record_dir={tmp_path}",
            "-p", "executor=dask", "-p", f"dask_address={address}",
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert repr(address) in text
    for part in says:
        assert part in text
    assert "leave dask_address out" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_rate_lifted_live_reaches_the_chunks_already_running_on_the_cluster(
    tmp_path: Path, dask_cluster: str  # noqa: F811 (the fixture)
) -> None:
    """`ctl set rate_limit=0.02` then `rate_limit=none`: the chunks sent meanwhile waited out the old 50 s start slots
    in their workers (a Dask task is told nothing), and the run stood still. Now the workers hear of the change and
    give those items back, to be sent again under the new rate."""
    rate_lifted_live(tmp_path, ["-p", "executor=dask", "-p", f"dask_address={dask_cluster}"])


def rate_lifted_live(tmp_path: Path, where: list[str]) -> None:
    """A run on ``where`` (the executor's -p values) slowed to 0.02/s with ctl, then lifted: it finishes every item."""
    out, ledger = tmp_path / "out", tmp_path / "ledger.txt"
    run = _headless(out, ledger, where, "count=300", "delay_s=0.02")
    try:
        run_dir = _under_way(run, out, lambda: _lines(ledger, "done "), 20)
        _ctl(run_dir, "set", "rate_limit=0.02")
        time.sleep(1.5)  # chunks sent now take the 50 s slots
        assert _lines(ledger, "done ") < 300
        _ctl(run_dir, "set", "rate_limit=none")
        assert run.wait(timeout=90) == 0  # the old code waited out 50 s a slot, many times over
    finally:
        if run.poll() is None:
            run.kill()
    assert sorted(int(line.split()[1]) for line in ledger.read_text().splitlines() if line.startswith("done ")) == list(range(300))


def test_a_stop_that_times_out_leaves_no_item_running_on_the_cluster_after_the_run(
    tmp_path: Path, dask_cluster: str  # noqa: F811 (the fixture)
) -> None:
    """Chunks of 20 slow items outlast `stop_timeout_s=1`: the run cancelled them, but a running Dask task cannot be
    interrupted, so the cluster went on with their items after the run had ended (and a resume did them again).
    Now the workers hear of the cancel and start none of the rest."""
    nothing_runs_after_a_timed_out_stop(tmp_path, ["-p", "executor=dask", "-p", f"dask_address={dask_cluster}"])


def nothing_runs_after_a_timed_out_stop(tmp_path: Path, where: list[str]) -> None:
    """A run on ``where`` whose stop outlasts stop_timeout_s: no item starts after it has ended."""
    out, ledger = tmp_path / "out", tmp_path / "ledger.txt"
    run = _headless(out, ledger, where, "count=200", "delay_s=0.3", "chunk_size=20", "stop_timeout_s=1")
    try:
        run_dir = _under_way(run, out, lambda: _lines(ledger, "start "), 4)
        _ctl(run_dir, "stop")
        assert run.wait(timeout=60) == 130
    finally:
        if run.poll() is None:
            run.kill()
    at_end = _lines(ledger, "start ")
    time.sleep(3)  # ten more items' time per worker
    assert _lines(ledger, "start ") <= at_end + 2, (at_end, _lines(ledger, "start "))  # at most the word in flight to each worker


def _headless(out: Path, ledger: Path, where: list[str], *params: str) -> subprocess.Popen[bytes]:
    """The unattended project on ``where``, two items at once, without a terminal; its lines go to ``ledger``."""
    flags = [part for param in (*params, "concurrency=2", f"ledger={ledger}") for part in ("-p", param)]
    return subprocess.Popen(
        [sys.executable, "-m", "batchcli", "exec", str(PROJECTS / "unattended" / "job.py"), "-d", str(out), *where, *flags],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )  # fmt: skip


def _under_way(run: subprocess.Popen[bytes], out: Path, count: Callable[[], int], at_least: int) -> Path:
    """The run directory once the run listens for ctl and ``count()`` has reached ``at_least``."""
    deadline = time.monotonic() + 120
    while not any(out.glob("*/control.sock")) or count() < at_least:
        assert time.monotonic() < deadline and run.poll() is None, "the run did not get going"
        time.sleep(0.1)
    return next(out.glob("*/control.sock")).parent


def _lines(ledger: Path, start: str) -> int:
    return ledger.read_text().count(start) if ledger.exists() else 0


def _ctl(run_dir: Path, *words: str) -> None:
    done = subprocess.run([sys.executable, "-m", "batchcli", "ctl", str(run_dir), *words], capture_output=True,
                          text=True, timeout=60, env=subprocess_env())  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
