"""Who is calling: API keys, JWTs, and the principal a request acts for."""
