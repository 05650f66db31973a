"""Settings shared by the unit and integration tests."""

from __future__ import annotations

import os

from hypothesis import settings

# Under CI the property tests draw the same examples every run: a failure there is
# reproduced by the next run, and a pass does not depend on the draw. Elsewhere they
# draw afresh each run, which is where new examples are explored.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
