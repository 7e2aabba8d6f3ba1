"""The analysts' rules: a safe condition language and the rule files that use it.

- ``language``: ``Expression``, the grammar and missing-value semantics, over
  ``syntax`` (the whitelist checker), ``scalar`` (one request) and ``vectorised`` (a frame).
- ``rulebook``: rule files (``packs/*.yaml``), ``RuleSet``, ``load_ruleset``,
  ``check_directory`` and ``RulebookHolder`` (hot reload).
"""
