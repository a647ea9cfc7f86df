"""Checks and catalog look-ups on the source database, with actionable refusals.

Everything here runs on an ordinary (non-replication) connection to the source and
raises :class:`~headwater.errors.SourceError` with the fix spelled out: ``wal_level``
not logical, no REPLICATION attribute, a table that is missing, not readable, or has
neither a primary key nor a usable REPLICA IDENTITY, and a publication that cannot be
created for lack of ownership.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from headwater.errors import SourceError
from headwater.log.base import Conn


@dataclass(frozen=True, slots=True)
class TableInfo:
    relid: int
    schema: str
    table: str
    replica_identity: str
    columns: tuple[str, ...]
    """Published columns in attnum order (dropped and generated columns excluded)."""
    type_oids: tuple[int, ...]
    type_names: tuple[str, ...]
    """``format_type`` of each column, for casts of chunk bounds."""
    key: tuple[str, ...]
    """Primary-key columns in index order (or the replica-identity index's); may be
    empty for REPLICA IDENTITY FULL tables without a key."""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)


def check_server(conn: Conn, where: str) -> None:
    """Refuse a server that cannot do logical decoding for this user.

    Raises:
        SourceError: ``wal_level`` is not ``logical`` or the role lacks REPLICATION.
    """
    row = conn.execute("SHOW wal_level").fetchone()
    level = row[0] if row else "?"
    if level != "logical":
        raise SourceError(
            f"{where}: wal_level is {level!r}, logical decoding needs 'logical'. Fix: run"
            " ALTER SYSTEM SET wal_level = 'logical'; and restart PostgreSQL (on RDS/Aurora"
            " set rds.logical_replication = 1 in the parameter group and reboot)"
        )
    row = conn.execute(
        "SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row is not None and not row[1]:
        raise SourceError(
            f"{where}: role {row[0]!r} may not start replication. Fix: ALTER ROLE"
            f" {row[0]} WITH REPLICATION; (on RDS: GRANT rds_replication TO {row[0]};)"
        )


def resolve_table(conn: Conn, spec: str, where: str) -> TableInfo:
    """Look up ``schema.table`` (or ``table`` in ``public``) and check it is capturable.

    Raises:
        SourceError: missing, not readable, or no key and no usable replica identity.
    """
    schema, _, table = spec.rpartition(".")
    schema = schema or "public"
    row = conn.execute(
        "SELECT c.oid, c.relreplident, has_table_privilege(c.oid, 'SELECT')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table),
    ).fetchone()
    if row is None:
        raise SourceError(
            f"{where}: table {schema}.{table} does not exist (tables = [...] takes"
            " 'schema.table' or 'table' in schema public)"
        )
    relid, ident, can_read = row
    if not can_read:
        raise SourceError(
            f"{where}: no SELECT privilege on {schema}.{table} for the snapshot. Fix:"
            f" GRANT SELECT ON {schema}.{table} TO <the source's user>;"
        )
    cols = conn.execute(
        "SELECT attname, atttypid::int8, format_type(atttypid, atttypmod)"
        " FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
        " AND attgenerated = '' ORDER BY attnum",
        (relid,),
    ).fetchall()
    key = [
        r[0]
        for r in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid ="
            " i.indrelid AND a.attnum = ANY(i.indkey::int2[]) WHERE i.indrelid = %s AND"
            " (i.indisprimary OR (%s = 'i' AND i.indisreplident))"
            " ORDER BY i.indisprimary DESC, array_position(i.indkey::int2[], a.attnum)",
            (relid, ident),
        ).fetchall()
    ]
    if not key and ident not in ("f", "i"):
        raise SourceError(
            f"{where}: table {schema}.{table} has no primary key, so its updates and"
            " deletes cannot be captured (and publishing it would make PostgreSQL refuse"
            f" them). Fix: add a primary key, or ALTER TABLE {schema}.{table} REPLICA"
            " IDENTITY FULL; (events then have no key)"
        )
    return TableInfo(
        relid,
        schema,
        table,
        ident,
        tuple(r[0] for r in cols),
        tuple(int(r[1]) for r in cols),
        tuple(r[2] for r in cols),
        tuple(dict.fromkeys(key)),
    )


def ensure_publication(conn: Conn, name: str, tables: list[TableInfo], where: str) -> None:
    """Create publication ``name`` for ``tables`` (all operations incl. TRUNCATE), or
    add the tables an existing one lacks.

    Raises:
        SourceError: the user may not create or alter it (it must own the tables).
    """
    try:
        exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,))
        if exists.fetchone() is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(name), sql.SQL(", ").join(t.ident for t in tables)
                )
            )
            return
        have = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                (name,),
            ).fetchall()
        }
        missing = [t for t in tables if (t.schema, t.table) not in have]
        if missing:
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(name), sql.SQL(", ").join(t.ident for t in missing)
                )
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        names = ", ".join(t.qualified for t in tables)
        raise SourceError(
            f"{where}: cannot create publication {name}: {str(exc).strip()}. Fix: have"
            f" the tables' owner run CREATE PUBLICATION {name} FOR TABLE {names};"
            " (Headwater reuses an existing publication of that name)"
        ) from None


def register_types(conn: Conn, oids: set[int]) -> list[tuple[int, str, int]]:
    """``(oid, name, element oid)`` of non-built-in types among ``oids`` (enums,
    domains, their arrays), for :meth:`ValueDecoder.register_type`."""
    rows = conn.execute(
        "SELECT oid::int8, typname, CASE WHEN typcategory = 'A' THEN typelem::int8 ELSE 0 END"
        " FROM pg_type WHERE oid = ANY(%s::oid[]) AND oid >= 16384",
        (sorted(oids),),
    ).fetchall()
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


__all__ = ["TableInfo", "check_server", "ensure_publication", "register_types", "resolve_table"]
