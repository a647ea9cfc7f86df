"""Reading profiles: :func:`get_profile` by person id, alias or any linked identifier.

Profiles are written only by the profiles processor (in its batches' transactions);
readers see a committed state: a person's profile, identifiers and aliases change
together.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from headwater.log.base import Conn
from headwater.profiles.normalize import lookup_candidates


@dataclass(frozen=True)
class Profile:
    person_id: str
    version: int
    profile: dict[str, Any]
    as_of: dict[str, Any]


def resolve_person(conn: Conn, ref: str, *, region: str = "US") -> str | None:
    """The person id ``ref`` names: a person id, an alias, a record id
    (``crm:customers:42``) or a linked identifier (email, phone, loyalty number, ...),
    in that order. None when nothing matches."""
    row = conn.execute(
        "SELECT person_id FROM headwater_profiles.persons WHERE person_id = %(r)s"
        " UNION ALL SELECT person_id FROM headwater_profiles.aliases WHERE alias = %(r)s"
        " UNION ALL SELECT person_id FROM headwater_profiles.records WHERE record_id = %(r)s"
        " LIMIT 1",
        {"r": ref},
    ).fetchone()
    if row is not None:
        return str(row[0])
    row = conn.execute(
        "SELECT r.person_id FROM headwater_profiles.identifiers i"
        " JOIN headwater_profiles.records r USING (record_id)"
        " WHERE i.value = ANY(%s) AND r.person_id IS NOT NULL ORDER BY i.kind LIMIT 1",
        (lookup_candidates(ref, region),),
    ).fetchone()
    return None if row is None else str(row[0])


def get_profile(conn: Conn, ref: str, *, region: str = "US") -> Profile | None:
    """The current profile of the person ``ref`` names (see :func:`resolve_person`).

    ``facts.<name>.upcoming`` drops entries dated before today (they were upcoming
    when the profile was built).
    """
    pid = resolve_person(conn, ref, region=region)
    if pid is None:
        return None
    row = conn.execute(
        "SELECT person_id, version, profile, as_of FROM headwater_profiles.profiles"
        " WHERE person_id = %s",
        (pid,),
    ).fetchone()
    if row is None:
        return None
    doc: dict[str, Any] = row[2]
    today = dt.date.today().isoformat()
    for agg in (doc.get("facts") or {}).values():
        agg["upcoming"] = [u for u in agg.get("upcoming", []) if str(u["date"])[:10] >= today]
    return Profile(row[0], row[1], doc, row[3])
