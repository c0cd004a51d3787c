"""Vendor modules; each one knows its own wire format and nothing else does."""
