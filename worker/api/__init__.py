"""The read API (FastAPI): Mida-compatible results over HTTP, reading Redis only.

``app.py`` wires one subpackage per family (``mida``, ``kameleoon``, ``vendors``, ``ui``)
over the shared modules beside it; ``caching`` holds every in-process cache.
"""
