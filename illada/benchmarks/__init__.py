"""Benchmarks that print measured figures (run with python -m illada.benchmarks.NAME)."""
