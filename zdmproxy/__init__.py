"""zdmproxy: run PostgreSQL schema changes without making application traffic queue."""

__version__ = "0.1.0"
