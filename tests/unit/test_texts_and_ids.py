from __future__ import annotations

import re
import string

import pytest

from chat.texts import LANGUAGES, all_texts, localize, wait_text
from storage.ids import safe_id


@pytest.mark.parametrize("key", sorted(all_texts()))
def test_every_text_exists_in_english_and_japanese_with_the_same_placeholders(key: str) -> None:
    texts = all_texts()[key]
    assert set(texts) == set(LANGUAGES)
    fields = {
        lang: {name for _, name, _, _ in string.Formatter().parse(text) if name}
        for lang, text in texts.items()
    }
    assert fields["en"] == fields["ja"]
    japanese = r"[\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]"
    assert re.search(japanese, texts["ja"]), "Japanese text is Japanese"


def test_locale_picks_the_language() -> None:
    assert localize("thinking", "ja-JP") == all_texts()["thinking"]["ja"]
    assert localize("thinking", "ja") == all_texts()["thinking"]["ja"]
    assert localize("thinking", "fr-FR") == all_texts()["thinking"]["en"]
    assert localize("thinking", None) == all_texts()["thinking"]["en"]


@pytest.mark.parametrize(
    "raw",
    [
        "msteams:a:1Xk5yGbQvT-KNtWmnuGCj8MnvHXNLkPrTYVVcFZ8yrFOCMUB",
        "msteams:19:abc@thread.tacv2;messageid=1700000000000",
        "webchat:" + "x" * 400,
        "bad/id\\with?all#the chars",
        "日本語の会話",
    ],
)
def test_safe_ids_are_valid_cosmos_ids_and_stable(raw: str) -> None:
    made = safe_id(raw)
    assert not set(made) & set("/\\?#")
    assert 0 < len(made) <= 255
    assert made == safe_id(raw)


def test_distinct_long_ids_do_not_collide() -> None:
    assert safe_id("a" * 300 + "1") != safe_id("a" * 300 + "2")


@pytest.mark.parametrize(
    ("seconds", "english", "japanese"),
    [
        (0.2, "1 second", "1秒"),
        (1, "1 second", "1秒"),
        (1.01, "2 seconds", "2秒"),
        (50, "50 seconds", "50秒"),
        (59.5, "about a minute", "約1分"),
        (60, "about a minute", "約1分"),
        (61, "about 2 minutes", "約2分"),
        (3600, "about 60 minutes", "約60分"),
        (3601, "about 2 hours", "約2時間"),
        (86400, "about 24 hours", "約24時間"),
    ],
)
def test_a_wait_is_said_in_seconds_minutes_or_hours_rounded_up(
    seconds: float, english: str, japanese: str
) -> None:
    assert wait_text(seconds, "en-US") == english
    assert wait_text(seconds, "ja-JP") == japanese
