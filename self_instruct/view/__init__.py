"""self-instruct view: run directories as one SQLite database (database.py), served by Datasette
(serve.py) with table descriptions, facets, full-text search and canned queries (metadata.py)."""

from .serve import check_port, metadata_path, prepare, serve, serve_command

__all__ = ["check_port", "metadata_path", "prepare", "serve", "serve_command"]
