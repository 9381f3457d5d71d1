"""The chat page's Stop ends the stream with a final message of the app's own: it keeps of the text
shown what the content filter has cleared. With the asynchronous filter, whose verdicts come
after the text, a Stop pressed before any arrived replaces that text with a notice, as the
answer is kept for reviewers only (chat.service `_store_stopped`). Real HTTP through the built-in
Direct Line, the embedded simulator streaming slowly in Azure's wire shapes."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from chat.texts import localize
from storage.models import MessageStatus
from tests.conftest import AppFactory
from tests.support import settle
from tests.webchat.support import DirectLineSession, is_final, open_session, stored_messages

TOKEN_SECRET = "a-test-token-secret-that-is-long-enough-0123456789"


async def stopped_answer(
    client: TestClient[Any, Any], session: DirectLineSession, text: str
) -> tuple[str, dict[str, Any]]:
    """The text the first streamed update showed, and the final message after Stop."""
    await session.say(text)
    update = await session.wait_streamed(
        lambda a: (
            a["type"] == "typing" and a.get("channelData", {}).get("streamType") == "streaming"
        )
    )
    stream_id = update["channelData"]["streamId"]
    response = await session.post(
        {"type": "event", "name": "stopStreaming", "value": {"streamId": stream_id}}
    )
    assert response.status == 200, await response.text()
    final = await session.wait_streamed(is_final)
    await settle(client)
    return str(update["text"]), final


async def slow_chat(make_app: AppFactory) -> tuple[TestClient[Any, Any], DirectLineSession]:
    client = await make_app(
        WEBCHAT_TOKEN_SECRET=TOKEN_SECRET,
        AZURE_OPENAI_ENDPOINT="",
        SIMULATOR_TOKENS_PER_SECOND="40",
    )
    session = await open_session(client)
    await session.connect()
    return client, session


async def test_stop_before_the_asynchronous_filter_judged_the_text_replaces_it_with_a_notice(
    make_app: AppFactory,
) -> None:
    client, session = await slow_chat(make_app)
    try:
        # The filter far behind: its verdicts come only after all the text.
        shown, final = await stopped_answer(
            client, session, "Write a lot [sim:long] [cf:async-late-pass]"
        )
    finally:
        await session.close()

    assert shown
    assert final["text"] == localize("answer_stopped_unchecked", "en-US")
    assert not any(e.get("type") == "https://schema.org/Message" for e in final.get("entities", []))
    [_, answer] = await stored_messages(client, session.conversation_id)
    assert (answer.status, answer.error, answer.text) == (
        MessageStatus.ERROR,
        "stopped_unjudged",
        "",
    )
    assert answer.withheld_text is not None and answer.withheld_text.startswith(shown)


async def test_stop_keeps_on_screen_what_the_asynchronous_filter_had_cleared(
    make_app: AppFactory,
) -> None:
    client, session = await slow_chat(make_app)
    try:
        # The filter a little behind the text, as Azure's asynchronous mode is.
        _, final = await stopped_answer(client, session, "Write a lot [sim:long] [cf:async-pass]")
    finally:
        await session.close()

    assert final["text"] and final["text"] != localize("answer_stopped_unchecked", "en-US")
    [_, answer] = await stored_messages(client, session.conversation_id)
    assert (answer.status, answer.text) == (MessageStatus.PARTIAL, final["text"])
    assert answer.withheld_text is None
