"""② Durable execution on Temporal: launcher, workflows, activities, the embedded server."""
