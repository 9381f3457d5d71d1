"""A Teams user deletes or edits a message they sent the bot (messageDelete `softDeleteMessage`,
messageUpdate `editMessage` / `undeleteMessage`), over real HTTP on both stores, with the model
requests recorded at the network edge: a deleted prompt's text is erased from the store and
leaves the model's context with its answer (which quotes it: the simulator's answers do), the
conversation's title goes when it was that prompt's words, and the admin transcript shows only
that the user deleted a message; only the author's own message is withdrawn; an edit puts the
new text in place of the old without an answer; a restored message stays withdrawn."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import STORE
from config import Settings
from storage.ids import message_id, safe_id
from storage.models import Message, MessageStatus
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import FaultyStore, assistant_message_writes, user_message_writes
from tests.reliability.support import ModelGateway
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
from tests.support import eventually, settle
from tests.teams.activities import (
    GROUP_CHAT,
    USER_AAD,
    group_message,
    mention,
    message_deleted,
    message_edited,
    message_undeleted,
    personal_message,
)
from tests.teams.channel import TeamsChannel
from tests.teams.test_teams_streaming import CONVERSATION_ID

SECRET = "hunter2-canary-7Qf3"
GROUP_CONVERSATION_ID = safe_id(f"msteams:{GROUP_CHAT}")
OTHER_AAD = "aaaaaaaa-4d5e-4f60-8a9b-0c1d2e3f4a5b"


class ModelRequests(ModelGateway):
    """Records the messages of every request the app sends the model (`url`: where it listens)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.requests: list[list[dict[str, Any]]] = []
        self.url = ""

    def seen(self, body: bytes) -> None:
        if body:
            self.requests.append(json.loads(body)["messages"])

    def last_user_texts(self) -> list[str]:
        return [m["content"] for m in self.requests[-1] if m["role"] == "user"]


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


@pytest.fixture
async def model(simulator_url: str, aiohttp_server: Any) -> AsyncIterator[ModelRequests]:
    proxy = ModelRequests(simulator_url)
    server: TestServer = await aiohttp_server(proxy.app())
    proxy.url = str(server.make_url("")).rstrip("/")
    yield proxy


@pytest.fixture
async def bot(
    make_app: AppFactory, model: ModelRequests, caplog: pytest.LogCaptureFixture
) -> TestClient[Any, Any]:
    """The app, its model behind the recording proxy, with an Admin signed in locally."""
    caplog.set_level(logging.DEBUG)
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url)
    await sign_in_locally(client, caplog)
    return client


async def send(bot: TestClient[Any, Any], teams: TeamsChannel, activity: dict[str, Any]) -> None:
    """One message, answered and its turn settled."""
    count = len(teams.messages())
    response = await bot.post("/api/messages", json=activity)
    assert response.status == 202
    await teams.wait_for_messages(count + 1)
    await settle(bot)


async def post(bot: TestClient[Any, Any], activity: dict[str, Any]) -> None:
    """A deletion or an edit: acknowledged, run in the conversation's order, never answered."""
    response = await bot.post("/api/messages", json=activity)
    assert response.status == 202, await response.text()
    await settle(bot)


async def stored(
    bot: TestClient[Any, Any], conversation_id: str = CONVERSATION_ID
) -> list[Message]:
    return await bot.server.app[STORE].conversation_messages(conversation_id)


def prompt_of(messages: list[Message], activity: dict[str, Any]) -> Message:
    wanted = message_id(messages[0].conversation_id, activity["id"], "user")
    [found] = [m for m in messages if m.id == wanted]
    return found


async def transcript_items(bot: TestClient[Any, Any], conversation_id: str) -> list[str]:
    """The admin transcript page's messages, each from its classes on (`user status-...`)."""
    response = await bot.get(f"/admin/conversations/{conversation_id}")
    assert response.status == 200
    return (await response.text()).split('<li class="message ')[1:]


async def test_a_deleted_prompt_is_erased_and_neither_it_nor_its_answer_reaches_the_model_again(
    bot: TestClient[Any, Any],
    teams: TeamsChannel,
    model: ModelRequests,
    caplog: pytest.LogCaptureFixture,
) -> None:
    leaked = personal_message(teams.url, f"my password is {SECRET}, fix this script")
    await send(bot, teams, leaked)
    await send(bot, teams, personal_message(teams.url, "and make it shorter"))
    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and SECRET in summary.title
    replies = len(teams.messages())

    await post(bot, message_deleted(leaked))

    assert len(teams.messages()) == replies, "a deletion is not answered"
    messages = await stored(bot)
    prompt = prompt_of(messages, leaked)
    assert (prompt.status, prompt.text, prompt.tokens) == (MessageStatus.WITHDRAWN, "", 0)
    assert prompt.revised_at is not None
    [answer] = [m for m in messages if m.reply_to_id == prompt.id]
    assert SECRET in answer.text, "the simulator's answer quotes the prompt"
    assert answer.prompt_changed
    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.title == ""
    assert summary.message_count == 4

    await send(bot, teams, personal_message(teams.url, "what did I tell you earlier?"))
    sent = json.dumps(model.requests[-1])
    assert SECRET not in sent, "neither the prompt nor the answer quoting it"
    assert model.last_user_texts() == ["and make it shorter", "what did I tell you earlier?"]
    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.title == "what did I tell you earlier?"

    items = await transcript_items(bot, CONVERSATION_ID)
    [withdrawn] = [item for item in items if item.startswith("user status-withdrawn")]
    assert 'data-testid="message-withdrawn"' in withdrawn and "password" not in withdrawn
    assert sum('data-testid="answer-of-changed-prompt"' in item for item in items) == 1
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    assert all(SECRET not in str(record.__dict__) for record in caplog.records)


async def test_a_delete_sent_while_its_answer_streams_waits_for_the_turn(
    bot: TestClient[Any, Any], teams: TeamsChannel, model: ModelRequests
) -> None:
    leaked = personal_message(teams.url, f"[sim:long] my key is {SECRET}")
    count = len(teams.messages())
    response = await bot.post("/api/messages", json=leaked)
    assert response.status == 202

    await post(bot, message_deleted(leaked))

    await teams.wait_for_messages(count + 1)
    messages = await stored(bot)
    prompt = prompt_of(messages, leaked)
    assert (prompt.status, prompt.text) == (MessageStatus.WITHDRAWN, "")
    [answer] = [m for m in messages if m.reply_to_id == prompt.id]
    assert answer.prompt_changed
    await send(bot, teams, personal_message(teams.url, "next"))
    assert SECRET not in json.dumps(model.requests[-1])


async def test_only_the_author_withdraws_a_group_chat_message(
    bot: TestClient[Any, Any], teams: TeamsChannel, model: ModelRequests
) -> None:
    question = group_message(
        teams.url, "<at>Contoso Assistant</at> what is our Q3 target?", mentions=[mention()]
    )
    await send(bot, teams, question)
    someone_else = message_deleted(question, at="2026-11-21T10:01:00.000Z")
    someone_else["from"] = {"id": "29:2ZyXwVu-user2", "name": "Ben Sato", "aadObjectId": OTHER_AAD}

    await post(bot, someone_else)

    messages = await stored(bot, GROUP_CONVERSATION_ID)
    prompt = prompt_of(messages, question)
    assert (prompt.status, prompt.text) == (MessageStatus.COMPLETE, "what is our Q3 target?")

    await post(bot, message_deleted(question))

    messages = await stored(bot, GROUP_CONVERSATION_ID)
    assert prompt_of(messages, question).status is MessageStatus.WITHDRAWN
    summary = await bot.server.app[STORE].find_summary(GROUP_CONVERSATION_ID)
    assert summary is not None
    assert summary.user_id == f"shared:msteams:{GROUP_CHAT}" and summary.title == ""
    assert prompt_of(messages, question).user_id == USER_AAD


async def test_an_edit_replaces_the_text_the_model_reads_and_is_not_answered(
    bot: TestClient[Any, Any], teams: TeamsChannel, model: ModelRequests
) -> None:
    question = personal_message(teams.url, f"Summarize the report, login {SECRET}")
    await send(bot, teams, question)
    [answer] = [m for m in await stored(bot) if m.role == "assistant"]
    assert SECRET in answer.text, "the simulator's answer quotes the prompt"
    replies = len(teams.messages())

    await post(bot, message_edited(question, "Summarize the Q4 report"))

    assert len(teams.messages()) == replies, "an edit is not answered"
    prompt = prompt_of(await stored(bot), question)
    assert (prompt.status, prompt.text) == (MessageStatus.COMPLETE, "Summarize the Q4 report")
    assert prompt.tokens > 0 and prompt.revised_at is not None
    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.title == "Summarize the Q4 report"

    await send(bot, teams, personal_message(teams.url, "thanks"))
    assert model.last_user_texts() == ["Summarize the Q4 report", "thanks"]
    assert SECRET not in json.dumps(model.requests[-1]), "nor the answer to the old text"
    items = await transcript_items(bot, CONVERSATION_ID)
    assert 'data-testid="message-edited"' in items[0] and "Q4" in items[0]
    assert 'data-testid="answer-of-changed-prompt"' in items[1]


async def test_an_edit_from_a_tenant_taken_off_the_allow_list_withdraws_the_old_words_only(
    make_app: AppFactory,
    model: ModelRequests,
    teams: TeamsChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.handler")
    before = await make_app(AZURE_OPENAI_ENDPOINT=model.url)
    question = personal_message(teams.url, "Summarize the report")
    await send(before, teams, question)
    await before.close()
    # Restarted with an allow-list that no longer holds the user's tenant.
    bot = await make_app(
        AZURE_OPENAI_ENDPOINT=model.url, ALLOWED_TENANT_IDS="11111111-2222-3333-4444-555555555555"
    )

    await post(bot, message_edited(question, "Words written after the refusal"))

    # Neither the new words are kept, nor the old ones the user took back.
    prompt = prompt_of(await stored(bot), question)
    assert (prompt.status, prompt.text) == (MessageStatus.WITHDRAWN, "")
    [refused] = [r for r in caplog.records if getattr(r, "event", "") == "revision_refused"]
    assert getattr(refused, "reason", "") == "tenant_refused"


async def test_an_edit_delivered_late_does_not_undo_a_newer_one(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    question = personal_message(teams.url, "first words")
    await send(bot, teams, question)
    older = message_edited(question, "second words", at="2026-11-21T10:01:00.000Z")
    newer = message_edited(question, "third words", at="2026-11-21T10:02:00.000Z")

    await post(bot, newer)
    await post(bot, older)
    await post(bot, newer)  # Teams sends it again: nothing changes

    assert prompt_of(await stored(bot), question).text == "third words"


async def test_a_deleted_message_restored_in_teams_stays_withdrawn(
    bot: TestClient[Any, Any], teams: TeamsChannel
) -> None:
    question = personal_message(teams.url, f"my pin is {SECRET}")
    await send(bot, teams, question)
    await post(bot, message_deleted(question))
    replies = len(teams.messages())

    await post(bot, message_undeleted(question))
    await post(bot, message_edited(question, f"my pin is {SECRET}", at="2026-11-21T10:07:00.000Z"))

    assert len(teams.messages()) == replies
    prompt = prompt_of(await stored(bot), question)
    assert (prompt.status, prompt.text) == (MessageStatus.WITHDRAWN, "")


async def bot_whose_store_refuses(
    make_faulty_app: FaultyAppFactory,
    model: ModelRequests,
    caplog: pytest.LogCaptureFixture,
    operation: str,
    when: Callable[[str, tuple[Any, ...]], bool] | None = None,
) -> tuple[TestClient[Any, Any], FaultyStore]:
    """The app over a store that refuses `operation` (those `when` picks) until cleared, with
    the kept writes' log lines captured."""
    caplog.set_level(logging.INFO)
    bot, store = await make_faulty_app(AZURE_OPENAI_ENDPOINT=model.url)
    store.fail("error", operation, when=when)
    return bot, store


async def kept_write_landed(caplog: pytest.LogCaptureFixture, kind: str) -> bool:
    async def written() -> bool:
        return any(
            getattr(r, "event", "") == "turn_write_recovered" and getattr(r, "kind", "") == kind
            for r in caplog.records
        )

    return await eventually(written, within=30)


async def test_a_deletion_reaches_the_prompt_status_the_store_still_refuses(
    make_faulty_app: FaultyAppFactory,
    teams: TeamsChannel,
    model: ModelRequests,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A blocked prompt's status write failed after the user was told (chat.kept); the store
    still refuses it when the user deletes the message, and takes it later: what lands then is
    the withdrawal, not the old words with their old status."""
    bot, store = await bot_whose_store_refuses(
        make_faulty_app, model, caplog, "replace_message", user_message_writes
    )
    leaked = personal_message(teams.url, f"[cf:violence] my password is {SECRET}")
    await send(bot, teams, leaked)

    await post(bot, message_deleted(leaked))
    store.clear()

    assert await kept_write_landed(caplog, "prompt_status")
    prompt = prompt_of(await stored(bot), leaked)
    assert (prompt.status, prompt.text) == (MessageStatus.WITHDRAWN, "")


async def test_a_deletion_marks_the_answer_the_store_still_refuses(
    make_faulty_app: FaultyAppFactory,
    teams: TeamsChannel,
    model: ModelRequests,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The answer's write failed after the user had it (chat.kept), and the simulator's answer
    quotes the prompt: deleted meanwhile, the prompt takes its answer out of the next turn's
    context both while the answer is kept and once it lands."""
    bot, store = await bot_whose_store_refuses(
        make_faulty_app, model, caplog, "add_message", assistant_message_writes
    )
    leaked = personal_message(teams.url, f"my password is {SECRET}")
    await send(bot, teams, leaked)

    await post(bot, message_deleted(leaked))
    await send(bot, teams, personal_message(teams.url, "and now?"))
    assert SECRET not in json.dumps(model.requests[-1]), "the kept answer quotes it"
    store.clear()

    assert await kept_write_landed(caplog, "answer")
    messages = await stored(bot)
    prompt = prompt_of(messages, leaked)
    [answer] = [m for m in messages if m.reply_to_id == prompt.id]
    assert SECRET in answer.text and answer.prompt_changed
    await send(bot, teams, personal_message(teams.url, "what did I say?"))
    assert SECRET not in json.dumps(model.requests[-1])


async def test_a_deletion_takes_its_title_off_the_summary_update_the_store_still_refuses(
    make_faulty_app: FaultyAppFactory,
    teams: TeamsChannel,
    model: ModelRequests,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first message's turn gives the conversation its title; that update failed and is
    kept. Deleted meanwhile, the message must not come back as the title when it lands."""
    bot, store = await bot_whose_store_refuses(
        make_faulty_app, model, caplog, "apply_summary_delta"
    )
    leaked = personal_message(teams.url, f"my password is {SECRET}")
    await send(bot, teams, leaked)

    await post(bot, message_deleted(leaked))
    store.clear()

    assert await kept_write_landed(caplog, "summary")
    summary = await bot.server.app[STORE].find_summary(CONVERSATION_ID)
    assert summary is not None and summary.message_count == 2
    assert SECRET not in summary.title and summary.title == ""
