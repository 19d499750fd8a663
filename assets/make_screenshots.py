"""Regenerate the README's screenshots from real runs: ``python assets/make_screenshots.py``.

rich records what a console printed and exports it as SVG, so each picture is what a real run showed:
the live display of the quick-start job (its final frame), and, when the journal's ``show`` command is
available, the report of that run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def live_display(out: Path) -> Path:
    """Run the quick-start job with a recording terminal console; save its last frame."""
    from batchcli.container import Wiring, build_job
    from batchcli.project import load_project
    from batchcli.run import Run, RunOptions

    from batchcli.progress import LiveDisplay

    # A Live display redraws in place; a recording console would keep every frame. Run on a silent
    # console, then draw the run's final state once, with the log lines it printed above it.
    silent = Console(force_terminal=True, width=100, file=open("/dev/null", "w"))
    wiring = Wiring(
        target=str(ROOT / "examples" / "quickstart.py"),
        config_name=None,
        values={"count": ("400",), "failure_rate": ("0.15",), "backoff_s": ("0.05",), "concurrency": ("20",), "malformed_every": ("97",)},
    )
    job = build_job(load_project(wiring.target), wiring)
    run = Run(job, wiring, RunOptions(output_dir=out, console=silent, handle_signals=False))
    result = run.execute()
    console = Console(record=True, force_terminal=True, width=100, file=open("/dev/null", "w"))
    for line in (result.run_dir / "batchcli.log").read_text().splitlines():
        if " ERROR " in line and "batchcli.traceback" not in line:
            console.print(line.split(" ", 2)[2], highlight=False)
    console.print(LiveDisplay(run.tally, console, job.project.name))
    console.save_svg(str(HERE / "live-display.svg"), title="batchcli exec examples/quickstart.py")
    return result.run_dir


def show_report(run_dir: Path) -> None:
    """``batchcli show RUN_DIR`` rendered to SVG, if this version has it."""
    from typer.testing import CliRunner

    from batchcli.cli import app

    result = CliRunner().invoke(app, ["show", str(run_dir)], env={"COLUMNS": "100", "FORCE_COLOR": "1"})
    if result.exit_code != 0:
        print(f"show is not available: {result.output.strip()[:200]}")
        return
    console = Console(record=True, force_terminal=True, width=100, file=open("/dev/null", "w"))
    from rich.text import Text

    console.print(Text.from_ansi(result.output))
    console.save_svg(str(HERE / "show-report.svg"), title=f"batchcli show {run_dir.name}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = live_display(Path(tmp))
        show_report(run_dir)
    print(f"Wrote screenshots to {HERE}")
