"""A thumbs vote for an answer the store no longer holds (its conversation or user was deleted
while the page still showed it) is not stored, and the page is told so (it thanks only for a
stored vote), instead of an invoke answered 200 for nothing."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from app import STORE
from tests.conftest import AppFactory
from tests.webchat.support import open_session

TOKEN_SECRET = "a-test-token-secret-that-is-long-enough-0123456789"
FEEDBACK_EVENT = {"type": "event", "name": "webchat:activity-status/feedback"}


async def test_a_vote_for_an_answer_deleted_meanwhile_is_refused_not_thanked(
    make_app: AppFactory,
) -> None:
    client: TestClient[Any, Any] = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET)
    session = await open_session(client)
    await session.say("What is the travel policy?")
    [reply] = await session.wait_for_bot_messages(1)
    [label] = [e for e in reply["entities"] if e.get("@id") == ""]
    _, dislike = label["potentialAction"]
    await client.server.app[STORE].delete_user(session.user_id)

    response = await session.post({**FEEDBACK_EVENT, "entities": [dislike]})

    assert response.status >= 400, await response.text()
