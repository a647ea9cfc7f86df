"""The incremental identity graph in PostgreSQL (schema ``headwater_profiles``).

Records are nodes, shared identifiers and probabilistic links are edges, and the
connected components are persons. :func:`apply` takes one batch of net changes and,
on the caller's connection (inside the worker's transaction, so atomically with the
log offsets):

1. deletes removed records with their identifiers, blocking keys and links;
2. upserts changed records, replaces their identifiers and blocking keys, drops their
   links and re-scores them against every record sharing a blocking key (a link is a
   pure function of the two records and the model, so it equals a batch recompute);
3. recomputes only the affected components: everything reachable from the changed
   records and from the other members of their former persons (a removed piece of
   evidence can split a person, a new one can merge several);
4. assigns person ids: components by size, each keeps the oldest former id of its
   members not taken by a larger one, else gets a new id. A former id that no
   component keeps becomes an alias of the component holding most of its former
   records (a merge); one with no record left is gone, with its aliases;
5. stores facts and rebuilds the profiles of every touched person, version + 1,
   ``as_of`` = the merge of the former persons' ``as_of`` with the batch's position.

Callers serialise calls (:mod:`headwater.profiles.processor` takes an advisory lock),
so a person spanning several topics is never updated by two batches at once.

Limits: every pair sharing a blocking key is scored, so work per change grows with
block sizes (choose selective rules); an identifier shared by many people (a family
email, a travel agent's phone) merges them all; a truncate removes the table's records
whose position is older than the truncate's (rows re-inserted in the same transaction
before the truncate are not told apart); the stored model scores new links only —
``headwater profiles train`` re-scores all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from headwater.config.profiles import ProfilesConfig
from headwater.log.base import Conn
from headwater.profiles.matcher import FSModel, MatchRecord, blocking_keys, score
from headwater.profiles.profile import Fact, SourceRecord, build_profile
from headwater.sinks.replica import position_key

S = "headwater_profiles"


@dataclass(frozen=True, slots=True)
class RecordChange:
    """The net change of one mapped row in a batch (``attributes`` None: deleted)."""

    record_id: str
    table: str
    trust: int
    attributes: Mapping[str, Any] | None
    identifiers: frozenset[tuple[str, str]] = frozenset()
    position: str | None = None
    ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FactChange:
    """The net change of one fact row (``name`` None: deleted)."""

    fact_id: str
    name: str | None
    link_record: str | None = None
    link_identifier: tuple[str, str] | None = None
    date: str | None = None
    amount: float | None = None
    position: str | None = None


def person_id_of(seq: int) -> str:
    return f"p{seq:06d}"


def _pkey(pos: str | None) -> int | None:
    try:
        return position_key(pos)
    except (ValueError, TypeError):
        return None


def merge_as_of(*docs: Mapping[str, Any]) -> dict[str, Any]:
    """Per topic, the position that sorts last (positions of one topic share a form)."""
    out: dict[str, Any] = {}
    for d in docs:
        for topic, pos in d.items():
            cur = out.get(topic)
            if cur is None or (_pkey(pos) or 0) >= (_pkey(cur) or 0):
                out[topic] = pos
    return out


def apply(
    conn: Conn,
    cfg: ProfilesConfig,
    model: FSModel,
    topic: str,
    records: Sequence[RecordChange],
    facts: Sequence[FactChange] = (),
    position: str | None = None,
) -> set[str]:
    """Apply one batch of net changes; returns the person ids whose profile changed."""
    ids = [c.record_id for c in records]
    prior = dict(
        conn.execute(
            f"SELECT record_id, person_id FROM {S}.records WHERE record_id = ANY(%s)", (ids,)
        ).fetchall()
    )
    prior_persons = {p for p in prior.values() if p is not None}
    gone = [c.record_id for c in records if c.attributes is None]
    live = [c for c in records if c.attributes is not None]
    _delete_records(conn, gone + [c.record_id for c in live])
    _link(conn, cfg, model, _upsert_records(conn, cfg, topic, live, prior))

    touched: set[str] = set()
    carried: dict[str, list[dict[str, Any]]] = {}
    if records:
        touched, carried = _recompute(conn, [c.record_id for c in live], prior_persons)
    if facts:
        touched |= _apply_facts(conn, topic, facts)
    if touched:
        _rebuild_profiles(conn, cfg, touched, carried, {topic: position} if position else {})
    return touched


def rescore(
    conn: Conn, cfg: ProfilesConfig, model: FSModel, recs: Mapping[str, MatchRecord]
) -> int:
    """Re-score every link of ``recs`` (all records) with ``model`` and recompute all
    components and profiles; returns the number of persons."""
    conn.execute(f"DELETE FROM {S}.links")
    _link(conn, cfg, model, recs)
    persons = {
        p for (p,) in conn.execute(f"SELECT DISTINCT person_id FROM {S}.records").fetchall() if p
    }
    touched, carried = _recompute(conn, list(recs), persons)
    if touched:
        _rebuild_profiles(conn, cfg, touched, carried, {})
    return len(touched)


# -- steps --------------------------------------------------------------------------------


def _delete_records(conn: Conn, ids: list[str]) -> None:
    """Remove records with their identifiers, blocking keys and links (one statement)."""
    if not ids:
        return
    conn.execute(
        f"WITH i AS (DELETE FROM {S}.identifiers WHERE record_id = ANY(%(ids)s)),"
        f" b AS (DELETE FROM {S}.blocks WHERE record_id = ANY(%(ids)s)),"
        f" l AS (DELETE FROM {S}.links WHERE a = ANY(%(ids)s) OR b = ANY(%(ids)s))"
        f" DELETE FROM {S}.records WHERE record_id = ANY(%(ids)s)",
        {"ids": ids},
    )


def _upsert_records(
    conn: Conn,
    cfg: ProfilesConfig,
    topic: str,
    live: Sequence[RecordChange],
    prior: Mapping[str, str | None],
) -> dict[str, MatchRecord]:
    """Insert the changed records (keeping their person) with identifiers and blocking
    keys, in one statement; returns them as the matcher sees them."""
    if not live:
        return {}
    recs = {c.record_id: MatchRecord.of(c.record_id, (), c.attributes or {}) for c in live}
    idents = [(k, v, c.record_id) for c in live for k, v in sorted(c.identifiers)]
    blocks = [(k, rid) for rid, m in recs.items() for k in blocking_keys(cfg, m)]
    conn.execute(
        f"WITH r AS (INSERT INTO {S}.records (record_id, tbl, topic, trust, attributes,"
        " match, position, position_key, ts_ms, person_id) SELECT * FROM unnest(%s::text[],"
        " %s::text[], %s::text[], %s::int[], %s::jsonb[], %s::jsonb[], %s::text[],"
        " %s::numeric[], %s::int8[], %s::text[])),"
        f" i AS (INSERT INTO {S}.identifiers (kind, value, record_id)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING)"
        f" INSERT INTO {S}.blocks (key, record_id) SELECT * FROM unnest(%s::text[], %s::text[])"
        " ON CONFLICT DO NOTHING",
        (
            [c.record_id for c in live],
            [c.table for c in live],
            [topic] * len(live),
            [c.trust for c in live],
            [Jsonb(dict(c.attributes or {})) for c in live],
            [Jsonb(dict(recs[c.record_id].attributes)) for c in live],
            [c.position for c in live],
            [_pkey(c.position) for c in live],
            [c.ts_ms for c in live],
            [prior.get(c.record_id) for c in live],
            [i[0] for i in idents],
            [i[1] for i in idents],
            [i[2] for i in idents],
            [b[0] for b in blocks],
            [b[1] for b in blocks],
        ),
    )
    return recs


def _link(
    conn: Conn, cfg: ProfilesConfig, model: FSModel, changed: Mapping[str, MatchRecord]
) -> None:
    """Score every changed record against the records sharing one of its blocking keys."""
    if not changed or not cfg.blocking:
        return
    rows = conn.execute(
        f"SELECT o.record_id, array_agg(DISTINCT k.record_id),"
        f" (SELECT match FROM {S}.records r WHERE r.record_id = o.record_id)"
        f" FROM {S}.blocks k JOIN {S}.blocks o ON o.key = k.key AND o.record_id <> k.record_id"
        " WHERE k.record_id = ANY(%s) GROUP BY o.record_id",
        (list(changed),),
    ).fetchall()
    recs = dict(changed)
    todo: set[tuple[str, str]] = set()
    for b, mine, match in rows:
        if b not in recs:
            recs[b] = MatchRecord(b, frozenset(), match)
        todo.update((min(a, b), max(a, b)) for a in mine)
    links = []
    for a, b in sorted(todo):
        p, ev = score(model, recs[a], recs[b])
        if p >= cfg.threshold:
            links.append((a, b, p, Jsonb(ev)))
    if links:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {S}.links (a, b, score, evidence) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (a, b) DO UPDATE SET score = excluded.score,"
                " evidence = excluded.evidence",
                links,
            )


def _reach(conn: Conn, seeds: Iterable[str]) -> tuple[set[str], list[tuple[str, str]]]:
    """Every record reachable from ``seeds`` and the edges among them."""
    seen = set(seeds)
    frontier = list(seen)
    edges: list[tuple[str, str]] = []
    while frontier:
        rows = conn.execute(
            f"SELECT i1.record_id, i2.record_id FROM {S}.identifiers i1"
            f" JOIN {S}.identifiers i2 ON i2.kind = i1.kind AND i2.value = i1.value"
            " AND i2.record_id <> i1.record_id WHERE i1.record_id = ANY(%(f)s)"
            f" UNION ALL SELECT a, b FROM {S}.links WHERE a = ANY(%(f)s) OR b = ANY(%(f)s)",
            {"f": frontier},
        ).fetchall()
        frontier = []
        for a, b in rows:
            edges.append((a, b))
            for x in (a, b):
                if x not in seen:
                    seen.add(x)
                    frontier.append(x)
    return seen, edges


def _components(nodes: set[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    parent = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        groups[find(n)].append(n)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def _recompute(
    conn: Conn, changed: list[str], prior_persons: set[str]
) -> tuple[set[str], dict[str, list[dict[str, Any]]]]:
    """Re-derive the components around ``changed`` and their person ids; also the
    ``as_of`` of merged-away persons, per heir."""
    members = conn.execute(
        f"SELECT record_id FROM {S}.records WHERE person_id = ANY(%s)", (list(prior_persons),)
    ).fetchall()
    nodes, edges = _reach(conn, [*changed, *(m for (m,) in members)])
    before: dict[str, str | None] = {}
    seqs: dict[str, int] = {}
    for rid, pid, seq in conn.execute(
        f"SELECT r.record_id, r.person_id, p.seq FROM {S}.records r"
        f" LEFT JOIN {S}.persons p USING (person_id) WHERE r.record_id = ANY(%s)",
        (list(nodes),),
    ).fetchall():
        before[rid] = pid
        if pid is not None:
            seqs[pid] = seq
    involved = prior_persons | {p for p in before.values() if p is not None}
    claimed: dict[str, list[str]] = {}
    for comp in _components(nodes, edges):
        held = {before.get(r) for r in comp}
        olds = sorted((p for p in held if p is not None and p not in claimed), key=seqs.__getitem__)
        if olds:
            pid = olds[0]
        else:
            (seq,) = conn.execute(f"SELECT nextval('{S}.person_seq')").fetchone() or (0,)
            pid = person_id_of(int(seq))
            conn.execute(f"INSERT INTO {S}.persons (person_id, seq) VALUES (%s, %s)", (pid, seq))
        claimed[pid] = comp
    owner = {r: pid for pid, comp in claimed.items() for r in comp}
    retired = involved - set(claimed)
    carried: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for old in sorted(retired):
        heirs = [owner[r] for r, p in before.items() if p == old and r in owner]
        conn.execute(f"DELETE FROM {S}.persons WHERE person_id = %s", (old,))
        row = conn.execute(
            f"DELETE FROM {S}.profiles WHERE person_id = %s RETURNING as_of", (old,)
        ).fetchone()
        if heirs:
            heir = max(set(heirs), key=lambda p: (heirs.count(p), -seqs.get(p, 0)))
            conn.execute(f"UPDATE {S}.aliases SET person_id = %s WHERE person_id = %s", (heir, old))
            conn.execute(
                f"INSERT INTO {S}.aliases (alias, person_id) VALUES (%s, %s)"
                " ON CONFLICT (alias) DO UPDATE SET person_id = excluded.person_id",
                (old, heir),
            )
            if row is not None:
                carried[heir].append(row[0])
        else:
            conn.execute(f"DELETE FROM {S}.aliases WHERE person_id = %s", (old,))
    moved = [(pid, r) for r, pid in owner.items() if before.get(r) != pid]
    if moved:
        with conn.cursor() as cur:
            cur.executemany(f"UPDATE {S}.records SET person_id = %s WHERE record_id = %s", moved)
    return set(claimed), carried


def _apply_facts(conn: Conn, topic: str, facts: Sequence[FactChange]) -> set[str]:
    ids = [f.fact_id for f in facts]
    old = conn.execute(
        f"SELECT link_record, link_kind, link_value FROM {S}.facts WHERE fact_id = ANY(%s)",
        (ids,),
    ).fetchall()
    conn.execute(f"DELETE FROM {S}.facts WHERE fact_id = ANY(%s)", (ids,))
    live = [f for f in facts if f.name is not None]
    if live:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {S}.facts (fact_id, name, topic, link_record, link_kind,"
                " link_value, fact_date, amount, position, position_key)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        f.fact_id,
                        f.name,
                        topic,
                        f.link_record,
                        f.link_identifier[0] if f.link_identifier else None,
                        f.link_identifier[1] if f.link_identifier else None,
                        f.date,
                        f.amount,
                        f.position,
                        _pkey(f.position),
                    )
                    for f in live
                ],
            )
    anchors = [*old, *((f.link_record, *(f.link_identifier or (None, None))) for f in live)]
    recs = [a[0] for a in anchors if a[0] is not None]
    kinds = [a[1] for a in anchors if a[1] is not None]
    values = [a[2] for a in anchors if a[1] is not None]
    rows = conn.execute(
        f"SELECT person_id FROM {S}.records WHERE record_id = ANY(%s)"
        f" UNION SELECT r.person_id FROM {S}.identifiers i JOIN {S}.records r USING (record_id)"
        " WHERE (i.kind, i.value) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (recs, kinds, values),
    ).fetchall()
    return {p for (p,) in rows if p is not None}


def _rebuild_profiles(
    conn: Conn,
    cfg: ProfilesConfig,
    persons: set[str],
    carried: Mapping[str, list[dict[str, Any]]],
    as_of: Mapping[str, Any],
) -> None:
    pids = sorted(persons)
    rows = conn.execute(
        f"SELECT person_id, record_id, trust, ts_ms, attributes, ARRAY(SELECT kind || chr(31)"
        f" || value FROM {S}.identifiers i WHERE i.record_id = r.record_id) FROM {S}.records r"
        " WHERE person_id = ANY(%s)",
        (pids,),
    ).fetchall()
    member: dict[str, str] = {r[1]: r[0] for r in rows}
    idents: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for r in rows:
        for kv in r[5]:
            kind, _, value = kv.partition(chr(31))
            idents[r[1]].add((kind, value))
    recs: dict[str, list[SourceRecord]] = defaultdict(list)
    for pid, rid, trust, ts, attrs, _ in rows:
        recs[pid].append(SourceRecord(rid, trust, ts, attrs, frozenset(idents[rid])))
    ident_owner = {i: member[rid] for rid, s in idents.items() for i in s}
    facts: dict[str, list[Fact]] = defaultdict(list)
    for fid, name, lrec, kind, value, date, amount in conn.execute(
        f"SELECT fact_id, name, link_record, link_kind, link_value, fact_date, amount"
        f" FROM {S}.facts WHERE link_record = ANY(%s) OR (link_kind, link_value) IN"
        " (SELECT kind, value FROM headwater_profiles.identifiers WHERE record_id = ANY(%s))",
        (list(member), list(member)),
    ).fetchall():
        pid = member.get(lrec) if lrec is not None else ident_owner.get((kind, value))
        if pid is not None:
            facts[pid].append(Fact(fid, name, date, float(amount) if amount is not None else None))
    aliases: dict[str, list[str]] = {}
    old_as_of: dict[str, Any] = {}
    for pid, as_of_doc, alias_ids in conn.execute(
        f"SELECT x.pid, p.as_of, ARRAY(SELECT alias FROM {S}.aliases a WHERE a.person_id = x.pid)"
        f" FROM unnest(%s::text[]) AS x(pid) LEFT JOIN {S}.profiles p ON p.person_id = x.pid",
        (pids,),
    ).fetchall():
        aliases[pid] = alias_ids
        old_as_of[pid] = as_of_doc
    out = []
    for pid in pids:
        if pid not in recs:
            conn.execute(f"DELETE FROM {S}.profiles WHERE person_id = %s", (pid,))
            continue
        doc = build_profile(pid, recs[pid], facts[pid], aliases[pid], survivorship=cfg.survivorship)
        merged = merge_as_of(old_as_of.get(pid) or {}, *carried.get(pid, []), as_of)
        out.append((pid, Jsonb(doc), Jsonb(merged)))
    if out:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {S}.profiles AS p (person_id, version, profile, as_of)"
                " VALUES (%s, 1, %s, %s) ON CONFLICT (person_id) DO UPDATE SET"
                " version = p.version + 1, profile = excluded.profile, as_of = excluded.as_of,"
                " updated_at = now()",
                out,
            )
