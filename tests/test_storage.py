from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from headwater.errors import StorageError
from headwater.storage import mask_dsn
from headwater.storage.embedded import EmbeddedPostgres
from headwater.storage.schema import Migration, available_migrations, migrate


def test_embedded_server_is_logical_has_pgvector_and_is_reused(
    pg_server: EmbeddedPostgres,
) -> None:
    again = EmbeddedPostgres(pg_server.data_dir)
    assert again.is_running()
    assert again.ensure_running() == pg_server.dsn()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(version[0]) >= 180000
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        assert conn.execute("SELECT '[1,2]'::vector <-> '[1,3]'::vector").fetchone() == (1.0,)


def test_embedded_start_stop_fresh(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "x" / "pg")
    assert not pg.is_running()
    pg.ensure_running()
    try:
        assert pg.is_running()
    finally:
        pg.stop()
    assert not pg.is_running()
    pg.stop()  # idempotent


def test_migrations_apply_once_and_refuse_edits(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(dsn) as conn:
        assert migrate(conn) == []  # the template was migrated already
        versions = [
            r[0]
            for r in conn.execute(
                "SELECT version FROM headwater.schema_migrations ORDER BY 1"
            ).fetchall()
        ]
        assert versions == [m.version for m in available_migrations()]
        edited = [
            Migration(m.version, m.name, m.sql + "\n-- edited") for m in available_migrations()
        ]
        monkeypatch.setattr("headwater.storage.schema.available_migrations", lambda: edited)
        with pytest.raises(StorageError, match="was edited after it was applied"):
            migrate(conn)


def test_mask_dsn_hides_passwords() -> None:
    assert mask_dsn("postgresql://bob:s3cret@h:5432/db") == "postgresql://bob:***@h:5432/db"
    assert "s3cret" not in mask_dsn("host=h password=s3cret dbname=x")


def test_unreachable_database_error_is_masked() -> None:
    from headwater.storage import connect

    with pytest.raises(StorageError) as exc:
        connect("postgresql://bob:s3cret@127.0.0.1:1/db", connect_timeout=2)
    assert "s3cret" not in str(exc.value) and "bob:***@" in str(exc.value)
