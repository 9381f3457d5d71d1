"""Malformed Teams activities that are still valid JSON activities: a member list holding null,
a card action whose `action` is not an object, attachments that are not all objects. Each gets
its 2xx or a 400, never the unhandled-error path (an ERROR log line with a stack trace)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import quiet_noisy_loggers
from tests.support import settle
from tests.teams.activities import BOT_ID, bot_installed_personal, personal_message, team_update
from tests.teams.channel import TeamsChannel


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_null_members_in_a_conversation_update_are_skipped_and_the_bot_is_still_found(
    bot: TestClient[Any, Any], teams: TeamsChannel, caplog: pytest.LogCaptureFixture
) -> None:
    added = bot_installed_personal(teams.url)
    added["membersAdded"] = [None, {"id": BOT_ID}]
    assert (await bot.post("/api/messages", json=added)).status == 202
    [welcome] = await teams.wait_for_messages(1)
    assert "/help" in welcome["text"]

    for members in ("membersAdded", "membersRemoved"):
        update = team_update(teams.url, added=["29:someone"])
        update[members] = [None]
        assert (await bot.post("/api/messages", json=update)).status == 202
    await settle(bot)
    await asyncio.sleep(0.2)

    assert len(teams.messages()) == 1
    assert errors(caplog) == []


@pytest.mark.parametrize("action", ["Action.Execute", ["Action.Execute"], 7, True])
async def test_a_card_action_whose_action_is_not_an_object_gets_a_400_card_error(
    bot: TestClient[Any, Any],
    teams: TeamsChannel,
    caplog: pytest.LogCaptureFixture,
    action: Any,
) -> None:
    invoke = bot_installed_personal(teams.url)
    invoke.update(type="invoke", name="adaptiveCard/action", value={"action": action})
    del invoke["membersAdded"]

    response = await bot.post("/api/messages", json=invoke)

    assert response.status == 400
    body = await response.json()
    assert body["type"] == "application/vnd.microsoft.error"
    assert body["value"]["code"] == "BadRequest" and body["value"]["message"]
    assert errors(caplog) == []


@pytest.mark.parametrize(
    "attachments", [[None], [None, {"contentType": "image/png"}], ["junk"], [7]]
)
async def test_a_message_whose_attachments_are_not_all_objects_gets_a_400_and_no_turn(
    bot: TestClient[Any, Any],
    teams: TeamsChannel,
    caplog: pytest.LogCaptureFixture,
    attachments: list[Any],
) -> None:
    message = personal_message(teams.url, "hello", attachments=attachments)

    response = await bot.post("/api/messages", json=message)

    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "bad_request"
    assert error["message"] == "'attachments' must be a list of objects"
    await settle(bot)
    assert teams.messages() == []
    assert errors(caplog) == []


async def test_keys_a_sender_made_up_are_never_quoted_in_the_log(
    bot: TestClient[Any, Any],
    teams: TeamsChannel,
    caplog: pytest.LogCaptureFixture,
    quieted_loggers: None,
) -> None:
    # msrest, which reads a card action's value, warns of each unknown key, naming it.
    invoke = bot_installed_personal(teams.url)
    invoke.update(
        type="invoke",
        name="adaptiveCard/action",
        value={"action": {"type": "Action.Execute"}, "my salary is 90k": 1},
    )
    del invoke["membersAdded"]

    with caplog.at_level(logging.DEBUG):
        await bot.post("/api/messages", json=invoke)
        await settle(bot)

    assert not [r for r in caplog.records if "salary" in r.getMessage()]


@pytest.fixture
def quieted_loggers() -> Iterator[None]:
    """The loggers `python app.py` quiets, as it quiets them; as they were afterwards."""
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    quiet_noisy_loggers()
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("msrest").setLevel(levels.get("msrest", logging.NOTSET))
