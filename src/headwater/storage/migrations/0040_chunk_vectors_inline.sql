-- Keep chunk vectors in the row. pgvector's type defaults to EXTERNAL storage, and a
-- chunk row (text + tsvector + 1.5 kB vector) passes the 2 kB TOAST threshold, so
-- the vector went out of line: an exact scan then read three TOAST pages per chunk
-- (search SQL 9.6 ms over 2,100 chunks; inline: under 1 ms). PLAIN moves the text
-- and tsvector out of line instead. Rows written before this migration keep their
-- layout until rewritten (VACUUM FULL headwater_kb.chunks).
ALTER TABLE headwater_kb.chunks ALTER COLUMN embedding SET STORAGE PLAIN;
