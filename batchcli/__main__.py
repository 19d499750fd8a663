"""``python -m batchcli``, and the ``batchcli`` command."""

from batchcli.run.interrupts import EarlySignals, ignore_stop_signals


def main() -> None:
    """Take the stop signals first, then import the CLI (typer, rich: the slow part) and run it."""
    # From here on a SIGINT or SIGTERM during start-up is remembered and stops the command cleanly
    # (exit 130), instead of killing the interpreter halfway.
    EarlySignals.install()
    from batchcli.cli import main as run_cli

    try:
        run_cli()
    except SystemExit as done:
        from batchcli.run.report import EXIT_STOPPED  # loaded by now

        if done.code == EXIT_STOPPED:
            # The run stopped and everything is written. A late second Ctrl-C has nothing left to stop,
            # and once the exiting interpreter has dropped its handlers it would kill the process
            # (status -2 instead of 130).
            ignore_stop_signals()
        raise


if __name__ == "__main__":
    main()
