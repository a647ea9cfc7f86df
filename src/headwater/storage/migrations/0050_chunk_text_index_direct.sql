-- Full-text index entries go straight into the GIN tree. With GIN's default
-- fastupdate, new entries wait in a pending list that every search scans linearly
-- until VACUUM merges it: after a bulk ingestion of 2,100 chunks (235 pending pages)
-- each search took ~3 ms more, and the planner, costing the list, fell back to a
-- sequential scan that detoasts every chunk's tsvector. Inserting directly costs the
-- writer instead, once per chunk, which the model's embedding time dwarfs.
ALTER INDEX headwater_kb.chunks_tsv SET (fastupdate = off);
SELECT gin_clean_pending_list('headwater_kb.chunks_tsv'::regclass);
