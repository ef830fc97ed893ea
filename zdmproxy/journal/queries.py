"""The journal's named SQL blocks (queries.sql), loaded once."""

from __future__ import annotations

from zdmproxy.engine.queries import load_queries

QUERIES = load_queries("zdmproxy.journal")
