"""The knowledge base: documents (files, captured rows) parsed, chunked in the
embedding model's tokens, embedded (cached) and indexed in PostgreSQL for hybrid
search. Heavy parts (the model, parsers) are imported where used."""
