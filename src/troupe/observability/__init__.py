"""⑨ Observability: every metric name once, logging set-up."""
