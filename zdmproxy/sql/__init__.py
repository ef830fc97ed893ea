"""Understanding SQL statements: pure, no I/O."""
