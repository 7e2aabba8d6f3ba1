-- Who acts on a review is the API key that authenticated, not the name a body gives
-- (service/reviews). ``claimed_key`` is the identity the claim lock compares (``key-`` and
-- 12 hex digits of an HMAC of the key under RISKSCORE_SECRET, never the key), ``closed_key``
-- the identity that closed it. ``claimed_by`` and ``closed_by`` stay what people read.
--
-- A claim made before this migration was recorded under a name only: its name becomes its
-- key, so it still holds until it expires (no key's identity equals such a name, so only its
-- expiry or an admin key frees it). A review closed before it has no known key.

ALTER TABLE reviews ADD COLUMN claimed_key text, ADD COLUMN closed_key text;

UPDATE reviews SET claimed_key = claimed_by WHERE claimed_by IS NOT NULL;
