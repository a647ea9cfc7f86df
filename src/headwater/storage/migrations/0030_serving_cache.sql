-- Serving: the semantic cache of answers, and what each answer used, so that a change
-- to any of it deletes the answer in the same transaction as the change.
CREATE SCHEMA IF NOT EXISTS headwater_serving;
CREATE EXTENSION IF NOT EXISTS vector;

-- scope: '' for an answer that used no profile, else the person_id whose profile it
-- used (served to that person only). params: generator, k and embedder: an answer made
-- under other settings is another answer.
CREATE TABLE headwater_serving.cache_entries (
    entry_id        bigserial PRIMARY KEY,
    tenant          text NOT NULL,
    scope           text NOT NULL,
    params          text NOT NULL,
    question        text NOT NULL,
    embedding       vector(384) NOT NULL,
    response        jsonb NOT NULL,
    person_id       text,
    profile_version bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    hits            bigint NOT NULL DEFAULT 0,
    last_hit_at     timestamptz
);
CREATE INDEX cache_entries_scope ON headwater_serving.cache_entries (tenant, scope, params);
-- The same question again is found without embedding it.
CREATE INDEX cache_entries_exact
    ON headwater_serving.cache_entries (tenant, scope, params, md5(question));
CREATE INDEX cache_entries_embedding
    ON headwater_serving.cache_entries USING hnsw (embedding vector_cosine_ops);
CREATE INDEX cache_entries_expires ON headwater_serving.cache_entries (expires_at);
CREATE INDEX cache_entries_person
    ON headwater_serving.cache_entries (person_id) WHERE person_id IS NOT NULL;

-- The chunks (and their documents) an answer cited or was given.
CREATE TABLE headwater_serving.cache_uses (
    entry_id      bigint NOT NULL
                  REFERENCES headwater_serving.cache_entries ON DELETE CASCADE,
    chunk_id      text NOT NULL,
    chunk_version bigint NOT NULL,
    doc_id        text NOT NULL,
    doc_version   bigint NOT NULL,
    PRIMARY KEY (entry_id, chunk_id)
);
CREATE INDEX cache_uses_doc ON headwater_serving.cache_uses (doc_id);

-- Every answer's id (its record is on the conversations topic), so feedback can be
-- checked to name an answer of the caller's tenant.
CREATE TABLE headwater_serving.conversations (
    conversation_id uuid PRIMARY KEY,
    tenant          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Invalidation. Statement-level triggers with transition tables: one DELETE per
-- statement of the pipeline, however many rows it changed. Any insert, update or
-- delete of a chunk invalidates every answer that used a chunk of the same document
-- (a new chunk of that document may now hold the answer).
CREATE FUNCTION headwater_serving.forget_docs_old() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM headwater_serving.cache_entries e
     USING headwater_serving.cache_uses u
     WHERE u.entry_id = e.entry_id
       AND u.doc_id IN (SELECT DISTINCT doc_id FROM old_rows);
    RETURN NULL;
END $$;

CREATE FUNCTION headwater_serving.forget_docs_new() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM headwater_serving.cache_entries e
     USING headwater_serving.cache_uses u
     WHERE u.entry_id = e.entry_id
       AND u.doc_id IN (SELECT DISTINCT doc_id FROM new_rows);
    RETURN NULL;
END $$;

CREATE FUNCTION headwater_serving.forget_all_docs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM headwater_serving.cache_entries e
     WHERE EXISTS (SELECT 1 FROM headwater_serving.cache_uses u WHERE u.entry_id = e.entry_id);
    RETURN NULL;
END $$;

CREATE FUNCTION headwater_serving.forget_people_old() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM headwater_serving.cache_entries e
     WHERE e.person_id IN (SELECT DISTINCT person_id FROM old_rows);
    RETURN NULL;
END $$;

CREATE FUNCTION headwater_serving.forget_people_new() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM headwater_serving.cache_entries e
     WHERE e.person_id IN (SELECT DISTINCT person_id FROM new_rows);
    RETURN NULL;
END $$;

CREATE FUNCTION headwater_serving.forget_all_people() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM headwater_serving.cache_entries WHERE person_id IS NOT NULL;
    RETURN NULL;
END $$;

-- Attach the triggers to the knowledge base and profile tables that exist (idempotent;
-- the API calls it again at start-up, for tables created after this migration).
CREATE FUNCTION headwater_serving.attach_invalidation() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    attached integer := 0;
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('headwater_kb.chunks', 'hw_cache_chunks_upd', 'UPDATE', 'OLD', 'forget_docs_old'),
        ('headwater_kb.chunks', 'hw_cache_chunks_del', 'DELETE', 'OLD', 'forget_docs_old'),
        ('headwater_kb.chunks', 'hw_cache_chunks_ins', 'INSERT', 'NEW', 'forget_docs_new'),
        ('headwater_kb.chunks', 'hw_cache_chunks_trunc', 'TRUNCATE', NULL, 'forget_all_docs'),
        ('headwater_profiles.profiles', 'hw_cache_profiles_upd', 'UPDATE', 'OLD',
         'forget_people_old'),
        ('headwater_profiles.profiles', 'hw_cache_profiles_del', 'DELETE', 'OLD',
         'forget_people_old'),
        ('headwater_profiles.profiles', 'hw_cache_profiles_ins', 'INSERT', 'NEW',
         'forget_people_new'),
        ('headwater_profiles.profiles', 'hw_cache_profiles_trunc', 'TRUNCATE', NULL,
         'forget_all_people')
    ) AS v(tbl, name, event, rows, fn)
    LOOP
        IF to_regclass(t.tbl) IS NULL THEN
            CONTINUE;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = to_regclass(t.tbl) AND tgname = t.name) THEN
            CONTINUE;
        END IF;
        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT'
            ' EXECUTE FUNCTION headwater_serving.%I()',
            t.name, t.event, t.tbl,
            CASE WHEN t.rows IS NULL THEN ''
                 ELSE format('REFERENCING %s TABLE AS %s', t.rows,
                             lower(t.rows) || '_rows') END,
            t.fn);
        attached := attached + 1;
    END LOOP;
    RETURN attached;
END $$;

SELECT headwater_serving.attach_invalidation();
