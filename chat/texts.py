"""Every user-facing sentence, in English and Japanese, from `texts.yaml`.

A text is picked by the activity's locale (`ja`, `ja-JP` -> Japanese; anything else English).
"""

from __future__ import annotations

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
    return all_texts()[key][language_of(locale)].format(**values)
