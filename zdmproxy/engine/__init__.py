"""Running steps on PostgreSQL: pre-flight, timeouts, the watchdog, retries."""
