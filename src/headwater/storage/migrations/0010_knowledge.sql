-- Knowledge base: documents, their chunks with embeddings and full text, the embedding
-- cache, and the manifest of file sources. Column names of documents/chunks are a
-- contract with serving (contracts.md).
CREATE SCHEMA IF NOT EXISTS headwater_kb;
CREATE EXTENSION IF NOT EXISTS vector;

-- One row per indexed document (a file, or a captured row). version: the source's
-- version of it (file version, or the CDC position's order); position: the source
-- position it was indexed at.
CREATE TABLE headwater_kb.documents (
    doc_id       text PRIMARY KEY,
    source       text NOT NULL,
    uri          text NOT NULL,
    title        text,
    version      bigint NOT NULL,
    content_hash text NOT NULL,
    position     text,
    metadata     jsonb NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX documents_source ON headwater_kb.documents (source);

-- chunk_id is content-derived (document, headings, text, occurrence), so an unchanged
-- chunk keeps its id, row and embedding across versions of its document.
-- text_hash keys the embedding cache: sha256 of exactly what was embedded.
CREATE TABLE headwater_kb.chunks (
    chunk_id   text PRIMARY KEY,
    doc_id     text NOT NULL,
    version    bigint NOT NULL,
    ordinal    int NOT NULL,
    text       text NOT NULL,
    headings   text[] NOT NULL DEFAULT '{}',
    metadata   jsonb NOT NULL DEFAULT '{}',
    embedding  vector(384),
    tsv        tsvector,
    text_hash  text NOT NULL,
    model      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chunks_doc ON headwater_kb.chunks (doc_id);
CREATE INDEX chunks_embedding ON headwater_kb.chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunks_tsv ON headwater_kb.chunks USING gin (tsv);

-- Every vector a model computed, keyed by (model, sha256 of the embedded text): a
-- re-ingested or replayed chunk is never embedded twice.
CREATE TABLE headwater_kb.embedding_cache (
    model      text NOT NULL,
    text_hash  text NOT NULL,
    embedding  vector NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, text_hash)
);

-- What a file source has published: per path, the content hash and the version whose
-- event is durable in the log. Written in the append's transaction (postgres log),
-- so a restarted source emits exactly the changes made while it was stopped.
CREATE TABLE headwater_kb.file_manifest (
    source       text NOT NULL,
    path         text NOT NULL,
    content_hash text NOT NULL,
    size         bigint NOT NULL,
    mtime_ns     bigint NOT NULL,
    version      bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, path)
);
