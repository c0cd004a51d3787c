"""① HTTP in: the FastAPI app, its errors, and its routes."""
