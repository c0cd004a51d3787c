"""Activities: thin Temporal wrappers over plain async services."""
