"""Which messages the bot sends in a Teams group chat @mention the person they answer
(bot.teams.address_to_sender): notices in Markdown, from a message of someone with a name."""

from __future__ import annotations

from botbuilder.schema import Activity, ChannelAccount, ConversationAccount

from bot.replies import reply_activity
from bot.teams import address_to_sender
from chat.service import Reply


def incoming(kind: str = "groupChat", name: str | None = "Aiko Tanaka") -> Activity:
    return Activity(
        type="message",
        channel_id="msteams",
        conversation=ConversationAccount(id="19:g@thread.v2", conversation_type=kind),
        from_property=ChannelAccount(id="29:aiko", name=name),
        text="<at>Bot</at> hi",
    )


def sent(reply: Reply, to: Activity) -> Activity:
    activity = reply_activity(reply)
    address_to_sender(activity, to)
    return activity


def test_a_markdown_notice_in_a_group_chat_mentions_the_person_it_answers() -> None:
    notice = sent(Reply("Please wait a minute.", is_notice=True), incoming())
    assert notice.text == "<at>Aiko Tanaka</at> Please wait a minute."
    [mention] = notice.entities
    assert mention.serialize() == {
        "type": "mention",
        "text": "<at>Aiko Tanaka</at>",
        "mentioned": {"id": "29:aiko", "name": "Aiko Tanaka"},
    }


def test_an_answer_a_channel_reply_a_plain_notice_and_a_nameless_sender_get_no_mention() -> None:
    assert sent(Reply("An answer.", ai_generated=True), incoming()).text == "An answer."
    assert sent(Reply("Wait.", is_notice=True), incoming(kind="channel")).text == "Wait."
    # A plain-text notice quotes the user's words: no markup goes in front of it.
    assert sent(Reply('Not answered: "hi"', plain=True), incoming()).text == 'Not answered: "hi"'
    # No name: a mention would show the sender's raw channel id to everyone.
    assert sent(Reply("Wait.", is_notice=True), incoming(name=None)).text == "Wait."
    assert sent(Reply("Wait.", is_notice=True), incoming(name="  ")).text == "Wait."


def test_a_name_with_markup_characters_is_escaped_in_the_mention_tag() -> None:
    notice = sent(Reply("Wait.", is_notice=True), incoming(name="R<&>D"))
    assert notice.text == "<at>R&lt;&amp;&gt;D</at> Wait."
