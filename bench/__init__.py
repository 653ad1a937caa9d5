"""Benchmarks (scripts that print tables and write CSVs under bench/results/); not part of the test suite."""
