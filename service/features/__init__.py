"""The features: the catalogue, request features, and the offline (vectorised) executor."""
