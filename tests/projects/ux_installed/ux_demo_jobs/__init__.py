"""Demo jobs a package installs through the ``batchcli.jobs`` entry-point group."""
