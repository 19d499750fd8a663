"""The Ray executor's own behaviour; what it shares with every executor is in test_executors.py.

Runs use the suite's one Ray head (``ray_head`` in conftest.py) through ``ray_address``; the run that
starts a Ray of its own is test_executors.py's installed-job test.
"""

from __future__ import annotations

import subprocess
import sys
import shutil
from pathlib import Path
from typing import Any

import pytest

import batchcli
from batchcli.errors import ProjectError
from batchcli.executors.bundle import adopt, bundle_project, discard, manifest_of, private_root, stage
from batchcli.load.project import load_project
from tests.conftest import PROJECTS, subprocess_env
from tests.test_executors import SHIPPED, SPY, attempts, isolated, pids, successes  # noqa: F401 (isolated: autouse)
from tests.test_dask import rate_lifted_live


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """Where the spy job's processes write what they did."""
    path = tmp_path / "rec"
    path.mkdir()
    return path


def test_directory_project_is_shipped_through_runtime_env(cli: Any, records: Path, ray_head: str) -> None:
    """A directory project reaches the actors as Ray's working_dir and is imported from a private, checked copy."""
    result = cli(
        "exec", SHIPPED, "-c", "config_dev", "-d", "out", "-p", f"record_dir={records}",
        "-p", "executor=ray", "-p", f"ray_address={ray_head}", "-p", "workers=2", "-p", "count=12",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line.split() for p in records.glob("ok-*") for line in p.read_text().splitlines()]
    assert sorted((int(n), int(sq)) for n, sq in lines) == [(n, n * n) for n in range(12)]
    loaded_from = {p.read_text() for p in records.glob("setup-*")}
    assert len(loaded_from) == 2  # one private copy per actor
    root = str(private_root())
    assert all(path.startswith(root) and path.endswith("shipped/job.py") for path in loaded_from), loaded_from
    assert not any(Path(path).exists() for path in loaded_from)  # finish() removed the copies


def test_killed_actor_loses_no_item(cli: Any, records: Path, ray_head: str) -> None:
    """An actor killed mid-chunk: Ray restarts it, its items cost one attempt each and are sent again; all succeed."""
    result = cli(
        "exec", SPY, "-d", "out", "-p", f"record_dir={records}", "-p", "backoff_s=0", "-p", "executor=ray",
        "-p", f"ray_address={ray_head}", "-p", "workers=2", "-p", "count=40", "-p", "sleep_s=0.005", "-p", "kill_on=12",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(successes(records)) == set(range(40))
    assert attempts(records, 12) == 2
    assert "died" in result.output
    assert len(set(pids(records, "setup"))) == 3  # two actors and the restarted one, each set up once
    assert sorted(pids(records, "finish")) == sorted(set(pids(records, "setup")) - {_killed(records)})


def test_missing_ray_says_how_to_install_it(cli: Any, records: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """executor=ray without Ray installed exits 2 with the pip command for the extra, before any run directory."""
    monkeypatch.setitem(sys.modules, "ray", None)
    result = cli("exec", SPY, "-d", "out", "-p", f"record_dir={records}", "-p", "executor=ray")
    assert result.exit_code == 2
    assert "pip install 'batchcli[ray]'" in result.output
    assert "Traceback" not in result.output and not Path("out").exists()


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("tcp://127.0.0.1:6379", "is not a Ray address"),
        ("127.0.0.1:1", "Cannot reach the Ray cluster"),
    ],
)
def test_bad_ray_address_is_a_usage_error(cli: Any, records: Path, address: str, says: str) -> None:
    """A malformed ray_address, or one where nothing listens, exits 2 with the fix, before any run directory."""
    result = cli("exec", SPY, "-d", "out", "-p", f"record_dir={records}", "-p", "executor=ray", "-p", f"ray_address={address}")
    assert result.exit_code == 2, result.output
    assert says in result.output and "ray start --head" in result.output
    assert "Traceback" not in result.output and not Path("out").exists()


def test_ray_address_auto_is_checked_where_it_leads_before_the_run(
    cli: Any, records: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ray_address=auto goes where Ray's own lookup leads (here RAY_ADDRESS, to a port nothing listens at) and is
    checked there before any run directory: it was let through, and the run ended "Crashed", exit 3."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    result = cli("exec", SPY, "-d", "out", "-p", f"record_dir={records}", "-p", "executor=ray", "-p", "ray_address=auto")
    assert result.exit_code == 2, result.output
    assert "Cannot reach the Ray cluster at ray_address='auto'" in result.output and "127.0.0.1:1" in result.output
    assert "Traceback" not in result.output and not Path("out").exists()


def test_dry_run_names_the_ray_cluster_without_reaching_it(cli: Any, records: Path) -> None:
    """exec --dry-run with executor=ray says where the run would go, and neither connects nor makes a run directory."""
    result = cli(
        "exec", SPY, "--dry-run", "-d", "out", "-p", f"record_dir={records}", "-p", "executor=ray",
        "-p", "ray_address=10.0.0.5:6379", "-p", "workers=3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ray at 10.0.0.5:6379, 3 workers" in result.output
    assert not Path("out").exists()


def test_help_does_not_import_ray() -> None:
    """Ray is an optional extra: `batchcli --help` and loading the CLI never import it."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom batchcli.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\nprint('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_files_changed_where_ray_unpacked_them_are_refused(tmp_path: Path) -> None:
    """A file changed in Ray's shared working_dir (anyone may write there) is caught before import; an intact one loads."""
    bundle = bundle_project(load_project(str(PROJECTS / "shipped")))
    assert bundle is not None
    shipped = stage(bundle)  # what Ray would unpack on a node
    key = tmp_path.name
    try:
        manifest = manifest_of(bundle)
        good = Path(adopt(shipped, manifest, bundle.target, f"{key}-intact"))
        assert good.parent.parent == private_root()
        assert (good / "helpers.py").read_text() == (PROJECTS / "shipped" / "helpers.py").read_text()
        (shipped / "shipped" / "helpers.py").write_text("import os\nos.system('echo owned')\n")
        with pytest.raises(ProjectError, match="does not match what was shipped"):
            adopt(shipped, manifest, bundle.target, f"{key}-tampered")
        assert not list(private_root().glob(f"{key}-tampered.*"))  # the bad copy is gone
    finally:
        shutil.rmtree(shipped)
        discard(f"{key}-intact")


def _killed(records: Path) -> int:
    """The process that wrote item 12's first attempt (the spy kills it there)."""
    first = (records / "12.attempts").read_text().splitlines()[0]
    return int(first.split()[0])



def test_actors_work_in_the_drivers_directory_as_other_executors_do(cli: Any, tmp_path: Path, ray_head: str) -> None:
    """Ray starts an actor in its working_dir, Ray's unpacked copy of the project: a relative path in the job (an
    output file, a Path param) wrote there and was lost, where process and Dask workers wrote beside the user."""
    result = cli("exec", PROJECTS / "cwd" / "cwd_job.py", "-d", "out", "-p", "executor=ray", "-p", f"ray_address={ray_head}",
                 "-p", "workers=2", "-p", "count=6")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {row.value for row in batchcli.read_results(result.run_dir)} == {str(Path.cwd())}
    assert sorted(int(n) for n in (Path.cwd() / "written.txt").read_text().split()) == list(range(6))


def test_a_rate_lifted_live_reaches_the_chunks_already_running_in_the_actors(tmp_path: Path, ray_head: str) -> None:
    """As on Dask: an actor call queued its word behind the chunk it was about, which waited out the old 50 s slots."""
    rate_lifted_live(tmp_path, ["-p", "executor=ray", "-p", f"ray_address={ray_head}", "-p", "workers=2"])

