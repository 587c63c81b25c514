"""Benchmarks for asyncmig: ``make bench`` (``python -m bench``) prints a table of figures."""
