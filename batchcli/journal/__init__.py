"""The run directory: the journal, settled ranges, failure records, resume and retry plans, history."""
