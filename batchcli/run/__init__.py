"""Running a job: the driver and its threads, signals, the pause shell and controller, the display, logs."""
