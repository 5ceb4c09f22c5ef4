"""Benchmarks: load scenarios, apiserver metrics, latency tracking and reports."""
