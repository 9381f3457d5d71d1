"""The consent step's replies in Teams go out only once the bot state they speak of is saved: the
question (with the message waiting for its answer), the thanks for an acceptance, the reply to a
decline. When that state cannot be saved (another process holds the SQLite write lock, or the
store fails a write), the user gets only the "could not be saved, send it again" notice, in
their language, and sending again works as if the failed message had never come: nobody accepts
twice, and the message that waits for the answer is still answered."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import SETTINGS
from chat.texts import localize
from tests.conftest import FaultyAppFactory
from tests.faults import FaultKind, FaultyStore, Matcher
from tests.support import settle
from tests.teams.activities import personal_message
from tests.teams.channel import TeamsChannel

POLICY_EN = "Use the assistant for work only."
POLICY_JA = "アシスタントは業務にのみ使用してください。"


@pytest.fixture
async def consenting_bot(
    make_faulty_app: FaultyAppFactory, tmp_path: Path
) -> tuple[TestClient[Any, Any], FaultyStore]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: '1'\ntext:\n  en: '{POLICY_EN}'\n  ja: '{POLICY_JA}'\n", encoding="utf-8"
    )
    return await make_faulty_app(USAGE_POLICY_FILE=str(policy))


@contextmanager
def database_locked(bot: TestClient[Any, Any]) -> Iterator[None]:
    """Another connection to the app's SQLite file holds the write lock (`BEGIN IMMEDIATE`), as
    another process would: reads go on (WAL); every write waits out the busy timeout and fails."""
    db = sqlite3.connect(str(bot.server.app[SETTINGS].sqlite_file), isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


async def say(bot: TestClient[Any, Any], teams: TeamsChannel, text: str, locale: str) -> list[str]:
    """Posts a personal-chat message; the texts of the messages the user got for it."""
    before = len(teams.messages())
    response = await bot.post("/api/messages", json=personal_message(teams.url, text, locale))
    assert response.status == 202
    await settle(bot, within=30)
    return [str(m.get("text")) for m in teams.messages()[before:]]


def not_saved(locale: str) -> str:
    """The store notice as the user gets it, its reference replaced by "REF"."""
    return localize("store_unavailable", locale, ref="REF")


def without_ref(texts: list[str]) -> list[str]:
    return [re.sub(r"\b[0-9a-f]{12}\b", "REF", text) for text in texts]


def is_question(text: str, locale: str) -> bool:
    policy = POLICY_JA if locale.startswith("ja") else POLICY_EN
    accept, decline = (localize(f"consent_{k}_label", locale) for k in ("accept", "decline"))
    question = localize("consent_question", locale, accept=accept, decline=decline)
    return policy in text and text.endswith(question)


@pytest.mark.parametrize(
    ("locale", "words", "accept"),
    [
        ("en-US", "What is the capital of France?", "I accept"),
        ("ja-JP", "日本の首都は？", "同意する"),
    ],
    ids=["en", "ja"],
)
async def test_first_message_while_the_database_is_locked_gets_only_the_not_saved_notice(
    consenting_bot: tuple[TestClient[Any, Any], FaultyStore],
    teams: TeamsChannel,
    locale: str,
    words: str,
    accept: str,
) -> None:
    bot, _ = consenting_bot
    with database_locked(bot):
        got = await say(bot, teams, words, locale)
    # Not the question: its state (the question asked, the message waiting) was not saved, so
    # an answer to it would not be taken as one.
    assert without_ref(got) == [not_saved(locale)]

    # Sent again, it is asked about once, and one acceptance answers it.
    [question] = await say(bot, teams, words, locale)
    assert is_question(question, locale)
    thanks, answer = await say(bot, teams, accept, locale)
    assert thanks == localize("consent_accepted_pending", locale)
    assert words in answer


def _dialog_state(operation: str, args: tuple[Any, ...]) -> bool:
    return "dialog_state" in args[1]


def _acceptance(operation: str, args: tuple[Any, ...]) -> bool:
    return "usage_policy" in args[1]


@pytest.mark.parametrize(
    "failing",
    [None, _dialog_state, _acceptance],
    ids=["database_locked", "dialog_state_write_fails", "acceptance_write_fails"],
)
async def test_acceptance_that_cannot_be_saved_is_not_thanked_and_the_waiting_message_stays(
    consenting_bot: tuple[TestClient[Any, Any], FaultyStore],
    teams: TeamsChannel,
    failing: Matcher | None,
) -> None:
    bot, store = consenting_bot
    [question] = await say(bot, teams, "What is the capital of France?", "en-US")
    assert is_question(question, "en-US")

    if failing is None:
        with database_locked(bot):
            got = await say(bot, teams, "I accept", "en-US")
    else:
        store.fail(FaultKind.ERROR, "write_state", when=failing)
        got = await say(bot, teams, "I accept", "en-US")
        store.clear()
    assert without_ref(got) == [not_saved("en-US")]

    # Answering again is the acceptance (not a first message that is an answer, which would
    # only show the policy again), and the message that waited is answered.
    thanks, answer = await say(bot, teams, "I accept", "en-US")
    assert thanks == localize("consent_accepted_pending", "en-US")
    assert "capital of France" in answer


@pytest.mark.parametrize(("locale", "decline"), [("en-US", "I decline"), ("ja-JP", "同意しない")])
async def test_decline_that_cannot_be_saved_gets_only_the_not_saved_notice(
    consenting_bot: tuple[TestClient[Any, Any], FaultyStore],
    teams: TeamsChannel,
    locale: str,
    decline: str,
) -> None:
    bot, store = consenting_bot
    [question] = await say(bot, teams, "Summarize our strategy", locale)
    assert is_question(question, locale)

    store.fail(FaultKind.ERROR, "write_state")
    got = await say(bot, teams, decline, locale)
    store.clear()
    assert without_ref(got) == [not_saved(locale)]

    accept = localize("consent_accept_label", locale)
    assert await say(bot, teams, decline, locale) == [
        localize("consent_declined", locale, accept=accept)
    ]
