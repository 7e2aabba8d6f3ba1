"""riskscore's online service: the scoring API and the decision core behind it."""
