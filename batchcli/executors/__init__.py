"""Executors: strategies that run a job's items and report outcomes to the run's Tally."""
