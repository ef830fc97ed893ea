"""Rewrite rules: one dangerous statement in, ordered safe steps out (one module per rule).

The registry (``registry.RULES``) is tried in order; the first rule that
returns steps wins, and a statement no rule takes runs as written.
"""
