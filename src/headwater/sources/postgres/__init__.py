"""PostgreSQL change data capture through logical replication (pgoutput).

- :mod:`.pgoutput`: pure decoder of the replication messages;
- :mod:`.values`: text-format values → JSON values by type OID;
- :mod:`.envelope`: Debezium-compatible change events;
- :mod:`.catalog`: server/table checks with actionable refusals;
- :mod:`.source`: :class:`PostgresSource` (snapshot, stream, confirm after durable).

Importing this package does not import psycopg2 (only :meth:`PostgresSource.run` does).
"""

from headwater.sources.postgres.source import Guarantee, PostgresSource

__all__ = ["Guarantee", "PostgresSource"]
