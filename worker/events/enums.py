"""Vocabularies of the segment dimensions; each has `other` for the rest.

The device, browser, os and source lists are the values Mida documents (its browser
list has edge_chromium, edge_legacy, brave, vivaldi, yandex, chromium, samsung, uc,
duckduckgo, silk, facebook, instagram, opera and ie besides the big four). A producer
may send any other text: the visitor is counted under `other` and the text is kept
for scans (see ``assignment.Context``), never a reason to drop the visitor.
"""

from __future__ import annotations

from enum import StrEnum


class Device(StrEnum):
    MOBILE = "mobile"
    DESKTOP = "desktop"
    TABLET = "tablet"
    OTHER = "other"


class Browser(StrEnum):
    CHROME = "chrome"
    SAFARI = "safari"
    FIREFOX = "firefox"
    EDGE = "edge"
    EDGE_CHROMIUM = "edge_chromium"
    EDGE_LEGACY = "edge_legacy"
    OPERA = "opera"
    SAMSUNG = "samsung"
    IE = "ie"
    BRAVE = "brave"
    VIVALDI = "vivaldi"
    YANDEX = "yandex"
    CHROMIUM = "chromium"
    UC = "uc"
    DUCKDUCKGO = "duckduckgo"
    SILK = "silk"
    FACEBOOK = "facebook"
    INSTAGRAM = "instagram"
    OTHER = "other"


class OperatingSystem(StrEnum):
    WINDOWS = "windows"
    MACOS = "macos"
    LINUX = "linux"
    IOS = "ios"
    ANDROID = "android"
    CHROMEOS = "chromeos"
    OTHER = "other"


class Source(StrEnum):
    DIRECT = "direct"
    REFERRAL = "referral"
    SOCIAL = "social"
    SEARCH = "search"
    NONPAID = "nonpaid"
    PAID = "paid"
    EMAIL = "email"
    OTHER = "other"


class VisitorType(StrEnum):
    NEW = "new"
    RETURNING = "returning"


ENUMERATED_CONTEXT: dict[str, type[StrEnum]] = {
    "device": Device,
    "browser": Browser,
    "os": OperatingSystem,
    "source": Source,
}
"""The assignment context's enumerated fields and their vocabularies."""

OTHER = "other"
"""The value every vocabulary above counts unknown text as."""

_VOCABULARIES: tuple[type[StrEnum], ...] = (*ENUMERATED_CONTEXT.values(), VisitorType)
_MEMBERS: dict[type[StrEnum], dict[str, StrEnum]] = {
    vocabulary: {member.value: member for member in vocabulary} for vocabulary in _VOCABULARIES
}


def known_value(vocabulary: type[StrEnum], text: str) -> StrEnum | None:
    """The member ``text`` names (case and surrounding blanks ignored), else None."""
    members = _MEMBERS[vocabulary]
    found = members.get(text)  # the usual spelling: one lookup
    return found if found is not None else members.get(text.strip().lower())
