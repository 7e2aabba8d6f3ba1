-- 0011: new decisions keep their record and response as text; decided_at indexed by BRIN.
--
-- Every query reads the record and the response back whole, as text, and never inside
-- them; the archiver writes what it decoded (the record) or what the service sent (the
-- response). json's check of that text on the way in was a tenth of PostgreSQL's CPU per
-- archived row. Converting the columns in place would rewrite every partition under an
-- exclusive lock, so the json columns stay, renamed, holding the rows archived before;
-- new rows go to text columns of the old names. A row has one or the other: readers take
-- coalesce(record, record_json::text) (service.archive.repository.RECORD, RESPONSE).
--
-- decided_at grows with the stream (a row's time is its entry's), so a BRIN index answers
-- the range scans (export by time, retention's deletes of keys) for a fraction of a
-- B-tree's cost per insert. Both indexes are rebuilt here; BRIN builds in one scan.
ALTER TABLE decisions RENAME COLUMN record TO record_json;
ALTER TABLE decisions RENAME COLUMN response TO response_json;
ALTER TABLE decisions ALTER COLUMN record_json DROP NOT NULL;
DO $$
BEGIN
    ALTER TABLE decisions ADD COLUMN record text COMPRESSION lz4,
                          ADD COLUMN response text COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not supported by this server: records are compressed with pglz';
    ALTER TABLE decisions ADD COLUMN record text, ADD COLUMN response text;
END
$$;
-- NOT VALID: the rows archived before are not scanned (they all have record_json); every
-- partition made from now on checks it in full.
ALTER TABLE decisions ADD CONSTRAINT decisions_record_kept
    CHECK (record IS NOT NULL OR record_json IS NOT NULL) NOT VALID;

DROP INDEX decisions_decided_at;
CREATE INDEX decisions_decided_at ON decisions USING brin (decided_at);
DROP INDEX decision_keys_decided_at;
CREATE INDEX decision_keys_decided_at ON decision_keys USING brin (decided_at);
