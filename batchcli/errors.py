"""Domain errors: each carries the bad value and the fix; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class BatchcliError(Exception):
    """A problem the user can fix; ``str(error)`` is the whole message, naming the culprit and the fix."""

    exit_code = 2


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


class JournalError(BatchcliError):
    """A run directory's journal cannot be used: missing, damaged, unsafe to load, or still in use."""


class JournalUnreadable(JournalError):
    """A journal this user may not read at all (another user's, owner-only): not damaged, only out of reach."""
