"""Workflows decide; they do no I/O and read time and randomness only through Temporal."""
