"""Every text of the admin pages, in English and Japanese, from `texts.yaml`.

The language is the reader's: the `admin_lang` cookie the pages' switch sets, else the browser's
Accept-Language (`ja`, `ja-JP` ... -> Japanese; anything else English). The texts are HTML (a
few hold `<code>`): what fills a placeholder is escaped, unless it is markup the app built (a
text inside a text). Errors carry a `Text`, said on a page in the reader's language; the JSON
API says it in English, beside its stable `code`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal, cast

import markupsafe
import yaml

Language = Literal["en", "ja"]
LANGUAGES: tuple[Language, ...] = ("en", "ja")
DEFAULT_LANGUAGE: Language = "en"
# Each language named in itself, on the switch (not translated: a reader looks for their own).
LANGUAGE_NAMES: dict[Language, str] = {"en": "English", "ja": "日本語"}
LANGUAGE_COOKIE = "admin_lang"
_TEXTS_FILE = Path(__file__).resolve().parent / "texts.yaml"
# One Accept-Language entry: a language range and its optional quality (RFC 9110, 12.5.4).
_RANGE = re.compile(r"\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?")
# Characters that reorder the text around them (embeddings, overrides, isolates): a title
# "invoice \u202egnp.exe" would show as "invoice exe.png". Reviewers see them named instead,
# and so the control characters but tab and line breaks (NUL, escape, delete, C1), which a
# browser shows as nothing or drops: stored before the chat dropped them, or sent to the API.
_HIDDEN_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@cache
def all_texts() -> dict[str, dict[Language, str]]:
    loaded = yaml.safe_load(_TEXTS_FILE.read_text(encoding="utf-8"))
    return cast(dict[str, dict[Language, str]], loaded)


def language_of(accept_language: str) -> Language:
    """Of our languages, the one the browser ranks highest: its quality values honoured, an
    earlier entry before a later one of the same quality, `*` (any other language) counted as
    English. English when it asks for neither: English is the default."""
    ranks: dict[Language, tuple[float, int]] = {}
    for position, entry in enumerate(accept_language.split(",")[:32]):
        found = _RANGE.fullmatch(entry)
        if found is None:
            continue
        tag, quality = found.group(1).lower(), found.group(2)
        try:
            q = float(quality) if quality is not None else 1.0
        except ValueError:
            continue
        primary = tag.split("-")[0]
        if primary not in ("ja", "en", "*") or not 0 < q <= 1:
            continue
        language: Language = "ja" if primary == "ja" else "en"
        rank = (q, -position)
        if language not in ranks or rank > ranks[language]:
            ranks[language] = rank
    japanese, english = ranks.get("ja"), ranks.get("en")
    if japanese is not None and (english is None or japanese > english):
        return "ja"
    return DEFAULT_LANGUAGE


def show_hidden_controls(value: object) -> object:
    """Every value a page prints (Jinja's `finalize`), with bidi and other control characters
    shown as `[U+202E]`, `[U+0000]`; markup the app built itself is left as it is."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return _HIDDEN_CONTROLS.sub(lambda m: f"[U+{ord(m.group()):04X}]", value)
    return value


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _shown(value: object) -> object:
    """A placeholder's value as a page shows it: whole numbers with thousands separators (the
    same in both languages, as the bot's texts have them), bidi controls named."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return show_hidden_controls(value)


@dataclass(frozen=True)
class Text:
    """A text to say, in whichever language its reader has: a key of `texts.yaml` and what
    fills its placeholders (plain values, or another `Text`, said in the same language)."""

    key: str
    values: Mapping[str, object] = field(default_factory=dict)

    def html(self, language: Language) -> markupsafe.Markup:
        values = {
            name: value.html(language) if isinstance(value, Text) else _shown(value)
            for name, value in self.values.items()
        }
        # Our own texts are HTML (texts.yaml); what fills them is escaped by `format`.
        return markupsafe.Markup(all_texts()[self.key][language]).format(**values)  # noqa: S704

    def plain(self, language: Language = DEFAULT_LANGUAGE) -> str:
        """As plain text (the JSON API's `message`, an exception's str): the error texts hold
        no markup (a test checks), so only what filled them is unescaped."""
        return self.html(language).unescape()


def sentence(text: Text, language: Language) -> markupsafe.Markup:
    """An error as a page says it: English error texts of a request's fields are phrases for the
    API ("give a reason ..."), which a page starts with a capital and ends with a full stop; the
    Japanese ones are sentences already."""
    said = text.html(language)
    if language != "en" or not said:
        return said
    said = said[:1].upper() + said[1:]
    return said if said.endswith(".") else said + "."


class PageTexts:
    """`t` in the templates: `t("key", name=value)` says a text in the page's language."""

    def __init__(self, language: Language) -> None:
        self.language = language

    def __call__(self, key: str, **values: object) -> markupsafe.Markup:
        return Text(key, values).html(self.language)

    def plural(self, key: str, count: int, **values: object) -> markupsafe.Markup:
        """`key_one` for a count of 1, else `key_other` (Japanese says both alike)."""
        return self(f"{key}_{'one' if count == 1 else 'other'}", count=count, **values)

    def say(self, text: Text) -> markupsafe.Markup:
        return text.html(self.language)

    def sentence(self, text: Text) -> markupsafe.Markup:
        return sentence(text, self.language)

    def label(self, kind: str, value: object) -> object:
        """What a page calls a stored name (a flag category, a filter's source, a message's
        status or role, an audit action...): `kind_value` from the texts, or the name as stored
        when it has none (a category Azure added after this version, say)."""
        if isinstance(value, str) and f"{kind}_{value}" in all_texts():
            return self(f"{kind}_{value}")
        return value

    def labelled(self, kind: str) -> list[str]:
        """The stored names a page has a label for (`kind_value` in the texts), in the texts'
        order: what a filter offers to pick from (the audit log's actions)."""
        prefix = f"{kind}_"
        return [key.removeprefix(prefix) for key in all_texts() if key.startswith(prefix)]

    def hits(self, category: str) -> object:
        """What a verdict's hit list is headed with: the blocklists or the category's name (in
        English with spaces: `custom topics`)."""
        if category == "blocklist":
            return self("hits_blocklists")
        if self.language == "en" or f"category_{category}" not in all_texts():
            return category.replace("_", " ")
        return self(f"category_{category}")
