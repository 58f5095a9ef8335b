"""memfts: a knowledge-graph memory for AI agents, on SQLite FTS5, safe under many sessions."""

__version__ = "0.1.0"
