"""``python -m batchcli``."""

from batchcli.cli import main

main()
