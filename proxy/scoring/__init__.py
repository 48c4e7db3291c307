"""Asynchronous scoring: which records are scored, by which scorers, and how results are weighted."""
