"""The second pass of a deletion deletes only what arrived before the first pass but was stored
after it (an answer still being given, a message that waited, a rating); what the user, or the
conversation, does after the first pass stays (README, "Admin review"). The deletion pages and
their results say exactly that, in English and Japanese: nothing promises to delete "anything
else stored until then"."""

from __future__ import annotations

import pytest

from admin.texts import LANGUAGES, Language, all_texts

# Each deletion's confirmation page and result.
SECOND_PASS_TEXTS = [
    "delete_conversation_second_pass",
    "list_deleted_second_pass",
    "delete_user_second_pass",
    "deleted_second_pass",
]
# What said that the second pass deletes whatever was stored until it runs.
PROMISES_TOO_MUCH: dict[Language, list[str]] = {
    "en": ["until then"],
    "ja": ["それまでにこの会話で保存された", "それまでにこのユーザーについて保存された"],
}
# What says that what comes after the first pass stays.
STAYS: dict[Language, str] = {"en": " stays.", "ja": "残ります。"}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", SECOND_PASS_TEXTS)
def test_a_deletions_texts_say_the_second_pass_deletes_only_late_writes_of_earlier_turns(
    key: str, language: Language
) -> None:
    text = all_texts()[key][language]

    assert not [promise for promise in PROMISES_TOO_MUCH[language] if promise in text]
    assert STAYS[language] in text
