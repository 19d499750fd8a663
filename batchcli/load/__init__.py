"""Loading a job: finding and importing the project, params, configuration, casting, wiring it with kink."""
