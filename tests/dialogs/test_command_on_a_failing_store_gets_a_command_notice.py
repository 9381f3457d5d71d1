"""A command the store fails (a Cosmos server that stopped answering, a locked SQLite file) is
told the command could not be completed, in the user's language: not that a message "could not
be saved, so it was not sent to the assistant", which only a chat message can be. Both stores,
behind the fault wrapper (tests/faults.py), over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from chat.texts import localize
from config import Settings
from tests.conftest import FaultyAppFactory
from tests.controls.support import Chat, model_calls
from tests.support import RecordingConnector

REFERENCE = re.compile(r"(?:\(reference: |（参照番号: )([0-9a-f]{12})(?:\)|）)$")


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:
    return settings_on_store


def reference_in(text: str) -> str:
    found = REFERENCE.search(text)
    assert found is not None, text
    return found[1]


@pytest.mark.parametrize(
    ("locale", "commands"),
    [
        ("en-US", ["/usage", "/new", "/feedback too vague"]),
        ("ja-JP", ["/利用状況", "／新規", "/フィードバック 分かりにくいです"]),
    ],
)
async def test_a_command_the_store_fails_is_told_the_command_could_not_be_completed(
    make_faulty_app: FaultyAppFactory,
    connector: RecordingConnector,
    simulator_url: str,
    locale: str,
    commands: list[str],
) -> None:
    client, store = await make_faulty_app(QUOTA_USER_TOKENS_PER_DAY=50_000)
    chat = Chat(client, connector, locale=locale)
    await chat.send("A first question")
    calls = await model_calls(simulator_url)
    store.fail("timeout", "all", delay=0.05)

    for command in commands:
        reply = (await chat.send(command))["text"]

        assert reply == localize("command_unavailable", locale, ref=reference_in(reply)), command
    question = (await chat.send("A second question"))["text"]
    assert question == localize("store_unavailable", locale, ref=reference_in(question))
    assert await model_calls(simulator_url) == calls
    assert store.injected_total > 0

    store.clear()
    assert (await chat.send(commands[0]))["text"].startswith(localize("usage_title", locale))
