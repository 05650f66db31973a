"""From counters to per-variant numbers (and, later, statistics and decisions)."""
