"""Closed vocabularies of the segment dimensions; each has `other` for the rest."""

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
    OPERA = "opera"
    SAMSUNG = "samsung"
    IE = "ie"
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
