"""Sluicegate."""
