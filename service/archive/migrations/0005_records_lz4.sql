-- 0005: the decision record and the response compressed with lz4 rather than pglz.
--
-- A record (some 2.3 KB of JSON, most of it feature values) is over the TOAST threshold, so
-- PostgreSQL tries to compress each one on insert: pglz mostly gives up on them after
-- spending the CPU (rows stay ~3.7 KB), lz4 is faster and keeps them (~3.0 KB a row,
-- indexes included). Rows stored already keep theirs; new rows, in every partition, are
-- lz4. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE decisions
        ALTER COLUMN record SET COMPRESSION lz4,
        ALTER COLUMN response SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not supported by this server: records stay compressed with pglz';
END
$$;
