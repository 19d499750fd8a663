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
    except SystemExit:
        # The command's outcome is decided and written (a run's summary holds its exit code). A late Ctrl-C or
        # SIGTERM has nothing left to stop, and once the exiting interpreter has reset its Python-level handlers
        # to the defaults it would kill the process: exit 130 or 143 where summary.json says 0, or -2 for 130.
        ignore_stop_signals()
        raise


if __name__ == "__main__":
    main()
