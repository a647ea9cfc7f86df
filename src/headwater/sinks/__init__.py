"""Built-in sinks: processors that write records into PostgreSQL tables."""
