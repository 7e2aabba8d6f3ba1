"""Redis: velocity state, lists, decisions and their log, the hot path's connection."""
