"""``/v1/profiles``: unified customer profiles by person id or any linked identifier."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query

from headwater.engine.runtime import Runtime
from headwater.profiles.store import Profile, get_profile
from headwater.storage.database import connect


def _body(p: Profile) -> dict[str, Any]:
    return {"person_id": p.person_id, "version": p.version, "profile": p.profile, "as_of": p.as_of}


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/profiles", tags=["profiles"])
    region = rt.settings.profiles.default_region if rt.settings.profiles else "US"

    def lookup(ref: str) -> dict[str, Any]:
        with connect(rt.dsn, autocommit=True) as conn:
            p = get_profile(conn, ref, region=region)
        if p is None:
            raise HTTPException(404, "no profile for that person id or identifier")
        return _body(p)

    @r.get("/{person_id}")
    def by_id(person_id: str) -> dict[str, Any]:
        """The profile of a person id (or an alias it was merged from)."""
        return lookup(person_id)

    @r.get("")
    def by_identifier(identifier: str = Query(min_length=1)) -> dict[str, Any]:
        """The profile linked to an email, phone, loyalty number or record id."""
        return lookup(identifier)

    return r
