"""The quickest end-to-end checks: the CLI answers and a tiny job runs."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


def test_help_lists_exec(cli) -> None:
    """``batchcli --help`` lists the exec command."""
    result = cli("--help")
    assert result.exit_code == 0
    assert "exec" in result.output
