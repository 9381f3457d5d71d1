"""Text as users write it: the invisible characters a paste leaves at its edges, the letters of
Japanese, katakana read as hiragana, and cutting text where a reader sees a character end.

Shared by the chat service (what is stored and answered) and by the gate, the commands and the
consent answers in `dialogs/`, so that what one takes for blank or for a command the others do too.
"""

from __future__ import annotations

import re
import unicodedata

# Zero-width space, non-joiner, joiner, word joiner, and the byte order mark (a zero-width
# no-break space): pasted from web pages, editors and files, invisible, and not whitespace to
# `str.strip`. Only at the edges of a message: inside one, a joiner holds an emoji together.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_BLANK = f"[\\s{INVISIBLE}]"
_LEADING = re.compile(f"{_BLANK}*")
_BLANK_LINE = re.compile(f"{_BLANK}*\\Z")
_NO_INVISIBLE = str.maketrans(dict.fromkeys(INVISIBLE))
# The control characters but tab, line feed and carriage return (NUL, escape, form feed, the
# separators, delete, the C1 controls): no keyboard types them into a chat and no chat shows
# them, but a paste or a script can send them. They carry nothing, and the review pages name
# the same set where stored text has them (admin/texts.py).
_CONTROLS = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]
_NO_CONTROLS = str.maketrans(dict.fromkeys(_CONTROLS))


def without_controls(text: str) -> str:
    """`text` as a message is taken: without control characters (`_CONTROLS`), so that the
    commands, the consent answers and the chat all read the same words."""
    return text.translate(_NO_CONTROLS)


# The characters of Japanese words: the iteration mark 々, hiragana, katakana (with ー and ・),
# CJK ideographs (extension A, unified, compatibility) and half-width katakana.
JAPANESE_LETTERS = "\u3005\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"

# Katakana ァ..ヶ and the hiragana ぁ..ゖ they are written as (the same order, 0x60 apart).
_AS_HIRAGANA = {code: code - 0x60 for code in range(0x30A1, 0x30F7)}


def strip_edges(text: str) -> str:
    """`text` without whitespace or invisible characters before or after it."""
    start = _end_of_leading(text)
    return text[start : max(start, _start_of_trailing(text))]


def as_written(text: str) -> str:
    """A message as the user wrote it, from its first non-blank line on: pasted code keeps its
    first line's indentation. Leading blank lines, trailing whitespace and invisible characters
    at either edge carry nothing; a blank message is empty. (Control characters are gone
    before: `without_controls`, where a message is taken.)"""
    lines = text[: _start_of_trailing(text)].splitlines(keepends=True)
    while lines and _BLANK_LINE.match(lines[0]):
        lines.pop(0)
    if not lines:
        return ""
    first = lines[0]
    indent = _end_of_leading(first)
    lines[0] = first[:indent].translate(_NO_INVISIBLE) + first[indent:]
    return "".join(lines)


def as_hiragana(text: str) -> str:
    """Katakana written as hiragana (ハイ is はい); everything else as it is."""
    return text.translate(_AS_HIRAGANA)


def cut(text: str, limit: int, mark: str = "…") -> str:
    """`text` if it has at most `limit` code points, else its start followed by `mark`, within
    `limit` in all, cut where one character as a reader sees it (a grapheme cluster) ends: a
    flag, an emoji with its skin tone or its joined parts, a letter with its accents stay whole
    or go whole."""
    if len(text) <= limit:
        return text
    end = max(0, limit - len(mark))
    while end > 0 and not _boundary(text, end):
        end -= 1
    return text[:end].rstrip() + mark


def _end_of_leading(text: str) -> int:
    match = _LEADING.match(text)
    return match.end() if match else 0


def _start_of_trailing(text: str) -> int:
    # Matched from the end, on the reversed text: a search for blanks followed by the end would
    # try every run of blanks in the text, and megabytes of indentation make that quadratic.
    return len(text) - _end_of_leading(text[::-1])


def _boundary(text: str, at: int) -> bool:
    """Whether a grapheme cluster may end between `text[at - 1]` and `text[at]`: a small part of
    Unicode's rules (UAX #29) that covers what users type, with no dependency."""
    before, after = text[at - 1], text[at]
    if _extends(after) or before == "\u200d":
        return False
    if _regional_indicator(before) and _regional_indicator(after):
        # Flags are pairs: a boundary after an even number of indicators in a row.
        run = 0
        while at - 1 - run >= 0 and _regional_indicator(text[at - 1 - run]):
            run += 1
        return run % 2 == 0
    return True


def _extends(char: str) -> bool:
    """Characters that belong to the one before them."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")  # combining marks, e.g. ゙ and ゚
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin tones
        or 0xFE00 <= code <= 0xFE0F  # variation selectors (e.g. the emoji style)
        or 0xE0100 <= code <= 0xE01EF
        or 0xE0020 <= code <= 0xE007F  # tags (the flags of England, Scotland, Wales)
        or 0x1160 <= code <= 0x11FF  # Hangul vowel and final jamo
        or code in (0x200C, 0x200D)  # zero-width non-joiner and joiner
    )


def _regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF
