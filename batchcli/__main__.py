"""``python -m batchcli``, and the ``batchcli`` command."""

from batchcli.run.interrupts import EarlySignals


def main() -> None:
    """Take the stop signals first, then import the CLI (typer, rich: the slow part) and run it."""
    # From here on a SIGINT or SIGTERM during start-up is remembered and stops the command cleanly
    # (exit 130), instead of killing the interpreter halfway.
    EarlySignals.install()
    from batchcli.cli import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()
