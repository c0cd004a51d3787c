"""④ Tools agents may call: typed arguments, bounded results."""
