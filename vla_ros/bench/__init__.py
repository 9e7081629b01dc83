"""Benchmarks that print figures; the last line of each is one JSON object."""
