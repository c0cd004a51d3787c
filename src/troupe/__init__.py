"""Troupe: a multi-agent platform. The flow of one task, in package order:

1. ``gateway``      takes ``POST /api/v1/tasks``, validates it, stores a queued task;
2. ``orchestrator`` starts a durable ``TaskWorkflow`` on Temporal (``launcher``), which
                    schedules agent activities and records how the task ended;
3. ``agents``       run the task: each agent asks the LLM layer and meters every call;
4. ``llm``          turns a chat request into a response with provider-reported usage;
5. ``storage``      keeps tasks, events and usage (SQLite or PostgreSQL) and wakes
                    readers of a task's event stream (in-process or Redis);
6. ``observability`` counts all of it for Prometheus.

``app.Services`` composes these once per process; ``cli`` starts the processes;
``client`` is the typed way in over HTTP.
"""

__version__ = "0.1.0"
