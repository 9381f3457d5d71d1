"""How a reply too long for one Teams message is cut (bot.replies.split_text): every part within
the limit in UTF-16 code units, as Teams counts, cut after a paragraph, a line or a word, and a
code block cut in two closed and opened again with its language."""

from __future__ import annotations

import pytest

from bot.replies import split_text, utf16_units


def test_a_text_that_fits_is_one_part() -> None:
    assert split_text("Short answer.\n\nWith two paragraphs.", 100) == [
        "Short answer.\n\nWith two paragraphs."
    ]


def test_parts_end_after_a_paragraph_when_one_is_near() -> None:
    paragraphs = [f"Paragraph {n}: " + "words " * 20 for n in range(6)]
    parts = split_text("\n\n".join(p.strip() for p in paragraphs), 400)

    assert len(parts) > 1
    assert all(part.startswith("Paragraph") for part in parts)
    assert " ".join(parts).split() == " ".join(paragraphs).split()


def test_a_code_block_cut_in_two_is_closed_and_opened_again_with_its_language() -> None:
    code = "\n".join(f"    value_{n} = compute({n})" for n in range(40))
    text = f"Here is the script:\n\n```python\n{code}\n```\n\nRun it once."

    parts = split_text(text, 600)

    assert len(parts) >= 3
    for part in parts[:-1]:
        assert part.endswith("```")
    for part in parts[1:]:
        assert part.startswith("```python\n")
    assert all(part.count("```") % 2 == 0 for part in parts)
    lines = [line for part in parts for line in part.splitlines() if line.startswith("    ")]
    assert lines == code.splitlines()


@pytest.mark.parametrize(
    "text",
    ["😀" * 500, "日本語の文章です。" * 200, "x" * 1000, "word " * 300, "\n".join(["line"] * 300)],
)
def test_every_part_is_within_the_limit_in_utf16_units_and_nothing_is_lost(text: str) -> None:
    parts = split_text(text, 150)

    assert all(0 < utf16_units(part) <= 150 for part in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())
