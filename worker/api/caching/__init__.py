"""Every in-process cache of the read API, and how each stays correct.

* ``api_keys.KeyCache``: the project of each API key found, for
  ``AB_API_KEY_CACHE_SECONDS`` (a revoked key keeps working at most that long).
* ``definitions.parsed_definition``: definition models per distinct stored text; the
  text itself is read from Redis on every request.
* ``results.ResultSource``: parsed snapshots per distinct stored bytes, and computed
  results for ``CACHE_SECONDS``, then served stale for up to ``STALE_SECONDS`` while
  one recomputation runs.
* ``responses.ResponseCache``: the bytes of rendered Mida results, served again while
  one Redis round trip shows the stored state they were made from unchanged.
* ``shared_reads.SharedReads``: concurrent reads of the same state share one round
  trip, always one that started after they arrived.

``middleware.CachedResultsMiddleware`` answers from ``ResponseCache`` in front of
FastAPI, on the route of Mida's result in the route table (``app.ROUTERS``).
"""
