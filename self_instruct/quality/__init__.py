"""Quality gates: keeping benchmark text out of the data (decontaminate.py)."""
