-- 0009: the payload's digest beside the response as sent.
--
-- A retry is answered from the transaction's key: the payload's digest (the same payload is
-- replayed, another one is a 409) and the response as sent. The archiver reads both from the
-- key, so that a key put back after the replay window (a label for a payment Redis no longer
-- holds) answers a retry as the original did. The digest is the keyed HMAC the key holds
-- (service.normalisation.normalise.payment_digest), never the payload. Rows archived before,
-- or after their key expired, have none (NULL): a retry of those, once put back, is a 409.
ALTER TABLE decisions ADD COLUMN digest text;
