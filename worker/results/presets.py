"""Mida's ``filter_by`` presets translated into a segment filter (pure).

Presets of one dimension are alternatives (OR: ``mobile,tablet``, ``country-US,
country-CA``, regions); different dimensions must all hold (AND). The regional
presets are country lists of our own; Mida does not publish its lists.
"""

from __future__ import annotations

from worker.results.query import Condition, OrGroup, SegmentFilter

REGIONS: dict[str, tuple[str, ...]] = {
    "northamerica": ("US", "CA", "MX", "GL", "BM", "PM"),
    "latinamerica": (
        "MX", "GT", "BZ", "SV", "HN", "NI", "CR", "PA", "CU", "DO", "HT", "PR", "JM",
        "TT", "BS", "BB", "AR", "BO", "BR", "CL", "CO", "EC", "PY", "PE", "UY", "VE",
        "GY", "SR", "GF",
    ),
    "europe": (
        "AL", "AD", "AT", "BY", "BE", "BA", "BG", "HR", "CY", "CZ", "DK", "EE", "FI",
        "FR", "DE", "GR", "HU", "IS", "IE", "IT", "XK", "LV", "LI", "LT", "LU", "MT",
        "MD", "MC", "ME", "NL", "MK", "NO", "PL", "PT", "RO", "RU", "SM", "RS", "SK",
        "SI", "ES", "SE", "CH", "UA", "GB", "VA", "FO", "GI", "GG", "JE", "IM", "AX",
    ),
    "asiapacific": (
        "AU", "NZ", "JP", "KR", "KP", "CN", "HK", "MO", "TW", "MN", "SG", "MY", "ID",
        "TH", "VN", "PH", "KH", "LA", "MM", "BN", "TL", "IN", "PK", "BD", "LK", "NP",
        "BT", "MV", "KZ", "UZ", "TM", "KG", "TJ", "FJ", "PG", "SB", "VU", "NC", "PF",
        "WS", "TO", "KI", "FM", "MH", "PW", "NR", "TV",
    ),
    "africa": (
        "DZ", "AO", "BJ", "BW", "BF", "BI", "CV", "CM", "CF", "TD", "KM", "CD", "CG",
        "CI", "DJ", "EG", "GQ", "ER", "SZ", "ET", "GA", "GM", "GH", "GN", "GW", "KE",
        "LS", "LR", "LY", "MG", "MW", "ML", "MR", "MU", "MA", "MZ", "NA", "NE", "NG",
        "RW", "ST", "SN", "SC", "SL", "SO", "ZA", "SS", "SD", "TZ", "TG", "TN", "UG",
        "ZM", "ZW", "EH", "RE", "YT", "SH",
    ),
    "middleeast": (
        "AE", "BH", "EG", "IL", "IQ", "IR", "JO", "KW", "LB", "OM", "PS", "QA", "SA",
        "SY", "TR", "YE",
    ),
}  # fmt: skip

PRESETS: dict[str, tuple[str, str]] = {
    "mobile": ("device", "mobile"),
    "desktop": ("device", "desktop"),
    "tablet": ("device", "tablet"),
    "new": ("visitor_type", "new"),
    "returning": ("visitor_type", "returning"),
    "paid": ("source", "paid"),
    "search": ("source", "search"),
    "direct": ("source", "direct"),
    "referral": ("source", "referral"),
    "social": ("source", "social"),
    "email": ("source", "email"),
}
"""Preset → (field, value) of the one condition it stands for."""

COUNTRY_PREFIX = "country-"


def preset_filter(filter_by: str) -> SegmentFilter:
    """The segment filter of a ``filter_by`` value such as ``mobile,country-US,country-CA``.

    Raises ValueError naming the first unknown preset; an empty value filters nothing.
    """
    groups: dict[str, list[Condition]] = {}
    for token in (part.strip(" ").lower() for part in filter_by.split(",")):
        if not token:
            continue
        for field, value in _conditions(token):
            group = groups.setdefault(field, [])
            condition = Condition.model_validate({"field": field, "operator": "==", "value": value})
            if condition not in group:
                group.append(condition)
    return tuple(OrGroup(group) for group in groups.values())


def _conditions(token: str) -> list[tuple[str, str]]:
    if token in PRESETS:
        return [PRESETS[token]]
    if token in REGIONS:
        return [("country", country) for country in REGIONS[token]]
    code = token.removeprefix(COUNTRY_PREFIX)
    if token.startswith(COUNTRY_PREFIX) and len(code) == 2 and code.isascii() and code.isalpha():
        return [("country", code.upper())]
    raise ValueError(f"unknown filter_by preset {token!r}")
