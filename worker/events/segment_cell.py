"""The segment cell (DESIGN.md section 4): a visitor's six enumerated dimensions at entry.

Every visitor is in exactly one cell, and counters are kept per cell under its text.
The field order here is the order of that text everywhere: the ingestion writes it,
the counter reader and the visitor scan read it back, queries filter on its fields.
"""

from __future__ import annotations

from typing import NamedTuple

SEPARATOR = "|"


class SegmentCell(NamedTuple):
    """One segment cell; :attr:`text` is how it is stored."""

    device: str
    browser: str
    os: str
    country: str
    visitor_type: str
    source: str

    @classmethod
    def parse(cls, text: str) -> SegmentCell:
        """The cell a stored text names."""
        return cls(*text.split(SEPARATOR))

    @property
    def text(self) -> str:
        """The stored form: the fields in order, joined by ``|``."""
        return SEPARATOR.join(self)
