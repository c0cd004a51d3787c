"""⑥ The LLM layer: one provider Protocol; vendors and cross-cutting wrappers behind it."""
