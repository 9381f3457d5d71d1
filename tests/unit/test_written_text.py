"""The normalizers of what users type (chat.written): invisible characters at a message's edges,
katakana read as hiragana, and cutting text where a character as a reader sees it ends."""

from __future__ import annotations

import pytest

from chat.written import as_hiragana, as_written, cut, strip_edges, without_controls


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u200b/usage", "/usage"),
        ("\ufeff／ヘルプ\u200b", "／ヘルプ"),
        (" \u2060\u200c\u3000はい\u200d \n", "はい"),
        ("\u200b", ""),
        # Inside a message a joiner is part of an emoji: kept.
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),
    ],
)
def test_strip_edges_removes_whitespace_and_invisible_characters_at_both_ends_only(
    text: str, expected: str
) -> None:
    assert strip_edges(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u200b", ""),
        ("\ufeff\n\u200b \n", ""),
        ("\u200bこんにちは\u200b", "こんにちは"),
        # Pasted code keeps its first line's indentation, without what was invisible in it.
        ("\ufeff\n\u200b\n  \u200b  def f():\n    pass\n\u200b", "    def f():\n    pass"),
        ("  indented", "  indented"),
        ("a\u200bb", "a\u200bb"),
    ],
)
def test_as_written_drops_invisible_characters_at_the_edges_and_keeps_indentation(
    text: str, expected: str
) -> None:
    assert as_written(text) == expected


def test_as_hiragana_reads_katakana_as_hiragana_and_leaves_the_rest() -> None:
    assert as_hiragana("ハイ イイエ ヴ ヶ") == "はい いいえ ゔ ゖ"
    assert as_hiragana("同意します OK ー") == "同意します OK ー"


def test_cut_keeps_text_that_fits_and_marks_a_cut_with_an_ellipsis() -> None:
    assert cut("あ" * 80, 80) == "あ" * 80
    assert cut("あ" * 81, 80) == "あ" * 79 + "…"
    assert cut("a b c d", 4) == "a b…"  # no space before the mark


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Regional indicator pairs: the cut falls between flags, never inside one.
        ("xx🇯🇵🇺🇸", "xx🇯🇵…"),
        ("x🇯🇵🇺🇸y", "x🇯🇵…"),
        ("🇯🇵🇺🇸🇫🇷", "🇯🇵🇺🇸…"),
        ("x🇯🇵🇺🇸🇫🇷", "x🇯🇵…"),
        # Emoji modifiers (skin tones) and variation selectors stay with their emoji.
        ("xxx👍🏽yz", "xxx…"),
        ("xx👍🏽yz", "xx👍🏽…"),
        ("xxx❤\ufe0fyz", "xxx…"),
        # A zero-width-joiner sequence is one character.
        ("xx👩\u200d💻yy", "xx…"),
        ("x👩\u200d💻yy", "x👩\u200d💻…"),
        # Combining marks: the dakuten of か + ゛.
        ("xxxか\u3099yz", "xxx…"),
        # A subdivision flag (England): black flag, tags, cancel tag.
        ("x🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007fyy", "x…"),
    ],
)
def test_cut_falls_where_a_character_as_the_reader_sees_it_ends(text: str, expected: str) -> None:
    assert cut(text, 5) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x00", ""),
        ("\x00\x1b\x7f \x9f", " "),
        ("a\x00b\x08c\x1b[0m", "abc[0m"),
        # Tabs and line breaks (LF, CR) stay; the other controls, whitespace or not, go.
        ("a\tb\r\nc\x0cd\x85e\x1ff\x0bg", "a\tb\r\ncdefg"),
        ("👨\u200d👩 \u202eabc", "👨\u200d👩 \u202eabc"),
    ],
)
def test_without_controls_drops_every_control_character_but_tab_and_line_breaks(
    text: str, expected: str
) -> None:
    assert without_controls(text) == expected
