"""Redis: the layout of keys, the atomic batch sink, and readers of the counters."""
