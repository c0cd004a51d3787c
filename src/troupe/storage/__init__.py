"""⑧ Storage: the relational record of tasks, events and usage (SQLite or PostgreSQL)."""
