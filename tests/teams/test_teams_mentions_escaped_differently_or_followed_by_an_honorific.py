"""The bot's @mention in Teams group chats and channels when the mention entity and the message
text escape HTML differently (a bot named "R&D Helper"), and when a Japanese honorific follows
the mention ("<at>Bot</at>さん、同意します"): consent answers and commands are still understood."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from bot.teams import remove_bot_mentions
from chat.texts import localize
from storage.ids import safe_id
from tests.teams.activities import BOT_ID, BOT_NAME, CHANNEL_ID, channel_message, mention
from tests.teams.channel import TeamsChannel
from tests.teams.test_teams_consent import consenting_bot, post  # noqa: F401 - a fixture

THREAD = f"msteams:{CHANNEL_ID};messageid=1763719100000"
RD = "R&D Helper"
RD_ESCAPED = "R&amp;D Helper"


async def stored_user_texts(bot: TestClient[Any, Any]) -> list[str]:
    messages = await bot.server.app[STORE].conversation_messages(safe_id(THREAD))
    return [m.text for m in messages if m.role == "user"]


def entity(text: str, name: str = RD, mentioned_id: str = BOT_ID) -> dict[str, Any]:
    """A mention entity whose `text` is given as is (Teams' own `mention()` builds it)."""
    return {"type": "mention", "text": text, "mentioned": {"id": mentioned_id, "name": name}}


@pytest.mark.parametrize(
    ("text", "entities", "expected"),
    [
        (f"<at>{RD}</at> I accept", [entity(f"<at>{RD_ESCAPED}</at>")], "I accept"),
        (f"<at>{RD_ESCAPED}</at> /help", [entity(f"<at>{RD}</at>")], "/help"),
        ("<at>r&amp;d  helper</at>, I accept", [entity(f"<at>{RD}</at>")], "I accept"),
        (f"ask <at>{RD_ESCAPED}</at> about Q3", [entity(f"<at>{RD}</at>")], "ask about Q3"),
        # An entity whose text is in no tag of the message: the tag with the bot's name goes.
        (f"<at>{RD_ESCAPED}</at> /help", [entity("<at>R&amp;D</at>")], "/help"),
        (f"<at>{RD}</at> /help", [entity("<at>Helper</at>", name="")], "/help"),
        # Other people's mentions stay as they were.
        (
            f"<at>{RD}</at> ask <at>Ann &amp; Bob</at>",
            [
                entity(f"<at>{RD_ESCAPED}</at>"),
                entity("<at>Ann &amp; Bob</at>", "Ann & Bob", "29:ann"),
            ],
            "ask Ann &amp; Bob",
        ),
        (
            f"<at>{RD}</at> ask <at>{RD}</at>",
            [entity(f"<at>{RD_ESCAPED}</at>"), entity(f"<at>{RD}</at>", RD, "29:namesake")],
            "ask",
        ),
    ],
)
def test_the_bots_mention_is_removed_whichever_way_its_name_is_html_escaped(
    text: str, entities: list[dict[str, Any]], expected: str
) -> None:
    raw = {"recipient": {"id": BOT_ID, "name": RD}, "entities": entities}

    assert remove_bot_mentions(text, raw) == (expected, True)


@pytest.mark.parametrize(
    ("text", "entities", "expected"),
    [
        (f"<at>{RD}</at> I accept", [entity(RD)], "I accept"),
        (f"<at>{RD_ESCAPED}</at>, /help", [entity(RD)], "/help"),
        # Without tags in the message either, the name itself is the mention.
        (f"{RD} I accept", [entity(RD)], "I accept"),
        # Other people's untagged entities: their tags give way to their names.
        (
            f"<at>{RD}</at> ask <at>Bob</at> and Bob's team",
            [entity(RD), entity("Bob", "Bob", "29:bob")],
            "ask Bob and Bob's team",
        ),
    ],
)
def test_an_entity_whose_text_has_no_tags_removes_the_tagged_mention_whole(
    text: str, entities: list[dict[str, Any]], expected: str
) -> None:
    """Teams sends `<at>Name</at>` as the entity's text; other clients may send the bare name."""
    raw = {"recipient": {"id": BOT_ID, "name": RD}, "entities": entities}

    assert remove_bot_mentions(text, raw) == (expected, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<at>Bot</at>さん、同意します", "同意します"),
        ("<at>Bot</at>さん /help", "/help"),
        ("<at>Bot</at> 様　同意する", "同意する"),
        ("<at>Bot</at>さま：同意します", "同意します"),
        ("<at>Bot</at>殿，同意します", "同意します"),
        ("<at>Bot</at>くん, I accept", "I accept"),
        ("<at>Bot</at>ちゃん\r\n/help\r\n", "/help"),
        ("\r\n<at>Bot</at>さん、同意します\r\n", "同意します"),
        ("<at>Bot</at>さん\n    x = 1", "    x = 1"),
        # Words that start like an honorific are the user's own.
        ("<at>Bot</at>さんかくの面積は？", "さんかくの面積は？"),
        ("<at>Bot</at> ちゃんと説明して", "ちゃんと説明して"),
        ("<at>Bot</at>様子を教えて", "様子を教えて"),
        ("<at>Bot</at>さんの意見は？", "さんの意見は？"),
        # Only right after the bot's mention at the start.
        ("hi <at>Bot</at>さん、見て", "hi さん、見て"),
        ("見て\n<at>Bot</at>さん、これ", "見て\nさん、これ"),
        ("<at>Bot</at> 佐藤さん、見て", "佐藤さん、見て"),
        ("<at>Bot</at>、さん、見て", "さん、見て"),
    ],
)
def test_an_honorific_right_after_the_bots_mention_at_the_start_goes_with_it(
    text: str, expected: str
) -> None:
    raw = {"recipient": {"id": BOT_ID}, "entities": [mention("Bot")]}

    assert remove_bot_mentions(text, raw) == (expected, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<at>Bot</at>\u3000東京の天気は？", "東京の天気は？"),
        ("<at>Bot</at>\u3000\u3000/help", "/help"),
        ("東京の天気は？\u3000<at>Bot</at>", "東京の天気は？"),
        ("\u3000\n<at>Bot</at>\u3000同意します\u3000", "同意します"),
        # A full-width space inside the question is the user's own.
        ("<at>Bot</at> 東京\u3000大阪", "東京\u3000大阪"),
    ],
)
def test_full_width_spaces_around_the_bots_mention_go_with_it(text: str, expected: str) -> None:
    """A Japanese keyboard types U+3000 for the space after a mention: it reached the model and
    the stored message before."""
    raw = {"recipient": {"id": BOT_ID}, "entities": [mention("Bot")]}

    assert remove_bot_mentions(text, raw) == (expected, True)


def test_an_honorific_after_someone_elses_mention_stays() -> None:
    raw = {"recipient": {"id": BOT_ID}, "entities": [mention("Ann", "29:ann"), mention("Bot")]}

    assert remove_bot_mentions("<at>Ann</at>さん、見て <at>Bot</at>", raw) == (
        "Annさん、見て",
        True,
    )


async def test_a_bot_whose_name_is_escaped_differently_in_the_mention_gets_answers_and_commands(
    consenting_bot: TestClient[Any, Any],  # noqa: F811 - the fixture
    teams: TeamsChannel,
) -> None:
    def message(text: str, entity_text: str) -> dict[str, Any]:
        return channel_message(teams.url, text, mentions=[entity(entity_text)], recipient_name=RD)

    await post(consenting_bot, message(f"<at>{RD}</at> Summarize Q3", f"<at>{RD}</at>"))
    await post(consenting_bot, message(f"<at>{RD}</at> I accept", f"<at>{RD_ESCAPED}</at>"))
    await post(consenting_bot, message(f"<at>{RD_ESCAPED}</at> /help", f"<at>{RD}</at>"))

    _question, thanks, answer, help_text = (m["text"] for m in teams.messages())
    assert thanks == localize("consent_accepted_pending", "en-US")
    assert "Summarize Q3" in answer
    assert "/new" in help_text and "/usage" in help_text
    assert await stored_user_texts(consenting_bot) == ["Summarize Q3"]


async def test_an_honorific_after_the_mention_leaves_japanese_answers_and_commands_understood(
    consenting_bot: TestClient[Any, Any],  # noqa: F811 - the fixture
    teams: TeamsChannel,
) -> None:
    def message(text: str) -> dict[str, Any]:
        return channel_message(teams.url, f"<at>{BOT_NAME}</at>{text}", locale="ja-JP")

    await post(consenting_bot, message("さん、日本の首都は？"))
    await post(consenting_bot, message("さん、同意します"))
    await post(consenting_bot, message("さん /help"))

    _question, thanks, answer, help_text = (m["text"] for m in teams.messages())
    assert thanks == localize("consent_accepted_pending", "ja-JP")
    assert "日本の首都は？" in answer
    assert "/new" in help_text and "/usage" in help_text
    assert await stored_user_texts(consenting_bot) == ["日本の首都は？"]
