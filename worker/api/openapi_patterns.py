"""Regular expressions that state in the OpenAPI document what a parser accepts, so
that the document is exact for generated clients and for schemathesis: the words of a
case-insensitive parser, and lists of them."""

from __future__ import annotations

import re
from collections.abc import Iterable


def case_insensitive_word(word: str) -> str:
    """``word`` in any case, as an ECMA-262 regular expression (which, unlike Python's,
    has no inline flag for it): ``new`` → ``[nN][eE][wW]``."""
    return "".join(
        f"[{char.lower()}{char.upper()}]" if char.lower() != char.upper() else re.escape(char)
        for char in word
    )


def alternatives(patterns: Iterable[str]) -> str:
    """One of the patterns, longest first (so that no prefix wins a shorter match)."""
    return "(?:" + "|".join(sorted(patterns, key=len, reverse=True)) + ")"


def case_insensitive_choice(words: Iterable[str]) -> str:
    """Exactly one of ``words``, in any case."""
    return "^" + alternatives(case_insensitive_word(word) for word in words) + "$"


def comma_list(item: str, spaces: bool = True) -> str:
    """A comma-separated list of ``item``, empty items (and the empty text) allowed, as
    ``split(",")`` reads it; ``spaces``: around items too, as ``strip(" ")`` reads them."""
    pad = " *" if spaces else ""
    part = f"{pad}(?:{item})?{pad}"
    return f"^{part}(?:,{part})*$"
