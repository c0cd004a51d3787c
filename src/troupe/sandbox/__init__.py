"""Untrusted Python, run in CPython-for-WASI on wasmtime, in a child process."""
