"""Self-Instruct: grow an instruction-tuning dataset from a few seed tasks with any LLM."""

__version__ = "0.1.0"
