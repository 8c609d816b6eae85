"""Benchmarks (not tests): run by hand, results reported with the machine they ran on."""
