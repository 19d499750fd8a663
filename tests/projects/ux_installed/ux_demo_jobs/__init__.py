"""Demo jobs a package installs through the ``batchcli.load.jobs`` entry-point group."""
