"""Attachments the assistant does not read: a question sent with a picture or a file is answered
from its text, with a note saying so (shown, never stored as the model's words), and a picture
pasted in a channel, which Teams sends only inside its HTML copy of the message, gets the
attachment notice rather than "empty"."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from chat.texts import localize
from storage.ids import safe_id
from storage.models import Role
from tests.teams.activities import (
    CHANNEL_ID,
    PERSONAL_CONVERSATION,
    channel_message,
    personal_message,
)
from tests.teams.channel import TeamsChannel

# Shapes as Teams sends them (ids made up): a pasted image in a 1:1 chat comes as image/* with
# an HTML copy holding its <img>; in channels and group chats only the HTML copy comes.
PASTED_IMAGE = {
    "contentType": "image/*",
    "contentUrl": "https://smba.trafficmanager.net/amer/v3/attachments/0-wus-d1-abc/views/original",
}
PASTED_IMAGE_HTML = {
    "contentType": "text/html",
    "content": '<div><div><span><img height="250" src="https://us-api.asm.skype.com/v1/objects/'
    '0-wus-d1-abc/views/imgo" width="250" itemscope="" itemtype="http://schema.skype.com/AMSImage"'
    ' style="vertical-align:bottom"></span></div></div>',
}
FILE = {
    "contentType": "application/vnd.microsoft.teams.file.download.info",
    "contentUrl": "https://contoso.sharepoint.com/personal/aiko/Documents/report.docx",
    "name": "report.docx",
    "content": {
        "downloadUrl": "https://contoso.sharepoint.com/x",
        "uniqueId": "1",
        "fileType": "docx",
    },
}
EMOJI_HTML = {
    "contentType": "text/html",
    "content": '<p>thanks <img alt="😀" itemscope="" itemtype="http://schema.skype.com/Emoji" '
    'itemid="smile" src="https://statics.teams.cdn.office.net/evergreen-assets/personal-expressions'
    '/v2/assets/emoticons/smile/default/20_f.png" width="20" height="20"> what is 2+2?</p>',
}


async def stored(bot: TestClient[Any, Any], conversation: str) -> list[Any]:
    return await bot.server.app[STORE].conversation_messages(safe_id(f"msteams:{conversation}"))


@pytest.mark.parametrize(
    ("attachments", "locale"),
    [([PASTED_IMAGE, PASTED_IMAGE_HTML], "en-US"), ([FILE], "en-US"), ([FILE], "ja-JP")],
    ids=["picture", "file", "file_ja"],
)
async def test_a_question_with_an_attachment_is_answered_with_a_note_that_only_its_text_was_read(
    bot: TestClient[Any, Any], teams: TeamsChannel, attachments: list[Any], locale: str
) -> None:
    activity = personal_message(
        teams.url, "what is in this picture?", locale=locale, attachments=attachments
    )
    assert (await bot.post("/api/messages", json=activity)).status == 202
    [reply] = await teams.wait_for_messages(1)

    note = localize("attachments_not_sent", locale)
    answer, _, shown_note = reply["text"].rpartition("\n\n")
    assert shown_note == note
    assert "«what is in this picture?»" in answer  # the model got the text
    # The note is the app's, not the model's: the stored answer (next turn's context) is
    # without it.
    prompt, stored_answer = await stored(bot, PERSONAL_CONVERSATION)
    assert (prompt.role, stored_answer.role) == (Role.USER, Role.ASSISTANT)
    assert prompt.text == "what is in this picture?"
    assert stored_answer.text == answer
    assert note not in stored_answer.text


async def test_a_picture_pasted_in_a_channel_counts_as_an_attachment_and_an_emoji_does_not(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    with_emoji = channel_message(
        teams.url, "<at>Contoso Assistant</at> thanks 😀 what is 2+2?", root_message_id="301"
    )
    with_emoji["attachments"] = [EMOJI_HTML]
    assert (await bot.post("/api/messages", json=with_emoji)).status == 202
    [answer] = await teams.wait_for_messages(1)
    assert localize("attachments_not_sent", "en-US") not in answer["text"]

    picture_only = channel_message(teams.url, "<at>Contoso Assistant</at>", root_message_id="302")
    picture_only["attachments"] = [PASTED_IMAGE_HTML]
    assert (await bot.post("/api/messages", json=picture_only)).status == 202
    [_, notice] = await teams.wait_for_messages(2)

    assert notice["text"] == localize("unsupported_attachment", "en-US")
    assert await stored(bot, f"{CHANNEL_ID};messageid=302") == []
