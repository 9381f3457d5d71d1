"""Every user-facing sentence, in English and Japanese, from `texts.yaml`.

A text is picked by the activity's locale (`ja`, `ja-JP` -> Japanese; anything else English).
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Literal, cast

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
