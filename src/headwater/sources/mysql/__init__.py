"""MySQL/MariaDB change-data-capture: ROW binlog → Debezium-style events in the log.

See :mod:`.source` for the protocol and the delivery guarantee.
"""

from .position import BinlogPosition
from .settings import MySQLSettings
from .source import MySQLSource

__all__ = ["BinlogPosition", "MySQLSettings", "MySQLSource"]
