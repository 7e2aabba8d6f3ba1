"""The traffic simulator's parts: markets, populations, rhythms, legitimate traffic, fraud.

``training.simulate`` is the entry point; these modules are its building blocks. Every
generator takes a numpy ``Generator`` and works on whole arrays (one vectorised block per
population or pattern), so a million rows take seconds, and the same seed gives the same log.
"""
