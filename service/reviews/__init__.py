"""Reviews: decisions of ``review`` waiting for an analyst, and the ``review.closed`` webhook.

- ``service.reviews.queue``: the queue in PostgreSQL: list (oldest first, keyset pages),
  get, claim (one analyst at a time, claims expire), release and close; closing with a
  label is feedback through the same function as ``POST /v1/feedback``.
- ``service.reviews.webhook``: the outbox written in the closing transaction, its signed
  delivery with retries (exponential backoff, full jitter, in order per payment) and the
  signature's check for receivers.

A review is opened by PostgreSQL itself: migration ``0002_reviews.sql`` puts an AFTER INSERT
trigger on the archive's ``decisions`` table that opens one for each archived decision of
``review``, so the archiver needs no code of ours and a decision archived twice opens one
review. Nothing here knows HTTP; ``service.api.reviews`` translates.
"""
