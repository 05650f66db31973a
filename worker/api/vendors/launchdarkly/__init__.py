"""LaunchDarkly's experiments (REST API v2): get, create, create iteration, and the
``startIteration`` / ``stopIteration`` semantic patch; ``routing`` gives their errors
LaunchDarkly's shape."""

from worker.api.vendors.launchdarkly import reads, writes
from worker.api.vendors.launchdarkly.routing import router

__all__ = ["reads", "router", "writes"]
