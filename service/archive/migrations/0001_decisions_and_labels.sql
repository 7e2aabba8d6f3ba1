-- 0001: the decision archive: decisions and labels, partitioned by UTC day.
--
-- Idempotency on (merchant_id, transaction_id): a unique constraint on a partitioned table
-- must include the partition key (decided_at), which would let the same pair land twice on
-- two days. So the pair's one row lives in decision_keys (not partitioned, narrow): an
-- insert into decisions goes through it (INSERT ... ON CONFLICT DO NOTHING RETURNING), and a
-- lookup by the pair reads its decided_at there first, then one partition of decisions.
-- Retention deletes the keys of the partitions it drops.
--
-- Partitions (decisions_pYYYYMMDD, labels_pYYYYMMDD) are made and dropped by
-- service.archive.schema, not here: they depend on the date.

CREATE TABLE decision_keys (
    merchant_id text NOT NULL,
    transaction_id text NOT NULL,
    decided_at timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, transaction_id)
);
CREATE INDEX decision_keys_decided_at ON decision_keys (decided_at);

CREATE TABLE decisions (
    merchant_id text NOT NULL,
    transaction_id text NOT NULL,
    -- when the decision entered the decision log (the stream entry's time), UTC
    decided_at timestamptz NOT NULL,
    stream_id text NOT NULL,
    event_time timestamptz NOT NULL,
    decision text NOT NULL,
    score smallint NOT NULL,
    model_probability double precision,
    vertical text NOT NULL,
    amount numeric NOT NULL,
    currency text NOT NULL,
    amount_usd numeric NOT NULL,
    model_version text,
    ruleset_version text,
    catalog_version text,
    reasons text[] NOT NULL,
    degraded text[] NOT NULL,
    latency_ms real,
    -- the entities, as the record holds them (pseudonyms for email, account and IP)
    customer_key text NOT NULL,
    card_fingerprint text,
    device_id text,
    device_ip text,
    -- the decision record (service.decision.record) and the response as sent, when known
    record jsonb NOT NULL,
    response jsonb,
    PRIMARY KEY (merchant_id, transaction_id, decided_at)
) PARTITION BY RANGE (decided_at);
CREATE INDEX decisions_decided_at ON decisions (decided_at);
CREATE INDEX decisions_queue ON decisions (decision, decided_at);
CREATE INDEX decisions_merchant ON decisions (merchant_id, decided_at);
CREATE INDEX decisions_customer ON decisions (customer_key, decided_at);
CREATE INDEX decisions_card ON decisions (card_fingerprint, decided_at)
    WHERE card_fingerprint IS NOT NULL;
CREATE INDEX decisions_device ON decisions (device_id, decided_at)
    WHERE device_id IS NOT NULL;

-- Every label received (the labels stream), duplicates and withdrawals included: one row
-- per stream entry, whose time is received_at, so (stream_id, received_at) is unique.
CREATE TABLE labels (
    stream_id text NOT NULL,
    received_at timestamptz NOT NULL,
    merchant_id text NOT NULL,  -- '' for labels logged before the stream kept it
    transaction_id text NOT NULL,
    label text NOT NULL,
    reported_at timestamptz NOT NULL,
    event_time timestamptz,
    reason text,
    PRIMARY KEY (stream_id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX labels_transaction ON labels (merchant_id, transaction_id);

-- The feature names of each catalogue version (the records' features are bare arrays in
-- that order; service.stores.decisions keeps the same table in Redis).
CREATE TABLE catalogs (
    version text PRIMARY KEY,
    names jsonb NOT NULL
);
