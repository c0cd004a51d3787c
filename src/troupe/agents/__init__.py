"""③ Agents: the loop that turns a sub-task into LLM calls and an answer."""
