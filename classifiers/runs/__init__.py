"""Runs: what each command executes (probe, dimensional, neighbors, evaluate, study, demo), the fold runner, study executors, and the low helpers they share."""
