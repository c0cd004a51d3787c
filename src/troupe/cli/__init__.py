"""The `troupe` command line."""
