"""Which paths carry the results pages' security headers."""

from __future__ import annotations

from worker.api.ui.headers import SECURITY_HEADERS, headers_for


def test_security_headers_belong_to_ui_paths_alone() -> None:
    assert headers_for("/ui/experiments/x") == SECURITY_HEADERS
    assert headers_for("/ui") == SECURITY_HEADERS
    assert headers_for("/uix") == {}
    assert headers_for("/api/v2/tests") == {}
