"""promptapi: stored LLM prompts served as typed REST APIs."""

__version__ = "0.1.0"
