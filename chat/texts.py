"""Every user-facing sentence, in English and Japanese, from `texts.yaml`.

A text is picked by the activity's locale (`ja`, `ja-JP` -> Japanese; anything else English).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

Language = Literal["en", "ja"]
LANGUAGES: tuple[Language, ...] = ("en", "ja")
_TEXTS_FILE = Path(__file__).resolve().parent / "texts.yaml"


@cache
def all_texts() -> dict[str, dict[Language, str]]:
    loaded = yaml.safe_load(_TEXTS_FILE.read_text(encoding="utf-8"))
    return cast(dict[str, dict[Language, str]], loaded)


def language_of(locale: str | None) -> Language:
    return "ja" if (locale or "").lower().startswith("ja") else "en"


def localize(key: str, locale: str | None, **values: object) -> str:
    """`key`'s text in the locale's language; whole numbers get thousands separators (a limit of
    1000000 tokens is hard to read), the same in both languages (1,000,000)."""
    shown = {
        name: f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        for name, value in values.items()
    }
    return all_texts()[key][language_of(locale)].format(**shown)


def wait_text(seconds: float, locale: str | None) -> str:
    """A wait as the notices say it: whole seconds under a minute; about N minutes (rounded up,
    so the user does not come back too early) up to 90 minutes, 60 of them said as an hour;
    beyond, about N hours to the nearest hour."""
    whole = max(1, math.ceil(seconds))
    if whole == 1:
        return localize("wait_one_second", locale)
    if whole < 60:
        return localize("wait_seconds", locale, count=whole)
    minutes = math.ceil(whole / 60)
    if minutes == 1:
        return localize("wait_one_minute", locale)
    if minutes == 60:
        return localize("wait_one_hour", locale)
    if minutes <= 90:
        return localize("wait_minutes", locale, count=minutes)
    # Half up (not Python's round-half-even): 150 minutes are about 3 hours.
    return localize("wait_hours", locale, count=math.floor(minutes / 60 + 0.5))


# An IANA zone name as Teams (clientInfo `timezone`) and Web Chat (`localTimezone`) send it:
# "Asia/Tokyo", "America/Argentina/Buenos_Aires", "Etc/GMT-9", "UTC". The capital letter first
# leaves out the zone files that are no zones ("localtime", "posixrules", "right/...").
_ZONE_NAME = re.compile(r"[A-Z][A-Za-z0-9_+\-]{0,40}(?:/[A-Za-z0-9_+\-]{1,40}){0,2}")
_NOT_ZONES = frozenset({"Factory"})
# Zones that are UTC itself: a time in them is said as UTC.
_UTC_ZONES = frozenset(
    {"UTC", "UCT", "Universal", "Zulu", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich"}
    | {f"Etc/{name}" for name in ("UTC", "UCT", "Universal", "Zulu", "GMT", "GMT0")}
    | {"Etc/GMT+0", "Etc/GMT-0", "Etc/Greenwich"}
)
# Zones said in words (texts.yaml); any other is said by its name and its offset from UTC (in
# Japanese by the offset alone: the names are English).
_ZONE_WORDS = {"Asia/Tokyo": "zone_japan", "Japan": "zone_japan"}
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@lru_cache(maxsize=256)
def time_zone(name: str) -> ZoneInfo | None:
    """The zone an IANA name names; None for anything else (unknown, malformed, or no zone
    data on this machine: the `tzdata` package ships it, nothing is downloaded)."""
    if not _ZONE_NAME.fullmatch(name) or name in _NOT_ZONES:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def moment_text(at: datetime, locale: str | None, zone_name: str = "") -> str:
    """A moment (when a quota's day ends) as the notices say it: in the user's time zone when
    the channel gave a known one ("9:00 AM Japan time on Nov 24", "日本時間11月24日 9:00"; any
    other zone by its name and UTC offset, in Japanese by the offset alone: "UTC-5の11月23日
    19:00"), else in UTC, saying so ("00:00 UTC on Nov 24")."""
    zone = time_zone(zone_name) if zone_name else None
    english = language_of(locale) == "en"
    if zone is None or zone_name in _UTC_ZONES:
        local = at.astimezone(UTC)
        where = localize("zone_utc", locale)
        # UTC times are read on a 24-hour clock.
        clock = f"{local.hour:02d}:{local.minute:02d}" if english else None
    else:
        local = at.astimezone(zone)
        words = _ZONE_WORDS.get(zone_name)
        if words is not None:
            where = localize(words, locale)
        elif zone_name.startswith("Etc/") or not english:
            # A fixed offset, whose name has the sign reversed ("Etc/GMT-9" is UTC+9); or a
            # zone whose name is English, which Japanese says by its offset alone.
            where = localize("zone_offset", locale, offset=_offset(local))
        else:
            name = zone_name.replace("_", " ")
            where = localize("zone_named", locale, name=name, offset=_offset(local))
        half = "AM" if local.hour < 12 else "PM"
        clock = f"{(local.hour % 12) or 12}:{local.minute:02d} {half}" if english else None
    return localize(
        "moment_in_zone",
        locale,
        time=clock or f"{local.hour}:{local.minute:02d}",
        zone=where,
        month=_MONTHS_EN[local.month - 1] if english else str(local.month),
        day=str(local.day),
    )


def _offset(at: datetime) -> str:
    """The offset from UTC as people write it after "UTC": +9, -5, +5:30, +0."""
    offset = at.utcoffset()
    minutes = round(offset.total_seconds() / 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours}:{rest:02d}" if rest else f"{sign}{hours}"
