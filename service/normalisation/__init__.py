"""From a validated request or log rows to a normalised, pseudonymised ``Payment``."""
