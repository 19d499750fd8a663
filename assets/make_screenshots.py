"""Regenerate the README's screenshots from real runs: ``python assets/make_screenshots.py``.

rich records what a console printed and exports it as SVG, so each picture is what a real run showed:
the live display of the quick-start job (its final frame), the ``show`` report of that run, and the pause
shell that Ctrl-C opens in a real terminal (driven with pexpect).
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
    from batchcli.load.wiring import Wiring, build_job
    from batchcli.load.project import load_project
    from batchcli.run.driver import Run, RunOptions

    from batchcli.run.display import LiveDisplay

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




def pause_shell(out: Path) -> None:
    """Press Ctrl-C in a real terminal during a run of the quick start, and type at the shell."""
    import os
    import re

    import pexpect
    from rich.text import Text

    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="100", LINES="40")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "batchcli", "exec", str(ROOT / "examples" / "quickstart.py"), "-d", str(out),
         "-p", "count=3000", "-p", "malformed_every=97", "-p", "backoff_s=0.05"],
        env=env, dimensions=(40, 100), encoding="utf-8", timeout=60,
    )
    child.expect("ok ")
    child.sendintr()
    def prompt(n: int) -> str:
        colour = r"(?:\x1b\[[0-9;]*m)*"  # colour codes sit inside IPython's prompt
        return rf"In \[{colour}{n}{colour}\]: "

    child.expect(prompt(1))
    transcript = child.before + child.after
    child.sendline("self.stats()")
    child.expect(prompt(2))
    transcript += child.before + child.after
    child.sendline("self.stop()")
    child.expect(prompt(3))
    child.sendline("exit")
    child.expect(pexpect.EOF)
    # Keep colours, drop cursor movement and screen control, which a picture cannot show.
    text = re.sub(r"\x1b\[[0-9;?]*[A-HJKSTfhlnsu]|\x1b\][^\x07]*\x07|\r", "", transcript)
    start = text.find("batchcli: run paused")
    text = text[text.rfind("\n", 0, start) + 1 :] if start >= 0 else text
    colour = r"(?:\x1b\[[0-9;]*m)*"
    text = re.sub(rf"(In \[{colour}\d+{colour}\]: (?:{colour})*)+", r"\1", text)  # prompt_toolkit draws each prompt twice
    console = Console(record=True, force_terminal=True, width=100, file=open(os.devnull, "w"))
    console.print(Text.from_ansi(text))
    console.save_svg(str(HERE / "pause-shell.svg"), title="Ctrl-C during batchcli exec")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = live_display(Path(tmp))
        show_report(run_dir)
        pause_shell(Path(tmp))
    print(f"Wrote screenshots to {HERE}")
