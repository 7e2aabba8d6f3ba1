-- Reviews and the webhook outbox (service/reviews). Owned by the reviews module; the
-- archive owns the odd-numbered migrations, this one only adds beside them.
--
-- A review is opened by the database itself: an AFTER INSERT trigger on the archive's
-- ``decisions`` table opens one for every archived decision whose verdict is ``review``,
-- so the archiver need not know reviews exist, and a decision archived twice (its insert
-- skipped by ON CONFLICT) opens nothing twice. Reviews are few (about 1 % of payments) and
-- live past the decisions' retention, so the table is not partitioned.

CREATE TABLE reviews (
    merchant_id      text        NOT NULL,
    transaction_id   text        NOT NULL,
    vertical         text        NOT NULL,
    score            integer,
    decided_at       timestamptz NOT NULL,  -- the decision's time: the queue's order
    opened_at        timestamptz NOT NULL DEFAULT now(),
    status           text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    claimed_by       text,
    claim_expires_at timestamptz,
    outcome          text        CHECK (outcome IN ('approve', 'decline')),
    label            text        CHECK (label IN ('fraud', 'legit')),
    note             text,
    feedback         text,        -- what the label did: recorded, duplicate, unknown
    closed_at        timestamptz,
    closed_by        text,
    PRIMARY KEY (merchant_id, transaction_id),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL AND outcome IS NOT NULL))
);

-- the queue, oldest first, per status: keyset pages walk this index
CREATE INDEX reviews_queue ON reviews (status, decided_at, merchant_id, transaction_id);
CREATE INDEX reviews_merchant_queue
    ON reviews (merchant_id, status, decided_at, transaction_id);

-- The durable outbox of webhook events: a row is written in the transaction that closes
-- the review, and deleted (or marked delivered) only once the receiver answered 2xx.
CREATE TABLE webhook_outbox (
    id              bigserial   PRIMARY KEY,  -- the order of events, per payment
    delivery_id     uuid        NOT NULL UNIQUE,  -- X-Riskscore-Delivery: the same on every retry
    event_type      text        NOT NULL,
    merchant_id     text        NOT NULL,
    transaction_id  text        NOT NULL,
    body            bytea       NOT NULL,     -- the exact bytes sent (and signed)
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    delivered_at    timestamptz,
    last_status     integer,
    last_error      text
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX webhook_outbox_payment
    ON webhook_outbox (merchant_id, transaction_id, id) WHERE delivered_at IS NULL;

-- Open a review for each archived decision of ``review``. ON CONFLICT: a decision archived
-- again (a retry's record, a re-run archiver) opens nothing twice.
CREATE FUNCTION open_review() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reviews (merchant_id, transaction_id, vertical, score, decided_at)
    VALUES (NEW.merchant_id, NEW.transaction_id, NEW.vertical, NEW.score, NEW.decided_at)
    ON CONFLICT (merchant_id, transaction_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER decisions_open_review AFTER INSERT ON decisions
    FOR EACH ROW WHEN (NEW.decision = 'review') EXECUTE FUNCTION open_review();

-- A database archived decisions before this migration: their reviews open now (still
-- oldest first, by their decision's time).
INSERT INTO reviews (merchant_id, transaction_id, vertical, score, decided_at)
SELECT merchant_id, transaction_id, vertical, score, decided_at FROM decisions
WHERE decision = 'review'
ON CONFLICT (merchant_id, transaction_id) DO NOTHING;
