"""Redis, and only here: every client, the key layout, the Lua scripts and their callers,
and the readers and writers the other layers call."""
