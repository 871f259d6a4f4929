"""Diversity and quality analysis of instruction data: ``analyze(paths, out_dir, ...)`` writes
report.html (self-contained), report.md (with PNG figures next to it) and stats.json.

Modules: ``load`` (inputs), ``stats`` (counting), ``verbnoun`` (spaCy verb-noun structure),
``judge`` (opt-in LLM review), ``compute`` (one input's statistics), ``compare`` (the comparison
table), ``layout`` (the report's blocks), ``plots`` (matplotlib figures), ``report`` (HTML and
markdown), ``entry`` (``analyze``, the entry point).
"""

from .entry import analyze

__all__ = ["analyze"]
