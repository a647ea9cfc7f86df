"""Unified customer profiles on real PostgreSQL.

- units: normalization, Fellegi-Sunter scoring and EM, the offline ``resolve`` API,
  the ``[profiles]`` config and its derived pipelines;
- the identity graph fed with CDC envelopes: merge (older id survives, the other is an
  alias), split by removed evidence, delete, facts, lookups by any identifier;
- end to end: a real source PostgreSQL with three person tables and two fact tables is
  captured into the log; profiles workers (one per topic, interleaved at random, one
  run SIGKILLed mid-way) apply random inserts, updates and deletes; the persons and
  profiles then equal a batch recompute from the source tables
  (:func:`headwater.profiles.batch.resolve` + :func:`build_profile`); a change in any
  source reaches its profile with that change's position as ``as_of``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from headwater.config.model import Settings
from headwater.config.profiles import Comparison, FactTable, MappedTable, ProfilesConfig
from headwater.engine.registry import build_processor
from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.base import LogRecord, Record, TopicSpec, dlq_topic
from headwater.log.postgres import PostgresLog
from headwater.profiles.batch import resolve
from headwater.profiles.matcher import MatchRecord, default_model, estimate, score
from headwater.profiles.normalize import normalize_identifier
from headwater.profiles.processor import ProfilesProcessor
from headwater.profiles.profile import Fact, SourceRecord, build_profile
from headwater.profiles.store import get_profile
from headwater.sources.postgres import PostgresSource
from headwater.storage.embedded import EmbeddedPostgres

from .conftest import new_database, query
from .test_cdc_postgres import _count, _drop_slots, running, sql, wait_for, wait_snapshot

SRC = "travel"
TABLES = ("customers", "guests", "members", "bookings", "interactions")


def config(topic_prefix: str = "travel.public") -> ProfilesConfig:
    jw = Comparison(method="jaro_winkler", levels=(0.92, 0.85))
    return ProfilesConfig(
        default_region="GB",
        threshold=0.9,
        blocking=(("last_name",), ("dob",)),
        comparisons={
            "first_name": jw,
            "last_name": jw,
            "dob": Comparison(method="exact", levels=()),
        },
        tables=(
            MappedTable(
                source=SRC,
                table="customers",
                topic=f"{topic_prefix}.customers",
                trust=3,
                identifiers={"email": "email", "phone": "phone"},
                attributes={"first_name": "first_name", "last_name": "last_name", "dob": "dob"},
            ),
            MappedTable(
                source=SRC,
                table="guests",
                topic=f"{topic_prefix}.guests",
                trust=2,
                identifiers={"email": "email", "mobile": "phone", "loyalty_no": "loyalty"},
                attributes={"given": "first_name", "family": "last_name"},
            ),
            MappedTable(
                source=SRC,
                table="members",
                topic=f"{topic_prefix}.members",
                trust=1,
                identifiers={"loyalty_no": "loyalty", "email": "email"},
                attributes={"first_name": "first_name", "last_name": "last_name", "dob": "dob"},
            ),
        ),
        facts=(
            FactTable(
                name="bookings",
                source=SRC,
                table="bookings",
                topic=f"{topic_prefix}.bookings",
                link_column="customer_id",
                link_table=f"{SRC}.customers",
                date_column="departs_on",
                amount_column="amount",
            ),
            FactTable(
                name="interactions",
                source=SRC,
                table="interactions",
                topic=f"{topic_prefix}.interactions",
                link_column="email",
                link_identifier="email",
                date_column="at",
            ),
        ),
    )


# -- units ------------------------------------------------------------------------------


def test_identifiers_normalize() -> None:
    assert normalize_identifier("email", "  Ann.Lee@Example.COM ") == "ann.lee@example.com"
    assert normalize_identifier("email", "not-an-email") is None
    assert normalize_identifier("phone", "07700 900123", "GB") == "+447700900123"
    assert normalize_identifier("phone", "+44 (0)7700-900123", "US") == "+447700900123"
    assert normalize_identifier("phone", "(201) 555-0123", "US") == "+12015550123"
    assert normalize_identifier("phone", "12", "GB") is None
    assert normalize_identifier("loyalty", " ab-123 45 ") == "AB12345"
    assert normalize_identifier("email", None) is None


def test_fellegi_sunter_scores_and_em() -> None:
    cfg = config()
    m = default_model(cfg)
    a = MatchRecord.of("a", (), {"first_name": "Jon", "last_name": "Smith", "dob": "1980-01-02"})
    b = MatchRecord.of("b", (), {"first_name": "John", "last_name": "Smith", "dob": "1980-01-02"})
    c = MatchRecord.of("c", (), {"first_name": "Mary", "last_name": "Smith", "dob": "1975-03-04"})
    p_ab, ev = score(m, a, b)
    p_ac, _ = score(m, a, c)
    assert p_ab > cfg.threshold > p_ac
    assert ev == {"dob": 1, "first_name": 2, "last_name": 1}  # exact, fuzzy, exact
    # EM from unlabelled data: agreement on a name is more likely among matches.
    rng = random.Random(1)
    recs = []
    for i in range(300):
        first = rng.choice(["ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal"])
        last = f"name{i}"
        dob = f"19{rng.randrange(40, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)}"
        recs.append(
            MatchRecord.of(f"r{i}", (), {"first_name": first, "last_name": last, "dob": dob})
        )
        if i % 3 == 0:
            recs.append(
                MatchRecord.of(
                    f"d{i}", (), {"first_name": first + "e", "last_name": last, "dob": dob}
                )
            )
    fs = estimate(cfg, recs)
    w = dict(zip([n for n, _ in fs.comparisons], fs.weights, strict=True))
    assert w["dob"][1] > 3 and w["last_name"][1] > 3  # exact agreement: strong evidence
    assert w["dob"][-1] < 0  # disagreement: evidence against
    res = resolve(cfg, recs, model=fs)
    truth = {(f"d{i}", f"r{i}") for i in range(0, 300, 3)}
    assert res.pairs() == truth
    assert all(link.score >= cfg.threshold for link in res.links)


def test_resolve_links_by_identifier_and_rejects_duplicate_ids() -> None:
    cfg = config()
    recs = [
        MatchRecord.of("x", {("email", "a@b.c")}, {"last_name": "One"}),
        MatchRecord.of("y", {("email", "a@b.c"), ("phone", "+1")}, {"last_name": "Two"}),
        MatchRecord.of("z", {("phone", "+1")}, {"last_name": "Three"}),
        MatchRecord.of("w", set(), {"last_name": "Four"}),
    ]
    res = resolve(cfg, recs, model=default_model(cfg))
    assert sorted(sorted(c) for c in res.clusters) == [["w"], ["x", "y", "z"]]
    with pytest.raises(ValueError, match="unique"):
        resolve(cfg, [recs[0], recs[0]])


def test_profile_survivorship_and_aggregates() -> None:
    recs = [
        SourceRecord("crm:c:1", 3, 100, {"last_name": "Lee", "first_name": None}),
        SourceRecord("res:g:1", 1, 200, {"last_name": "Li", "first_name": "Ann"}),
    ]
    facts = [
        Fact("b1", "bookings", "2020-01-01", 100.0),
        Fact("b2", "bookings", "2999-01-01", 50.5),
    ]
    doc = build_profile("p1", recs, facts, today="2026-01-01")
    assert doc["attributes"]["last_name"] == {"value": "Lee", "source": "crm:c:1"}
    assert doc["attributes"]["first_name"]["value"] == "Ann"  # the only non-empty one
    assert build_profile("p1", recs, [], survivorship="recent")["attributes"]["last_name"] == {
        "value": "Li",
        "source": "res:g:1",
    }
    b = doc["facts"]["bookings"]
    assert (b["count"], b["amount"], b["first"], b["last"]) == (
        2,
        150.5,
        "2020-01-01",
        "2999-01-01",
    )
    assert b["upcoming"] == [{"id": "b2", "date": "2999-01-01"}]


def test_config_derives_one_profiles_pipeline_per_topic() -> None:
    body = {
        "sources": [
            {"name": SRC, "kind": "postgres", "dsn": "postgresql://x/y", "tables": list(TABLES)}
        ],
        "profiles": config().model_dump(exclude={"tables": {"__all__": {"topic"}}}),
    }
    body["profiles"]["facts"] = [
        {k: v for k, v in f.items() if k != "topic"} for f in body["profiles"]["facts"]
    ]
    s = Settings.model_validate(body)
    pipes = s.profiles_pipelines()
    assert [p.input for p in pipes] == [f"travel.public.{t}" for t in TABLES]
    assert all(p in s.all_pipelines() for p in pipes)
    proc = build_processor(pipes[0])
    assert isinstance(proc, ProfilesProcessor) and proc.delivery == "exactly-once"
    bad = json.loads(json.dumps(body))
    bad["profiles"]["facts"][0]["link_table"] = "travel.nope"
    with pytest.raises(ValueError, match="not a mapped table"):
        Settings.model_validate(bad)
    bad = json.loads(json.dumps(body))
    bad["profiles"]["tables"][1]["table"] = "absent"
    with pytest.raises(ValueError, match="does not capture table 'absent'"):
        Settings.model_validate(bad)
    bad = json.loads(json.dumps(body))
    bad["profiles"]["blocking"] = [["shoe_size"]]
    with pytest.raises(ValueError, match="unknown attribute"):
        Settings.model_validate(bad)


# -- the graph, fed with envelopes ------------------------------------------------------

_LSN = iter(range(1_000, 10**9, 10))


def envelope(table: str, op: str, row: dict[str, Any]) -> Record:
    lsn = next(_LSN)
    src = {
        "connector": "postgresql",
        "name": SRC,
        "schema": "public",
        "table": table,
        "lsn": lsn,
        "ts_ms": lsn,
        "snapshot": "false",
    }
    ev = {
        "op": op,
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": src,
        "ts_ms": lsn,
    }
    return Record(
        json.dumps({"id": row["id"]}).encode(), json.dumps(ev).encode(), {"position": f"0/{lsn:X}"}
    )


def feed(dsn: str, cfg: ProfilesConfig, table: str, *recs: Record) -> None:
    topic = f"travel.public.{table}"
    proc = ProfilesProcessor(cfg, topic)
    logrecs = [LogRecord(topic, 0, i, r.key, r.value, r.headers, 0) for i, r in enumerate(recs)]
    with psycopg.connect(dsn) as conn:
        proc.process(conn, logrecs)


def test_merge_alias_split_delete_and_lookups(dsn: str) -> None:
    cfg = config()
    ann = {
        "id": 1,
        "first_name": "Ann",
        "last_name": "Lee",
        "dob": "1980-01-02",
        "email": "ann@x.io",
        "phone": "07700 900123",
    }
    feed(dsn, cfg, "customers", envelope("customers", "c", ann))
    guest = {
        "id": 7,
        "given": "Anne",
        "family": "Leigh",
        "email": "other@y.io",
        "mobile": None,
        "loyalty_no": "LX-1",
    }
    feed(dsn, cfg, "guests", envelope("guests", "c", guest))
    with psycopg.connect(dsn) as conn:
        p1 = get_profile(conn, "ANN@x.io ")
        p2 = get_profile(conn, "travel:guests:7")
        assert p1 is not None and p2 is not None and p1.person_id < p2.person_id
        assert get_profile(conn, "+447700900123") == p1
        assert get_profile(conn, "nobody@x.io") is None
    # The guest gets Ann's email: one person, the older id survives, the other is an alias.
    merge = envelope("guests", "u", {**guest, "email": " Ann@X.io"})
    feed(dsn, cfg, "guests", merge)
    with psycopg.connect(dsn) as conn:
        merged = get_profile(conn, p2.person_id)
        assert merged is not None and merged.person_id == p1.person_id
        assert merged.version == p1.version + 1
        assert merged.profile["records"] == ["travel:customers:1", "travel:guests:7"]
        assert merged.profile["aliases"] == [p2.person_id]
        assert merged.profile["attributes"]["first_name"]["value"] == "Ann"  # trust 3 wins
        assert merged.as_of["travel.public.guests"] == merge.headers["position"]
        assert "travel.public.customers" in merged.as_of
        assert query(dsn, "SELECT count(*) FROM headwater_profiles.profiles") == [(1,)]
    # A booking links through the customer key, an interaction through the email.
    feed(
        dsn,
        cfg,
        "bookings",
        envelope(
            "bookings",
            "c",
            {"id": 1, "customer_id": 1, "departs_on": "2999-05-01", "amount": "120.50"},
        ),
    )
    feed(
        dsn,
        cfg,
        "interactions",
        envelope("interactions", "c", {"id": 1, "email": "ANN@x.io", "at": "2024-02-03"}),
    )
    with psycopg.connect(dsn) as conn:
        p = get_profile(conn, "LX1")
        assert p is not None and p.person_id == p1.person_id
        assert p.profile["facts"]["bookings"]["amount"] == 120.5
        assert p.profile["facts"]["bookings"]["upcoming"][0]["date"] == "2999-05-01"
        assert p.profile["facts"]["interactions"]["last"] == "2024-02-03"
    # The evidence goes away: split; the older id stays with the larger/older part.
    feed(dsn, cfg, "guests", envelope("guests", "u", {**guest, "email": "new@y.io"}))
    with psycopg.connect(dsn) as conn:
        a = get_profile(conn, "travel:customers:1")
        g = get_profile(conn, "travel:guests:7")
        assert a is not None and g is not None
        assert a.person_id == p1.person_id and g.person_id not in (p1.person_id, p2.person_id)
        assert g.profile["records"] == ["travel:guests:7"]
        assert "interactions" in a.profile["facts"] and not g.profile["facts"]
    # Delete the customer: its person is gone with its aliases; facts stay, unlinked.
    feed(dsn, cfg, "customers", envelope("customers", "d", {"id": 1}))
    with psycopg.connect(dsn) as conn:
        assert get_profile(conn, p1.person_id) is None
        assert get_profile(conn, p2.person_id) is None
        assert get_profile(conn, "ann@x.io") is None
    assert query(dsn, "SELECT count(*) FROM headwater_profiles.facts") == [(2,)]


def test_bad_envelope_is_dead_lettered(dsn: str) -> None:
    log = PostgresLog(dsn)
    topic = "travel.public.customers"
    log.create_topic(TopicSpec(topic, 1))
    log.create_topic(TopicSpec(dlq_topic("p"), 1))
    log.append(
        topic,
        [
            Record(b'{"id":1}', b"not json"),
            envelope(
                "customers",
                "c",
                {"id": 2, "first_name": "Bo", "last_name": "Ek", "email": "bo@x.io"},
            ),
        ],
    )
    stats = Worker(
        pipeline="p", topic=topic, processor=ProfilesProcessor(config(), topic), log=log, dsn=dsn
    ).run(until_idle=True)
    log.close()
    assert stats.dead_letters == 1
    assert query(dsn, "SELECT record_id FROM headwater_profiles.records") == [
        ("travel:customers:2",)
    ]


# -- end to end: real source, random interleavings, SIGKILL -----------------------------

_FIRST = ["ann", "bob", "cara", "dev", "eli", "fay", "gil", "hana", "ivo", "jan"]
_LAST = ["lee", "smith", "okafor", "novak", "garcia", "kim", "weber", "rossi", "khan"]


@pytest.fixture
def src(pg_server: EmbeddedPostgres) -> Iterator[str]:
    dsn = new_database(pg_server, "src")
    yield dsn
    _drop_slots(dsn)


class Workload:
    """Random changes to the source tables; counts the change events they produce."""

    def __init__(self, dsn: str, seed: int) -> None:
        self.dsn = dsn
        self.rng = random.Random(seed)
        self.events = 0
        self.next_id = 1000
        sql(
            dsn,
            "CREATE TABLE customers (id int PRIMARY KEY, first_name text, last_name text,"
            " dob text, email text, phone text)",
            "CREATE TABLE guests (id int PRIMARY KEY, given text, family text, email text,"
            " mobile text, loyalty_no text)",
            "CREATE TABLE members (id int PRIMARY KEY, first_name text, last_name text,"
            " dob text, loyalty_no text, email text)",
            "CREATE TABLE bookings (id int PRIMARY KEY, customer_id int, departs_on text,"
            " amount numeric)",
            "CREATE TABLE interactions (id int PRIMARY KEY, email text, at text)",
        )
        for i in range(12):
            self.person(i)

    def person(self, i: int) -> None:
        r = self.rng
        first, last = r.choice(_FIRST), r.choice(_LAST)
        dob = f"19{r.randrange(50, 99)}-0{r.randrange(1, 9)}-1{r.randrange(0, 9)}"
        email = f"{first}.{last}{i}@mail.test"
        self.exec(
            "INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s)",
            (i, first.title(), last.title(), dob, email, f"07700 9{i:05d}"),
        )
        if r.random() < 0.7:
            self.exec(
                "INSERT INTO guests VALUES (%s, %s, %s, %s, %s, %s)",
                (i, first + "e", last.upper(), f" {email.upper()}", None, f"L-{i}"),
            )
        if r.random() < 0.6:
            self.exec(
                "INSERT INTO members VALUES (%s, %s, %s, %s, %s, %s)",
                (i, first, last, dob, f"l{i}", None),
            )
        self.exec(
            "INSERT INTO bookings VALUES (%s, %s, %s, %s)",
            (i, i, "2999-01-0" + str(i % 9 + 1), i * 10),
        )

    def exec(self, stmt: str, params: Any) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            n = c.execute(stmt, params).rowcount  # type: ignore[call-overload]
        self.events += max(n, 0)

    def step(self) -> None:
        r = self.rng
        pick = r.randrange(9)
        i = r.randrange(14)
        j = r.randrange(14)
        if pick == 0:  # merge: a guest takes another person's email
            self.exec(
                "UPDATE guests SET email = (SELECT email FROM customers WHERE id = %s)"
                " WHERE id = %s",
                (j, i),
            )
        elif pick == 1:  # split: drop a guest's linking evidence
            self.exec(
                "UPDATE guests SET email = %s, loyalty_no = NULL WHERE id = %s",
                (f"x{r.randrange(99)}@else.test", i),
            )
        elif pick == 2:
            self.exec("DELETE FROM customers WHERE id = %s", (i,))
        elif pick == 3:
            self.exec("UPDATE members SET loyalty_no = %s WHERE id = %s", (f"L{j}", i))
        elif pick == 4:
            self.exec("UPDATE customers SET last_name = %s WHERE id = %s", (r.choice(_LAST), i))
        elif pick == 5:
            self.exec("DELETE FROM members WHERE id = %s", (i,))
        elif pick == 6:
            self.next_id += 1
            self.exec(
                "INSERT INTO interactions VALUES (%s, %s, %s)",
                (
                    self.next_id,
                    f"{r.choice(_FIRST)}.{r.choice(_LAST)}{i}@mail.test",
                    f"2025-0{r.randrange(1, 9)}-01",
                ),
            )
        elif pick == 7:
            self.exec(
                "UPDATE bookings SET customer_id = %s, amount = amount + 1 WHERE id = %s", (j, i)
            )
        else:
            self.person(20 + r.randrange(10_000))


def batch_recompute(src: str, dsn: str, cfg: ProfilesConfig) -> dict[frozenset[str], str]:
    """Persons and profiles from the source tables alone (commit times, which the source
    tables do not hold, are read from the graph's records for survivorship ties)."""
    ts = dict(query(dsn, "SELECT record_id, ts_ms FROM headwater_profiles.records"))
    recs: list[MatchRecord] = []
    srecs: dict[str, SourceRecord] = {}
    for t in cfg.tables:
        cols = [*t.identifiers, *t.attributes]
        with psycopg.connect(src) as c:
            rows = c.execute(f"SELECT id, {', '.join(cols)} FROM {t.table}").fetchall()  # type: ignore[call-overload]
        for row in rows:
            values = dict(zip(cols, row[1:], strict=True))
            rid = f"{t.name}:{row[0]}"
            idents = {
                (k, v)
                for col, k in t.identifiers.items()
                if (v := normalize_identifier(k, values[col], cfg.default_region)) is not None
            }
            attrs = {name: values[col] for col, name in t.attributes.items()}
            recs.append(MatchRecord.of(rid, idents, attrs))
            srecs[rid] = SourceRecord(rid, t.trust, ts.get(rid), attrs, frozenset(idents))
    assert set(srecs) == set(ts), "the graph holds exactly the source rows"
    res = resolve(cfg, recs, model=default_model(cfg))
    facts: list[tuple[Fact, str | None, tuple[str, str] | None]] = []
    for fid, cust, dep, amount in query(
        src, "SELECT id, customer_id, departs_on, amount FROM bookings"
    ):
        facts.append(
            (
                Fact(f"{SRC}:bookings:{fid}", "bookings", dep, float(amount)),
                f"{SRC}:customers:{cust}",
                None,
            )
        )
    for fid, email, at in query(src, "SELECT id, email, at FROM interactions"):
        v = normalize_identifier("email", email)
        facts.append(
            (
                Fact(f"{SRC}:interactions:{fid}", "interactions", at, None),
                None,
                ("email", v) if v else None,
            )
        )
    out = {}
    for cluster in res.clusters:
        members = [srecs[r] for r in cluster]
        idents = {i for m in members for i in m.identifiers}
        mine = [f for f, rec, ident in facts if rec in cluster or ident in idents]
        doc = build_profile("?", members, mine)
        out[cluster] = canonical(doc)
    return out


def canonical(doc: dict[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in doc.items() if k not in ("person_id", "aliases")}, sort_keys=True
    )


def graph_state(dsn: str) -> dict[frozenset[str], str]:
    out = {}
    for pid, doc in query(dsn, "SELECT person_id, profile FROM headwater_profiles.profiles"):
        assert doc["person_id"] == pid
        out[frozenset(doc["records"])] = canonical(doc)
    persons = query(
        dsn,
        "SELECT person_id, array_agg(record_id) FROM headwater_profiles.records GROUP BY person_id",
    )
    assert {frozenset(r) for _, r in persons} == set(out), "records and profiles agree"
    return out


def workers(log: PostgresLog, cfg: ProfilesConfig, batch: int) -> list[Worker]:
    out = []
    for t in (*cfg.tables, *cfg.facts):
        assert t.topic is not None
        log.create_topic(TopicSpec(t.topic, 3))  # as the source creates it
        log.create_topic(TopicSpec(dlq_topic(f"profiles-{t.topic}"), 1))
        out.append(
            Worker(
                pipeline=f"profiles-{t.topic}",
                topic=t.topic,
                processor=ProfilesProcessor(cfg, t.topic),
                log=log,
                dsn=log.dsn,
                options=WorkerOptions(batch_max_events=batch, batch_max_ms=0),
            )
        )
    return out


def test_random_interleavings_and_sigkill_equal_batch_recompute(src: str, dsn: str) -> None:
    seed = int(os.environ.get("HW_PROFILES_SEED", "7"))
    rng = random.Random(seed)
    cfg = config()
    load = Workload(src, seed)
    log = PostgresLog(dsn)
    src_log = PostgresLog(dsn)  # the source thread's own connection
    ws = workers(log, cfg, batch=rng.choice([1, 2, 5]))
    try:
        with running(PostgresSource(SRC, src, list(TABLES), src_log, batch_max_ms=5)):
            topics = [f"travel.public.{t}" for t in TABLES]
            wait_snapshot(log, SRC)  # later changes are streamed, one event each

            def all_in() -> bool:
                return sum(_count(log, t) for t in topics) >= load.events

            # Phase 1: random interleavings of topics and batch sizes.
            for _ in range(40):
                load.step()
                w = rng.choice(ws)
                w.run(max_batches=rng.randrange(1, 3), until_idle=True)
                w.stats.batches = 0
            # Phase 2: a worker process is SIGKILLed while changes keep coming.
            ctx = multiprocessing.get_context("spawn")
            from .profiles_procs import run_profiles_workers

            child = ctx.Process(target=run_profiles_workers, args=(dsn, cfg.model_dump(), topics))
            child.start()
            for _ in range(25):
                load.step()
            wait_for(lambda: query(dsn, "SELECT count(*) FROM headwater.pipeline_stats")[0][0] > 0)
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
            # Phase 3: catch up.
            for _ in range(15):
                load.step()
            wait_for(all_in)
            for w in ws:
                w.stats.batches = 0
                w.run(until_idle=True)
            assert sum(w.stats.dead_letters for w in ws) == 0
            assert graph_state(dsn) == batch_recompute(src, dsn, cfg)

            # A change in any source reaches its profile, with that change's position.
            cust = query(src, "SELECT min(id) FROM customers")[0][0]
            memb = query(src, "SELECT min(id) FROM members")[0][0]
            for table, stmt, ref in (
                (
                    "customers",
                    f"UPDATE customers SET phone = '+1 201 555 0100' WHERE id = {cust}",
                    f"travel:customers:{cust}",
                ),
                (
                    "members",
                    f"UPDATE members SET dob = '2001-01-01' WHERE id = {memb}",
                    f"travel:members:{memb}",
                ),
                (
                    "bookings",
                    f"INSERT INTO bookings VALUES (99999, {cust}, '2999-12-31', 5)",
                    f"travel:customers:{cust}",
                ),
            ):
                topic = f"travel.public.{table}"
                with psycopg.connect(dsn) as conn:
                    old = get_profile(conn, ref)
                before = _count(log, topic)
                sql(src, stmt)
                wait_for(lambda t=topic, b=before: _count(log, t) > b)  # type: ignore[misc]
                last = max(
                    (
                        r
                        for p in log.partitions(topic)
                        for r in log.read(topic, p.partition, p.start_offset, 100_000)
                    ),
                    key=lambda r: int(json.loads(r.value or b"{}")["source"]["lsn"]),
                )
                for w in ws:
                    w.run(until_idle=True)
                with psycopg.connect(dsn) as conn:
                    new = get_profile(conn, ref)
                assert old is not None and new is not None
                assert new.as_of[topic] == last.headers["position"] != old.as_of.get(topic)
                assert new.person_id != old.person_id or new.version > old.version
            assert get_profile(psycopg.connect(dsn), "+12015550100") is not None
            assert graph_state(dsn) == batch_recompute(src, dsn, cfg)
    finally:
        log.close()
        src_log.close()


def test_http_and_cli_lookups(dsn: str, tmp_path: Any) -> None:
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from headwater.engine.runtime import Runtime
    from headwater.serving.app import create_app

    cfg = config()
    row = {
        "id": 5,
        "first_name": "Ola",
        "last_name": "Berg",
        "dob": "1990-09-09",
        "email": "ola@berg.no",
        "phone": "+47 912 34 567",
    }
    feed(dsn, cfg, "customers", envelope("customers", "c", row))
    settings = Settings.model_validate({"storage": {"postgres": dsn}})
    log = PostgresLog(dsn)
    client = TestClient(create_app(Runtime(settings, dsn, log)))
    by_ident = client.get("/v1/profiles", params={"identifier": "OLA@berg.no"})
    assert by_ident.status_code == 200
    body = by_ident.json()
    assert body["profile"]["records"] == ["travel:customers:5"]
    assert body["as_of"]["travel.public.customers"].startswith("0/")
    assert client.get(f"/v1/profiles/{body['person_id']}").json() == body
    assert client.get("/v1/profiles/p999999").status_code == 404
    assert client.get("/v1/profiles", params={"identifier": ""}).status_code == 422
    log.close()
    path = tmp_path / "headwater.toml"
    path.write_text(f'[storage]\npostgres = "{dsn}"\n')
    cli = [sys.executable, "-m", "headwater", "profiles", "get", "-c", str(path)]
    ok = subprocess.run([*cli, "+4791234567", "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["person_id"] == body["person_id"]
    table = subprocess.run([*cli, body["person_id"]], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "Berg" in table.stdout
    missing = subprocess.run([*cli, "nobody@x.io"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no profile" in missing.stderr


def test_train_estimates_and_rescores_keeping_persons(dsn: str) -> None:
    from headwater.profiles.processor import load_model
    from headwater.profiles.train import train

    cfg = config()
    rows = [
        {
            "id": i,
            "first_name": f,
            "last_name": last,
            "dob": f"19{60 + i % 30}-01-0{i % 9 + 1}",
            "email": f"c{i}@x.io",
        }
        for i, (f, last) in enumerate(
            (f, last) for f in ("ann", "bob", "cy", "di") for last in ("lee", "kim", "ng", "wu")
        )
    ]
    feed(dsn, cfg, "customers", *(envelope("customers", "c", r) for r in rows))
    feed(
        dsn,
        cfg,
        "members",
        *(envelope("members", "c", {**r, "first_name": r["first_name"] + "e"}) for r in rows[:8]),
    )
    before = graph_partition(dsn)
    with psycopg.connect(dsn) as conn:
        model, persons = train(conn, cfg)
        assert load_model(conn, cfg) == model != default_model(cfg)
    assert persons == len(before) == 16
    assert graph_partition(dsn) == before  # same persons, same ids


def graph_partition(dsn: str) -> set[tuple[str, frozenset[str]]]:
    rows = query(
        dsn,
        "SELECT person_id, array_agg(record_id) FROM headwater_profiles.records GROUP BY person_id",
    )
    return {(p, frozenset(r)) for p, r in rows}
