"""A /feedback comment is added to the comment already on the answer (a thumbs-down's, or an
earlier /feedback's), so reviewers read both: the web chat's thumbs through the built-in Direct
Line, then the command, on both stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient

from chat.service import TurnInput
from config import Settings
from dialogs.commands import Commands, parse_command
from storage.base import Store
from storage.ids import safe_id
from storage.models import MAX_FEEDBACK_CHARS, Feedback, FeedbackChange, Message, Role
from storage.ratings import Ratings
from storage.sqlite import SqliteStore
from tests.conftest import AppFactory
from tests.webchat.support import DirectLineSession, open_session, stored_messages

TOKEN_SECRET = "a-test-token-secret-that-is-long-enough-0123456789"
FEEDBACK_EVENT = {"type": "event", "name": "webchat:activity-status/feedback"}


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:
    return settings_on_store


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)


async def disliked_answer(client: TestClient[Any, Any], comment: str) -> DirectLineSession:
    """A web chat conversation whose one answer the user rated thumbs-down with `comment`."""
    session = await open_session(client)
    await session.say("What is the travel policy?")
    [reply] = await session.wait_for_bot_messages(1)
    [label] = [e for e in reply["entities"] if e.get("@id") == ""]
    _, dislike = label["potentialAction"]
    response = await session.post(
        {**FEEDBACK_EVENT, "entities": [{**dislike, "description": comment}]}
    )
    assert response.status == 200, await response.text()
    return session


async def command(session: DirectLineSession, text: str, locale: str = "en-US") -> str:
    before = len(await session.wait_for_bot_messages(0))
    await session.say(text, locale=locale)
    replies = await session.wait_for_bot_messages(before + 1)
    return str(replies[-1]["text"])


async def feedback_on_the_answer(session: DirectLineSession) -> tuple[str | None, str]:
    [_, answer] = await stored_messages(session.client, session.conversation_id)
    assert answer.role is Role.ASSISTANT and answer.feedback is not None
    return answer.feedback.reaction, answer.feedback.text


async def test_feedback_after_a_thumbs_down_with_a_comment_keeps_both_comments_and_the_dislike(
    client: TestClient[Any, Any],
) -> None:
    session = await disliked_answer(client, "too vague")

    reply = await command(session, "/feedback answer was outdated")

    assert "Thank you for your feedback" in reply
    assert await feedback_on_the_answer(session) == (
        "dislike",
        "too vague | answer was outdated",
    )
    await command(session, "/フィードバック リンクが切れています", locale="ja-JP")
    assert await feedback_on_the_answer(session) == (
        "dislike",
        "too vague | answer was outdated | リンクが切れています",
    )
    # The same comment again (sent twice, or redelivered after a restart) adds nothing.
    await command(session, "/feedback リンクが切れています")
    assert (await feedback_on_the_answer(session))[1].count("リンクが切れています") == 1


async def test_feedback_after_a_comment_of_the_maximum_length_cuts_the_oldest_text(
    client: TestClient[Any, Any],
) -> None:
    earlier = "start " + "x" * (MAX_FEEDBACK_CHARS - 12) + " end."
    session = await disliked_answer(client, earlier)
    assert (await feedback_on_the_answer(session))[1] == earlier

    await command(session, "/feedback still wrong")

    reaction, text = await feedback_on_the_answer(session)
    assert reaction == "dislike"
    assert len(text) == MAX_FEEDBACK_CHARS
    assert text.startswith("…x") and text.endswith("x end. | still wrong")


class CommentedClickBeforeTheCommentLands:
    """The store, with a thumbs-down and its comment clicked just before the /feedback write."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.clicked = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def set_feedback(
        self, conversation_id: str, message_id: str, feedback: Feedback
    ) -> FeedbackChange | None:
        if not self.clicked:
            self.clicked = True
            await self._store.set_feedback(
                conversation_id, message_id, Feedback(reaction="dislike", text="too vague")
            )
        return await self._store.set_feedback(conversation_id, message_id, feedback)


async def test_feedback_keeps_a_comment_clicked_while_it_was_written(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    try:
        conversation_id = safe_id("msteams:a:personal-1")
        await store.add_message(
            Message(id="answer-1", conversation_id=conversation_id, seq=2, role=Role.ASSISTANT)
        )
        clicking = CommentedClickBeforeTheCommentLands(store)
        parsed = parse_command("/feedback too long")
        assert parsed is not None

        await Commands(
            cast(Any, clicking), cast(Any, None), Ratings(cast(Any, clicking), store)
        ).run(parsed, TurnInput("msteams:a:personal-1", "act-9", "/feedback too long", "u"))

        stored = await store.get_message(conversation_id, "answer-1")
        assert clicking.clicked and stored is not None and stored.feedback is not None
        feedback = (stored.feedback.reaction, stored.feedback.text)
        assert feedback == ("dislike", "too vague | too long")
    finally:
        await store.close()
