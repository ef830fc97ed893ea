"""Turning statements into ordered, safe steps: pure, no I/O."""
