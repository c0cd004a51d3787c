"""Shared hot state between processes: in-process by default, Redis in production."""
