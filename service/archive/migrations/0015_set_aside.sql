-- 0015: stream entries the archiver could not archive, set aside instead of blocking it.
--
-- An entry that does not convert to a row, or whose row PostgreSQL refuses, is kept here
-- verbatim and acknowledged in the transaction that archives the rest of its batch, so
-- one bad entry never stops the archive nor keeps the streams from being trimmed.
-- fields: the entry's field names and values in stream order, alternating (as XADD takes
-- them), as bytes: whatever they hold (invalid UTF-8, NUL) is kept. error: why it failed;
-- first_seen: when it was first set aside (a retry that fails again keeps it).
CREATE TABLE set_aside (
    stream text NOT NULL,
    stream_id text NOT NULL,
    fields bytea[] NOT NULL,
    error text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, stream_id)
);
