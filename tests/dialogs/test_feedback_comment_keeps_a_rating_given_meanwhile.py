"""A /feedback comment reads the answer's rating and writes it back with the comment: a button's
rating stored in between is the user's latest (and already counted), and must stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from chat.service import TurnInput
from dialogs.commands import Commands, parse_command
from storage.base import Store
from storage.ids import safe_id
from storage.models import Feedback, FeedbackChange, Message, Role
from storage.ratings import Ratings
from storage.sqlite import SqliteStore

CONVERSATION_KEY = "msteams:a:personal-1"


class ClickBeforeTheCommentLands:
    """The store, with a thumbs-down clicked just before the comment's first write."""

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
                conversation_id, message_id, Feedback(reaction="dislike")
            )
        return await self._store.set_feedback(conversation_id, message_id, feedback)


async def test_a_comment_keeps_a_rating_clicked_while_it_was_written(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    try:
        conversation_id = safe_id(CONVERSATION_KEY)
        answer = Message(
            id="answer-1",
            conversation_id=conversation_id,
            seq=2,
            role=Role.ASSISTANT,
            text="An answer",
            feedback=Feedback(reaction="like"),
        )
        await store.add_message(answer)
        clicking = ClickBeforeTheCommentLands(store)
        commands = Commands(
            cast(Any, clicking), cast(Any, None), Ratings(cast(Any, clicking), store)
        )
        parsed = parse_command("/feedback too long")
        assert parsed is not None

        await commands.run(parsed, TurnInput(CONVERSATION_KEY, "act-9", "/feedback too long", "u"))

        stored = await store.get_message(conversation_id, "answer-1")
        assert clicking.clicked
        assert stored is not None and stored.feedback is not None
        assert (stored.feedback.reaction, stored.feedback.text) == ("dislike", "too long")
    finally:
        await store.close()
