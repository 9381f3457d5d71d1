"""A deletion in the admin review also forgets what the built-in Direct Line keeps in memory of
the erased conversations (the activities it delivered, which a client may fetch again from
watermark 0 and a reloaded page resumes), in both of the deletion's passes. Over real HTTP and a
real WebSocket with the real bot, on both stores (tests/stores.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import SECOND_PASSES
from config import Settings
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
from tests.webchat.support import DirectLineSession, open_session, stored_messages
from tests.webchat.test_webchat_resume import USER_A, USER_B, ask_token, kept

TOKEN_SECRET = "a-lasting-token-secret-for-the-erasure-tests-0123456789"
ERASED = "ERASE-ME: my medical condition is X"
KEPT = "Bob's words stay"


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def client(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    """The app with the built-in Direct Line (App Service sign-in, a lasting token secret) and a
    locally signed-in Admin on the same client."""
    caplog.set_level(logging.INFO, logger="app")
    app = await make_app(WEBCHAT_TOKEN_SECRET=TOKEN_SECRET, WEBCHAT_AUTH_MODE="appservice")
    app.session.headers["X-CSRF-Token"] = await sign_in_locally(app, caplog)
    return app


async def _chat(client: TestClient[Any, Any], user: dict[str, str], text: str) -> DirectLineSession:
    """A conversation where `user` said `text` and got the answer."""
    session = await open_session(client, **user)
    await session.say(text)
    await session.wait_for_bot_messages(1)
    return session


def _texts(body: dict[str, Any]) -> list[str]:
    return [str(a.get("text", "")) for a in body["activities"]]


async def _closed(session: DirectLineSession) -> bool:
    """Whether the server closed the session's WebSocket (its reader ends)."""
    assert session._reader is not None
    with_timeout = asyncio.wait_for(asyncio.shield(session._reader), 5)
    try:
        await with_timeout
    except TimeoutError:
        return False
    return True


async def test_deleting_a_user_forgets_their_open_chats_so_no_fetch_or_reload_shows_their_words(
    client: TestClient[Any, Any],
) -> None:
    alice = await _chat(client, USER_A, ERASED)
    bob = await _chat(client, USER_B, KEPT)
    assert ERASED in _texts(await alice.get("0"))
    await alice.connect()

    deleted = await client.post(
        "/admin/api/users/delete",
        json={"user": alice.user_id, "confirm": alice.user_id, "reason": "erasure request 12"},
    )
    assert deleted.status == 200, await deleted.text()
    assert (await deleted.json())["deleted"]["messages"] >= 2
    assert await stored_messages(client, alice.conversation_id) == []

    # Her open WebSocket is closed; what she said can no longer be fetched from memory ...
    assert await _closed(alice)
    assert all("ERASE-ME" not in text for text in _texts(await alice.get("0")))
    # ... nor does a reload resume it: the page starts a new, empty conversation.
    again = await ask_token(client, resume=kept(alice), **USER_A)
    assert again["resumed"] is False
    assert again["conversationId"] != alice.conversation_id
    # Another user's open chat is untouched.
    assert KEPT in _texts(await bob.get("0"))
    await alice.close()


async def test_deleting_a_conversation_forgets_only_that_open_chat(
    client: TestClient[Any, Any],
) -> None:
    erased = await _chat(client, USER_A, ERASED)
    other = await _chat(client, USER_A, KEPT)
    stored_id = f"directline:{erased.conversation_id}"

    deleted = await client.post(
        f"/admin/api/conversations/{stored_id}/delete",
        json={"confirm": stored_id, "reason": "pasted a diagnosis"},
    )
    assert deleted.status == 200, await deleted.text()

    assert all("ERASE-ME" not in text for text in _texts(await erased.get("0")))
    assert (await ask_token(client, resume=kept(erased), **USER_A))["resumed"] is False
    # The same user's other chat stays open, and resumes.
    assert KEPT in _texts(await other.get("0"))
    assert (await ask_token(client, resume=kept(other), **USER_A))["resumed"] is True


async def test_the_second_pass_leaves_the_chat_the_person_went_on_with_after_the_first(
    client: TestClient[Any, Any],
) -> None:
    alice = await _chat(client, USER_A, "first words")
    deleted = await client.post(
        "/admin/api/users/delete",
        json={"user": alice.user_id, "confirm": alice.user_id, "reason": "erasure request 13"},
    )
    assert deleted.status == 200, await deleted.text()
    # Her page goes on after the first pass (its next poll reopens the conversation, as after a
    # restart): what she says after her erasure is hers, and stays, in the store
    # (storage/late.py) and in the open chat.
    await alice.say("LATE words after the first pass")
    await alice.wait_for_bot_messages(1)
    assert "LATE words after the first pass" in _texts(await alice.get("0"))

    # The shutdown runs the pending second pass early (admin/erasures.py).
    await client.server.app[SECOND_PASSES].close(at_most_seconds=20)

    stored = [m.text for m in await stored_messages(client, alice.conversation_id)]
    assert stored[0] == "LATE words after the first pass" and "first words" not in stored
    assert "LATE words after the first pass" in _texts(await alice.get("0"))
