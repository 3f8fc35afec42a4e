"""Benchmarks for case_jax (not part of the installed package).

Run e.g. ``python -m benchmarks.sinkhorn_throughput --quick`` from the repo root.
"""
