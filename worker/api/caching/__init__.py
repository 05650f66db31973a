"""The read API's in-process caches."""
