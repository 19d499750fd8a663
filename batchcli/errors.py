"""Domain errors: each carries the bad value and the fix, its exit code, and how to show itself.

They are ``ClickException`` subclasses (click's model: the exception knows its ``exit_code``
and ``show()``s itself), so no command repeats a ``try/except``: the CLI's group calls ``show()``
once for all of them (see ``cli.commands.BatchcliGroup``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO, Any

try:  # typer vendors click since 0.2x (the click its commands raise and catch); before, click was its dependency
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click import ClickException  # type: ignore[assignment,no-redef,import-not-found,unused-ignore]


class BatchcliError(ClickException):
    """A problem the user can fix; ``str(error)`` is the whole message, naming the culprit and the fix."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the message as one paragraph on stderr (or ``file``), after a red ``Error:``."""
        from rich.console import Console
        from rich.markup import escape

        # Escaped: messages quote user values and commands, like pip install 'batchcli[dask]'.
        console = Console(stderr=file is None, file=file, highlight=False)
        console.print(f"[bold red]Error:[/] {escape(self.format_message())}", markup=True, soft_wrap=True)


class UsageError(BatchcliError):
    """Bad command-line input: a malformed or unknown ``-p``, a missing param, an unknown ``-c``."""


class ProjectError(BatchcliError):
    """The user's project cannot be loaded or wired: no Source, two Services, a missing path."""


class CastError(UsageError):
    """A ``-p`` value that does not convert to the declared type; ``detail`` names the bad part (an element)."""

    def __init__(self, name: str, type_name: str, value: str, hint: str = "", *, detail: str = "") -> None:
        self.name = name
        self.type_name = type_name
        self.value = value
        self.hint = hint
        self.detail = detail
        message = f"Param {name!r} expects {type_name}, got {value!r}"
        message += f": {detail}." if detail else "."
        if hint:
            message += f" {hint}"
        super().__init__(message)


class UserCodeError(BatchcliError):
    """The user's own code raised while being imported or built; show their traceback, not ours."""

    def __init__(self, message: str, original: BaseException) -> None:
        super().__init__(message)
        self.original = original


class RunDirWriteError(BatchcliError):
    """The run directory stayed unwritable (a full disk) and the run stopped resumably."""

    exit_code = 130

    def __init__(self, run_dir: object, cause: str, free: str) -> None:
        self.run_dir = run_dir
        self.cause = cause
        self.free = free
        super().__init__(
            f"Cannot write the run directory {str(run_dir)!r} ({cause}; {free} free), so the run stopped. "
            "Nothing the journal holds is lost; items settled after the last successful write will be processed "
            f"again. Free some space on that disk, then continue with: batchcli resume {run_dir}"
        )


class JournalLockedError(RunDirWriteError):
    """Another process held the run's journal locked past SQLite's wait: the run stopped resumably, the disk is fine."""

    def __init__(self, run_dir: object, cause: str) -> None:
        self.run_dir = run_dir
        self.cause = cause
        self.free = ""
        journal = Path(str(run_dir)) / "journal.sqlite"
        BatchcliError.__init__(
            self,
            f"Another process holds the journal {str(journal)!r} locked ({cause}), so the run stopped. Nothing the "
            "journal holds is lost; items settled after the last successful write will be processed again. Close "
            f"the program that has it open (a sqlite3 shell, a database browser, a backup; `fuser {journal}` names "
            f"it), then continue with: batchcli resume {run_dir}",
        )


class RunDirStartError(BatchcliError):
    """The run directory could not be written as the run started (its journal or its log file): nothing ran."""

    exit_code = 3

    def __init__(self, run_dir: object, cause: str, free: str, resuming: bool) -> None:
        self.run_dir = run_dir
        then = (
            f"then resume it again: batchcli resume {run_dir}" if resuming
            else "then run the command again (or give it another output directory with -d)"
        )  # fmt: skip
        super().__init__(
            f"Cannot write the run directory {str(run_dir)!r} ({cause}; {free} free), so the run did not start: no "
            f"item was processed. Free some space on that disk, {then}."
        )


class RunDirGoneError(RunDirWriteError):
    """The run directory stopped holding the run's journal while it ran: deleted, moved or replaced.

    ``now`` is where the directory went (moved), or None; ``deleted`` says it is gone with its journal.
    A deleted run cannot be resumed (exit 3, as a fatal error); a moved one can, from its new place (exit 130).
    """

    def __init__(self, run_dir: object, deleted: bool, now: object | None) -> None:
        self.run_dir = run_dir
        self.now = now
        self.cause = "deleted" if deleted else "moved" if now is not None else "moved or replaced"
        self.free = ""
        if deleted and Path(str(run_dir)).is_dir():  # the journal alone (a clean-up of *.sqlite, a wrong rm)
            self.exit_code = 3
            message = (
                f"The journal of run {str(run_dir)!r} (journal.sqlite) was deleted while the run went on, so the run "
                "stopped: what it had recorded is gone, and the run cannot be resumed. Start it again with "
                "`batchcli exec`, and leave the files of its run directory in place until it ends."
            )
        elif deleted:
            self.exit_code = 3
            message = (
                f"The run directory {str(run_dir)!r} was deleted while the run went on, and its journal with it, so "
                "the run stopped: what it had recorded is gone, and the run cannot be resumed. Start it again with "
                "`batchcli exec`, and leave its run directory in place until it ends."
            )
        elif now is not None:
            message = (
                f"The run directory {str(run_dir)!r} was moved to {str(now)!r} while the run went on, so the run "
                "stopped. Its journal moved with it and holds what settled; items settled after the move will be "
                f"processed again. Continue with: batchcli resume {now}"
            )
        else:
            message = (
                f"{str(run_dir)!r} no longer holds this run's journal (the directory was moved or replaced while the "
                "run went on), so the run stopped. Continue it from wherever its directory is now with: "
                "batchcli resume DIR"
            )
        BatchcliError.__init__(self, message)


class ExportError(BatchcliError):
    """``batchcli results`` could not write its output (a full disk, say); what it names is left as it was when it can be."""

    exit_code = 1


class NothingRetried(BatchcliError):
    """``retry`` found failures to retry, but none whose input was saved: nothing ran, the items are still failed."""

    exit_code = 1


class JournalError(BatchcliError):
    """A run directory's journal cannot be used: missing, damaged, unsafe to load, or still in use."""


class JournalUnreadable(JournalError):
    """A journal this user may not read at all (another user's, owner-only): not damaged, only out of reach."""


class JournalNewer(JournalError):
    """A journal a newer batchcli wrote, in a format this one does not know: not damaged, only too new."""


class StoppedBeforeStart(BatchcliError):
    """A stop signal arrived while the job was being loaded: nothing ran; exit 130 like any stopped run."""

    exit_code = 130

    def __init__(self, signal_name: str, outcome: str) -> None:
        self.signal_name = signal_name
        """``SIGINT`` or ``SIGTERM``."""
        self.outcome = outcome
        """What the signal left behind, and how to carry on."""
        super().__init__(f"{signal_name} arrived before the run started; {outcome}")

    def show(self, file: IO[Any] | None = None) -> None:
        """A yellow ``Stopped:`` line rather than an error: the user asked for it."""
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=file is None, file=file, highlight=False).print(
            f"[yellow]Stopped:[/] {self.signal_name} arrived before the run started; {escape(self.outcome)}",
            soft_wrap=True,
        )


class CommandStopped(BatchcliError):
    """Ctrl-C, SIGTERM or SIGHUP ended a command that starts no run (``runs``, ``show``, ``results``, ``ctl``...):
    exit 130, 143 or 129, as a process the signal had ended, with a line instead of Python's traceback."""

    def __init__(self, signal_name: str, signum: int, command: str, left: str = "") -> None:
        self.signal_name = signal_name
        """``SIGINT`` or ``SIGTERM``."""
        self.exit_code = 128 + signum
        super().__init__(f"{signal_name} ended `batchcli {command}` before it finished" + (f"; {left}." if left else "."))

    def show(self, file: IO[Any] | None = None) -> None:
        """A yellow ``Stopped:`` line rather than an error: the user asked for it."""
        from rich.console import Console
        from rich.markup import escape

        console = Console(stderr=file is None, file=file, highlight=False)
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone: the exit code still says it
            console.print(f"[yellow]Stopped:[/] {escape(str(self))}", soft_wrap=True)


class ReaderLeft(BatchcliError):
    """The reader of stdout closed it before the command wrote all of it (``batchcli results RUN | head -1``): it has
    what it wanted, so the command ends quietly with exit 0. click's and rich's default, exit 1, is the code that
    says items failed, and a ``set -o pipefail`` script took it for one."""

    exit_code = 0

    def __init__(self) -> None:
        super().__init__("stdout's reader closed it before the command wrote all its output.")

    def show(self, file: IO[Any] | None = None) -> None:
        """Nothing: the user's pipeline ended the output on purpose."""


class RunNotLive(BatchcliError):
    """``batchcli ctl`` on a run that no process runs now (finished, stopped or crashed): nothing to steer."""

    exit_code = 1


class RunNotReady(BatchcliError):
    """A live run that cannot carry out a ``ctl`` command yet (its executor is still starting) or any more (ending)."""

    exit_code = 1
