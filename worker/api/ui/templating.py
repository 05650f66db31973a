"""The Jinja2 environment of the results pages and their charts.

Templates are package data (``templates/``), so an installed package finds them;
autoescaping is on for every template, HTML and SVG alike, so every text a view holds
is escaped; a name missing from a view is an error, never an empty string.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

TEMPLATES = Environment(
    loader=PackageLoader("worker.api.ui", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_template(template: str, view: dict[str, Any]) -> str:
    """``template`` rendered with ``view`` (plain data; strings are escaped)."""
    return TEMPLATES.get_template(template).render(view)
