-- Unified customer profiles: the identity graph and the profiles built from it.
-- Written only by the profiles processor, in its batches' transactions.
CREATE SCHEMA IF NOT EXISTS headwater_profiles;

-- Nodes: one per mapped source row (record_id = '<source>:<table>:<key>').
CREATE TABLE headwater_profiles.records (
    record_id text PRIMARY KEY,
    tbl text NOT NULL,
    topic text NOT NULL,
    trust int NOT NULL,
    attributes jsonb NOT NULL,
    match jsonb NOT NULL,  -- the attributes normalized for matching
    position text,
    position_key numeric,
    ts_ms bigint,
    person_id text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON headwater_profiles.records (person_id);

-- Normalized identifiers of each record; records sharing one are the same person.
CREATE TABLE headwater_profiles.identifiers (
    kind text NOT NULL,
    value text NOT NULL,
    record_id text NOT NULL,
    PRIMARY KEY (kind, value, record_id)
);
CREATE INDEX ON headwater_profiles.identifiers (record_id);
CREATE INDEX ON headwater_profiles.identifiers (value);

-- Blocking keys: only records sharing one are compared.
CREATE TABLE headwater_profiles.blocks (
    key text NOT NULL,
    record_id text NOT NULL,
    PRIMARY KEY (key, record_id)
);
CREATE INDEX ON headwater_profiles.blocks (record_id);

-- Probabilistic edges (a < b) with their match probability and per-attribute levels.
CREATE TABLE headwater_profiles.links (
    a text NOT NULL,
    b text NOT NULL,
    score double precision NOT NULL,
    evidence jsonb NOT NULL,
    PRIMARY KEY (a, b),
    CHECK (a < b)
);
CREATE INDEX ON headwater_profiles.links (b);

-- Facts about a person (bookings, payments, interactions).
CREATE TABLE headwater_profiles.facts (
    fact_id text PRIMARY KEY,
    name text NOT NULL,
    topic text NOT NULL,
    link_record text,
    link_kind text,
    link_value text,
    fact_date text,
    amount numeric,
    position text,
    position_key numeric
);
CREATE INDEX ON headwater_profiles.facts (link_record);
CREATE INDEX ON headwater_profiles.facts (link_kind, link_value);

CREATE SEQUENCE headwater_profiles.person_seq;
CREATE TABLE headwater_profiles.persons (
    person_id text PRIMARY KEY,
    seq bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A merged-away person id and the person it now belongs to.
CREATE TABLE headwater_profiles.aliases (
    alias text PRIMARY KEY,
    person_id text NOT NULL,
    merged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON headwater_profiles.aliases (person_id);

CREATE TABLE headwater_profiles.profiles (
    person_id text PRIMARY KEY,
    version bigint NOT NULL,
    profile jsonb NOT NULL,
    as_of jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Fellegi-Sunter parameters the graph scores with (one row).
CREATE TABLE headwater_profiles.model (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    params jsonb NOT NULL,
    trained_at timestamptz NOT NULL DEFAULT now()
);
