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
        (3540, "about 59 minutes", "約59分"),
        (3600, "about an hour", "約1時間"),
        (3601, "about 61 minutes", "約61分"),
        (5400, "about 90 minutes", "約90分"),
        (5401, "about 2 hours", "約2時間"),
        (8940, "about 2 hours", "約2時間"),
        (9000, "about 3 hours", "約3時間"),
        (86399, "about 24 hours", "約24時間"),
        (86400, "about 24 hours", "約24時間"),
    ],
)
def test_a_wait_is_said_in_minutes_up_to_90_then_in_hours_to_the_nearest_hour(
    seconds: float, english: str, japanese: str
) -> None:
    assert wait_text(seconds, "en-US") == english
    assert wait_text(seconds, "ja-JP") == japanese


def test_whole_numbers_in_texts_have_thousands_separators_in_both_languages() -> None:
    english = localize("message_too_long", "en-US", length=12000, limit=1_000_000)
    japanese = localize("message_too_long", "ja-JP", length=12000, limit=1_000_000)

    assert "(12,000 characters; the limit is 1,000,000)" in english
    assert "（現在12,000文字、上限は1,000,000文字）" in japanese


@pytest.mark.parametrize("key", sorted(all_texts()))
def test_japanese_texts_use_full_width_parentheses_and_no_space_before_a_counter(
    key: str,
) -> None:
    japanese = all_texts()[key]["ja"]
    assert "(" not in japanese and ")" not in japanese
    assert not re.search(r"[0-9}] (件|文字|トークン|時間|分|秒|回)", japanese), japanese


# The consent buttons are the user's own words ("I accept").
USER_WORDS = {"consent_accept_label", "consent_decline_label"}


@pytest.mark.parametrize("key", sorted(set(all_texts()) - USER_WORDS))
def test_english_texts_speak_of_the_assistant_not_as_i(key: str) -> None:
    english = all_texts()[key]["en"]
    assert not re.search(r"\b(I|I'm|me|my)\b", english), english


def test_no_text_calls_the_quota_day_today() -> None:
    """The daily limits reset at midnight UTC, which is 09:00 in Japan: "today" would be wrong
    for most users (the Teams app's own texts: tests/teams/test_app_package.py)."""
    for key, texts in all_texts().items():
        assert not re.search(r"\btoday\b", texts["en"], re.IGNORECASE), key
        assert "本日" not in texts["ja"] and "今日" not in texts["ja"], key
