"""Paths that cannot be used (-d, init's NAME, a run directory) get one message naming the path and the fix, no traceback."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

PROJECTS = Path(__file__).resolve().parent / "projects"
RETRIES = PROJECTS / "retries" / "retries_job.py"
FAST = ("-p", "backoff_s=0")


def refused(result: Any, code: int = 2) -> str:
    """The output of a refused command, after the checks every refusal must pass, with line wrapping undone."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert "Error:" in result.output
    return " ".join(result.output.split())


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """Make a path immutable (chattr +i), which even root cannot write into; undone at teardown.

    We run as root, and root ignores permission bits, so chmod cannot make a directory unwritable.
    """
    done: list[Path] = []

    def make(path: Path) -> None:
        if shutil.which("chattr") is None:
            pytest.skip("chattr is not installed: cannot make a directory unwritable for root")
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"chattr +i is not permitted here ({result.stderr.strip()}): cannot make a path unwritable")
        done.append(path)

    yield make
    for path in reversed(done):
        subprocess.run(["chattr", "-i", str(path)], check=False)


# exec -d, retry -d and runs -d


def test_output_dir_that_is_a_file(cli, tmp_path: Path) -> None:
    """exec -d FILE names the file and says to give a directory; no run starts."""
    (tmp_path / "notes.txt").write_text("not a directory")
    out = refused(cli("exec", RETRIES, "-d", "notes.txt", *FAST))
    assert "Output directory 'notes.txt' is a file, not a directory" in out
    assert "Give -d a directory" in out


def test_output_dir_under_a_file(cli, tmp_path: Path) -> None:
    """exec -d FILE/sub names the file in the way; nothing is created."""
    (tmp_path / "notes.txt").write_text("not a directory")
    out = refused(cli("exec", RETRIES, "-d", "notes.txt/runs", *FAST))
    assert "Output directory 'notes.txt/runs' cannot be created: 'notes.txt' is a file, not a directory" in out
    assert "Give -d a path whose parents are directories" in out


def test_output_dir_that_is_not_writable(cli, tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    """exec -d into a directory nobody may write to names it and says how to fix it, before any run starts."""
    locked = tmp_path / "locked"
    locked.mkdir()
    immutable(locked)
    out = refused(cli("exec", RETRIES, "-d", "locked", *FAST))
    assert "Cannot make a run directory in output directory 'locked': 'locked' is not writable" in out
    assert "Give -d a directory you can write to" in out
    nested = refused(cli("exec", RETRIES, "-d", "locked/runs", *FAST))
    assert "output directory 'locked/runs': 'locked' is not writable" in nested
    assert list(locked.iterdir()) == []


def test_empty_output_dir(cli, tmp_path: Path) -> None:
    """-d '' is an error for exec, retry and runs, not a silent run in the current directory."""
    for args in (("exec", RETRIES, "-d", "", *FAST), ("runs", "-d", ""), ("retry", tmp_path, "-d", "")):
        out = refused(cli(*args))
        assert "-d '' is empty" in out
        assert "-d batchcli_outputs" in out
    assert list(tmp_path.iterdir()) == []


def test_empty_job_path(cli, tmp_path: Path) -> None:
    """exec '' is an error, not the current directory loaded as a project (Path('') is '.')."""
    for path in ("", "  "):
        out = refused(cli("exec", path, "-d", tmp_path / "out"))
        assert f"PATH {path!r} is empty".replace("  ", " ") in out and "e.g. batchcli exec job.py" in out
    assert list(tmp_path.iterdir()) == []


def test_an_output_dir_whose_name_is_not_utf8_holds_a_run_like_any_other(cli, tmp_path: Path) -> None:
    """A directory name with a byte that is not UTF-8 (Python holds it as a surrogate) made opening the journal
    raise UnicodeEncodeError, after the run directory was made, which `runs` then listed as never started."""
    import os

    out = tmp_path / os.fsdecode(b"out\xff")
    ran = cli("exec", RETRIES, "-d", out, *FAST)
    assert ran.exit_code in (0, 1) and "Traceback" not in ran.output, ran.output
    (run_dir,) = out.iterdir()
    shown = cli("show", run_dir)
    assert shown.exit_code == 0 and "finished" in shown.output, shown.output
    listed = cli("runs", "-d", out)
    assert listed.exit_code == 0 and "finished" in listed.output and "never started" not in listed.output


def test_runs_and_resume_on_a_file(cli, tmp_path: Path) -> None:
    """runs -d FILE, resume FILE and show FILE say the path is a file, not that it does not exist."""
    (tmp_path / "notes.txt").write_text("not a directory")
    runs = refused(cli("runs", "-d", "notes.txt"))
    assert "Output directory 'notes.txt' is a file, not a directory" in runs
    assert "does not exist" not in runs
    for command in ("resume", "show", "retry"):
        out = refused(cli(command, "notes.txt"))
        assert "Run directory 'notes.txt' is a file, not a run directory" in out
        assert "batchcli runs -d OUTPUT_DIR" in out


# init


def test_init_under_a_file(cli, tmp_path: Path) -> None:
    """init FILE/name names the file in the way and creates nothing."""
    (tmp_path / "notes.txt").write_text("not a directory")
    out = refused(cli("init", "notes.txt/hello_job"))
    assert "Cannot create the project 'notes.txt/hello_job': 'notes.txt' is a file, not a directory" in out
    assert "Give batchcli init a new directory inside one you can write to" in out


def test_init_in_a_directory_that_is_not_writable(cli, tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    """init into a directory nobody may write to names that directory and the fix."""
    locked = tmp_path / "locked"
    locked.mkdir()
    immutable(locked)
    out = refused(cli("init", "locked/hello_job"))
    assert "Cannot create the project 'locked/hello_job': 'locked' is not writable" in out
    assert "Give batchcli init a new directory inside one you can write to" in out


@pytest.mark.parametrize(
    "args",
    [
        ("init", "{long}"),
        ("exec", "{long}"),
        ("exec", str(RETRIES), "-d", "{long}", *FAST),
        ("watch", "{long}"),
        ("show", "{long}"),
        ("retry", "{long}"),
        ("resume", "{long}"),
        ("runs", "-d", "{long}"),
        ("results", "{long}"),
    ],
    ids=lambda args: "-".join(a for a in args[:3] if not a.startswith("{") and "/" not in a),
)
def test_a_path_too_long_for_the_system_is_a_usage_error(cli, tmp_path: Path, args: tuple[str, ...]) -> None:
    """A path argument with a name over 255 bytes made Path.exists() raise ENAMETOOLONG: a traceback, exit 1."""
    long = str(tmp_path / ("x" * 300))
    said = refused(cli(*[a.replace("{long}", long) for a in args]))
    assert "is too long for this system" in said and "x" * 300 in said.replace(" ", ""), said


def _without_file_capabilities() -> list[str]:
    """A command prefix that runs without the capabilities that let root past file permissions, or [] if none works."""
    import os
    import sys

    if os.geteuid() != 0:
        return [sys.executable]
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", sys.executable] if setpriv else []


def test_a_path_under_a_directory_the_user_may_not_enter_is_a_clear_error(cli: Any, tmp_path: Path) -> None:
    """A run directory, -o file or -d directory under a directory without x permission gave batchcli's PermissionError
    traceback and exit 1 (the code for failed items) in show, results, resume, retry, exec -d and --skip-done-in."""
    import os

    from conftest import subprocess_env

    prefix = _without_file_capabilities()
    ran = cli("exec", RETRIES, "-d", tmp_path / "out", *FAST)
    assert ran.run_dir is not None, ran.output
    locked = tmp_path / "locked"
    (locked / "run").mkdir(parents=True)
    locked.chmod(0)
    try:
        if not prefix or subprocess.run([*prefix, "-c", f"import os; os.listdir({str(locked)!r})"],
                                        capture_output=True).returncode == 0:  # fmt: skip
            pytest.skip("this machine cannot run a process that file permissions stop")
        for args in (["show", locked / "run"], ["results", ran.run_dir, "-o", locked / "x.jsonl"],
                     ["exec", RETRIES, "-d", locked / "out"], ["resume", locked / "run"],
                     ["retry", locked / "run", "--dry-run"],
                     ["exec", RETRIES, "-d", tmp_path / "out2", "--skip-done-in", locked / "run"]):  # fmt: skip
            done = subprocess.run([*prefix, "-m", "batchcli", *map(str, args)], capture_output=True, text=True,
                                  env=subprocess_env(), cwd=tmp_path, timeout=60)  # fmt: skip
            said = " ".join(done.stderr.split())
            assert done.returncode == 2, (args, done.stderr)
            assert f"Error: Permission denied: '{locked}" in said and "Traceback" not in said, said
    finally:
        os.chmod(locked, 0o700)


def test_a_job_path_that_is_not_utf8_is_refused_before_any_run_directory(run_batchcli: Any, tmp_path: Path) -> None:
    """A job under a directory whose name has bytes that are not UTF-8 raised as its journal was made (our
    traceback, exit 1) and left a half-made run directory that show called stopped. It is refused first now."""
    odd = tmp_path / b"jobs_\xff".decode("utf-8", "surrogateescape")
    odd.mkdir()
    shutil.copy(RETRIES, odd / "retries_job.py")
    result = run_batchcli("exec", odd / "retries_job.py", "-d", tmp_path / "out", *FAST)
    said = refused(result)
    assert "is not valid UTF-8" in said and "Rename that file or directory to a UTF-8 name" in said, said
    assert not (tmp_path / "out").exists()


def test_a_run_directory_given_as_output_directory_is_refused_with_its_parent(cli: Any, tmp_path: Path) -> None:
    """exec -d RUN_DIR made new runs inside another run's directory, which runs never listed; runs -d RUN_DIR said
    only "No runs in". Each names the parent to give instead, and show for that run."""
    first = cli("exec", RETRIES, "-d", "out", *FAST)
    assert first.run_dir is not None
    for command in (["exec", RETRIES, *FAST], ["runs"]):
        said = refused(cli(*command, "-d", first.run_dir))
        assert f"is a run directory, not the directory that holds run directories: give its parent, -d '{first.run_dir.parent}'" in said, said
        assert f"batchcli show {first.run_dir}" in said
    assert [p.name for p in first.run_dir.iterdir() if p.is_dir()] == []
