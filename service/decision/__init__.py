"""The decision: the policy, the scoring path that applies it, and the spool of unsent records."""
