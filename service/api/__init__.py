"""The HTTP layer: validation, routes, API keys, admission; it translates and decides nothing."""
