"""The analysts' rules: a safe condition language and the rule files that use it.

- ``language``: ``Expression``, the grammar and missing-value semantics, over
  ``syntax`` (the whitelist checker), ``scalar`` (one request) and ``vectorised`` (a frame).
- ``rulebook``: rule directories: ``load_ruleset``, ``check_directory``, ``RulebookHolder``
  (hot reload); the file format. Over ``packfile`` (YAML to rules, every problem with
  file, line and rule id) and ``ruleset`` (``RuleSet.evaluate`` / ``evaluate_frame``).
"""
