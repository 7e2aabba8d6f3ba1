-- 0007: drop the two indexes of decisions that no query reads.
--
-- decisions_queue (decision, decided_at): the review queue reads the reviews table and its
-- own indexes; the one query by decision is 0002's backfill, run once at that migration.
-- decisions_merchant (merchant_id, decided_at): a lookup goes by the primary key through
-- decision_keys, an entity's history by its entity index (a key's merchants only filter
-- it), an export by decided_at. Checked by grepping every query in service/ and training/
-- and by EXPLAIN of each on a populated archive: neither index appeared in any plan.
-- Each costs every insert an index entry (benchmarks/README.md, the archiver). Dropping
-- the partitioned index drops it on every partition.
DROP INDEX IF EXISTS decisions_queue;
DROP INDEX IF EXISTS decisions_merchant;
