-- 0013: decisions.decided_at indexed by a B-tree again (0011 made it BRIN).
--
-- The export (training.export, ORDER BY decided_at, stream_id over a time window) reads the
-- B-tree's order: an ordered scan of each day's partition and a sort of only the rows of the
-- same instant, its first rows at once and its memory bounded. With BRIN the whole window is
-- sorted before the first row (EXPLAIN on a populated archive). BRIN saved about 2 µs of
-- PostgreSQL's CPU per archived row, within the noise of the A/B that measured 0011
-- (benchmarks/README.md): not worth that. decision_keys keeps its BRIN index: only
-- retention's delete of old keys reads it, by range.
DROP INDEX decisions_decided_at;
CREATE INDEX decisions_decided_at ON decisions (decided_at);
