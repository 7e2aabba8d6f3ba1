-- 0003: the decision record and the response as sent are kept as json, not jsonb.
--
-- Nothing queries inside them (they are read back whole, as text), and jsonb parses every
-- number of a record's few hundred feature values into a numeric on the way in, and
-- prints them back on the way out: most of the archiver's cost in PostgreSQL. json checks
-- that the text is JSON and keeps it as sent, byte for byte.
ALTER TABLE decisions
    ALTER COLUMN record TYPE json USING record::json,
    ALTER COLUMN response TYPE json USING response::json;
