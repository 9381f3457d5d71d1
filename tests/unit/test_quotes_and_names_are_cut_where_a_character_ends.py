"""A notice's quote of a message and a speaker's display name are cut where a character as a
reader sees it ends: an emoji with its skin tone, a flag, stay whole or go whole."""

from __future__ import annotations

from chat.speakers import MAX_NAME_CHARS, speaker_name
from dialogs.guard import _EXCERPT_CHARS
from dialogs.guard import excerpt as _excerpt

THUMBS_UP_MEDIUM = "\U0001f44d\U0001f3fd"  # 👍🏽
JAPAN = "\U0001f1ef\U0001f1f5"  # 🇯🇵


def test_a_quoted_message_is_cut_before_an_emoji_with_its_skin_tone_not_inside_it() -> None:
    text = "a" * (_EXCERPT_CHARS - 2) + THUMBS_UP_MEDIUM + " and more words after it"

    quoted = _excerpt(text)

    assert quoted == "a" * (_EXCERPT_CHARS - 2) + "…"
    assert _excerpt("short " + THUMBS_UP_MEDIUM) == "short " + THUMBS_UP_MEDIUM


def test_a_long_display_name_is_cut_before_a_flag_not_inside_it() -> None:
    name = "N" * (MAX_NAME_CHARS - 1) + JAPAN

    assert speaker_name(name) == "N" * (MAX_NAME_CHARS - 1)
    assert speaker_name("Aiko " + JAPAN) == "Aiko " + JAPAN
