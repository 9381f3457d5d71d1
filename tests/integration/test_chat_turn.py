"""A chat turn end to end over real HTTP: app + simulator + recording connector + SQLite."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import STORE
from chat.texts import localize
from chat.tokens import TokenCounter
from simulator import SimulatorConfig, run_simulator
from simulator.tokens import REASONING_TOKENS
from storage.ids import safe_id
from storage.models import MessageStatus, Role, user_ref
from tests.reliability.support import ModelGateway, sim_control
from tests.support import RecordingConnector, message_activity, settle
from tests.teams.activities import (
    PERSONAL_CONVERSATION,
    TENANT,
    USER_AAD,
    USER_ID,
    personal_message,
)


async def post(client: TestClient[Any, Any], activity: dict[str, Any], **headers: str) -> int:
    response = await client.post("/api/messages", json=activity, headers=headers)
    return response.status


async def test_message_is_acknowledged_then_answered_and_both_messages_are_stored(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    activity = message_activity(connector.url, "What is the capital of France?")

    assert await post(bot, activity) == 202
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)

    assert "What is the capital of France?" in reply["text"]
    assert reply["replyToId"] == activity["id"]
    assert reply["conversation"]["id"] == "conv-1"
    call = connector.calls[-1]
    assert call.activity_id == activity["id"]  # POST .../activities/{replyToId}

    store = bot.server.app[STORE]
    stored = await store.conversation_messages(safe_id("test:conv-1"))
    assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT]
    user, answer = stored
    assert user.text == "What is the capital of France?"
    assert user.activity_id == activity["id"]
    assert answer.text == reply["text"]
    assert answer.status is MessageStatus.COMPLETE
    assert answer.usage is not None and answer.usage.prompt > 0 and answer.usage.completion > 0
    assert answer.deployment == "default"
    assert answer.finish_reason == "stop"
    assert answer.latency_ms is not None
    assert answer.reply_to_id == user.id


async def test_a_message_asking_for_replies_in_the_response_is_answered_through_the_channel(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    """`deliveryMode: expectReplies` wants the replies in the HTTP response, but every message is
    acknowledged (202) before its turn runs; the answer goes to the serviceUrl like any other."""
    activity = message_activity(connector.url, "hello", deliveryMode="expectReplies")

    assert await post(bot, activity) == 202
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)

    _, answer = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert answer.text == reply["text"]
    assert answer.status is MessageStatus.COMPLETE


async def test_empty_model_answer_gets_a_notice_not_an_empty_message(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    activity = message_activity(connector.url, "Hm [sim:empty]", locale="ja-JP")

    assert await post(bot, activity) == 202
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)

    assert "アシスタントから回答がありませんでした" in reply["text"]
    assert "entities" not in reply or reply["entities"] in (None, [])  # a notice: no AI label
    user, answer = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert user.status is MessageStatus.COMPLETE
    assert (answer.status, answer.error, answer.text) == (MessageStatus.ERROR, "empty_answer", "")
    assert answer.finish_reason == "stop" and answer.deployment == "default"


async def test_redelivered_activity_gets_no_second_answer(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    activity = message_activity(connector.url, "Tell me a joke", activity_id="same-id")

    assert await post(bot, activity) == 202
    await connector.wait_for_messages(1)
    assert await post(bot, activity) == 202
    await settle(bot)

    assert len(connector.messages()) == 1
    stored = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert len(stored) == 2


async def test_redelivery_after_a_restart_is_recognised_by_the_store(
    make_app: Any, connector: RecordingConnector
) -> None:
    activity = message_activity(connector.url, "Hello there", activity_id="persisted-id")
    first = await make_app()
    await post(first, activity)
    await connector.wait_for_messages(1)
    await settle(first)
    await first.close()

    second = await make_app()  # same SQLite file, fresh in-memory dedupe
    assert await post(second, activity) == 202
    await settle(second)
    assert len(connector.messages()) == 1


async def test_turns_of_one_conversation_are_answered_in_order(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    questions = [f"question number {n}" for n in range(5)]
    for question in questions:
        assert await post(bot, message_activity(connector.url, question)) == 202

    replies = await connector.wait_for_messages(5)
    await settle(bot)

    for question, reply in zip(questions, replies, strict=True):
        assert question in reply["text"]
    stored = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert [m.text for m in stored if m.role is Role.USER] == questions
    assert [m.seq for m in stored] == sorted(m.seq for m in stored)


async def test_history_of_the_conversation_reaches_the_model(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    await post(bot, message_activity(connector.url, "My name is Ada."))
    await connector.wait_for_messages(1)
    await post(bot, message_activity(connector.url, "What is my name?"))
    await connector.wait_for_messages(2)
    await settle(bot)

    stored = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    second_answer = stored[-1]
    first_answer = stored[1]
    # The simulator's usage counts the whole prompt: the second turn carries the first.
    assert second_answer.usage is not None and first_answer.usage is not None
    assert second_answer.usage.prompt > first_answer.usage.prompt + first_answer.tokens


async def test_conversations_are_kept_apart(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    await post(bot, message_activity(connector.url, "alpha", conversation_id="a"))
    await post(bot, message_activity(connector.url, "beta", conversation_id="b", user_id="u2"))
    await connector.wait_for_messages(2)
    await settle(bot)

    store = bot.server.app[STORE]
    a = await store.conversation_messages(safe_id("test:a"))
    b = await store.conversation_messages(safe_id("test:b"))
    assert [m.text for m in a if m.role is Role.USER] == ["alpha"]
    assert [m.text for m in b if m.role is Role.USER] == ["beta"]
    summary = await store.get_summary("u2", safe_id("test:b"))
    assert summary is not None and summary.message_count == 2 and summary.title == "beta"


async def test_japanese_user_gets_japanese_notice_when_the_model_is_unreachable(
    make_app: Any, connector: RecordingConnector
) -> None:
    bot = await make_app(AZURE_OPENAI_ENDPOINT="http://127.0.0.1:9", MODEL_TIMEOUT_SECONDS=2)
    activity = message_activity(connector.url, "こんにちは", locale="ja-JP")

    assert await post(bot, activity) == 202
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)

    assert "申し訳ありません" in reply["text"]
    assert "参照番号" in reply["text"]
    assert "Traceback" not in reply["text"] and "127.0.0.1" not in reply["text"]
    assert not reply.get("entities"), "a notice is not labelled as AI content"
    stored = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT]
    assert stored[0].text == "こんにちは", "the user's message is kept"
    assert stored[1].status is MessageStatus.ERROR


async def test_english_user_gets_english_notice_when_the_model_rejects_the_key(
    make_app: Any, connector: RecordingConnector
) -> None:
    bot = await make_app(AZURE_OPENAI_API_KEY="wrong-key")
    await post(bot, message_activity(connector.url, "hello"))
    [reply] = await connector.wait_for_messages(1)
    assert reply["text"].startswith("Sorry, the assistant could not answer right now.")
    assert "wrong-key" not in reply["text"]


async def test_model_reply_carries_ai_label_and_feedback_flag(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    await post(bot, message_activity(connector.url, "hi"))
    [reply] = await connector.wait_for_messages(1)
    assert reply["entities"] == [
        {
            "type": "https://schema.org/Message",
            "@type": "Message",
            "@context": "https://schema.org",
            "@id": "",
            "additionalType": ["AIGeneratedContent"],
        }
    ]
    assert reply["channelData"] == {"feedbackLoopEnabled": True}


async def test_reply_that_the_channel_refuses_is_kept_with_error_status(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    connector.fail_with = 502
    await post(bot, message_activity(connector.url, "anyone there?"))
    await connector.wait_for_messages(1)
    await settle(bot)

    stored = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert stored[0].text == "anyone there?"
    assert stored[1].status is MessageStatus.ERROR and stored[1].error == "delivery_failed"
    assert stored[1].text, "the undelivered answer is kept for the record"


async def test_health_endpoint_answers(bot: TestClient[Any, Any]) -> None:
    response = await bot.get("/healthz")
    assert response.status == 200


async def test_identity_claimed_by_a_browser_through_azure_direct_line_is_not_believed(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    # Through Azure's Direct Line, `from.aadObjectId` and channelData come from the browser.
    activity = message_activity(
        connector.url,
        "who am I?",
        channel_id="directline",
        user_id="dl_opaque-user",
        channelData={"tenant": {"id": "someone-elses-tenant"}},
        **{"from": {"id": "dl_opaque-user", "aadObjectId": "victim-object-id"}},
    )
    assert await post(bot, activity) == 202
    await connector.wait_for_messages(1)
    await settle(bot)
    [user, _] = await bot.server.app[STORE].conversation_messages(safe_id("directline:conv-1"))
    assert user.user_id == "dl_opaque-user"
    assert user.tenant_id == ""


async def test_an_unreadable_stored_message_does_not_break_the_conversation(
    bot: TestClient[Any, Any], connector: RecordingConnector, store_backend: str, tmp_path: Any
) -> None:
    import json
    import sqlite3

    if store_backend != "sqlite":
        pytest.skip("writes a corrupt row straight into the SQLite file")
    await post(bot, message_activity(connector.url, "first"))
    await connector.wait_for_messages(1)
    await settle(bot)
    conversation = safe_id("test:conv-1")
    with sqlite3.connect(tmp_path / "data" / "chat.db") as db:
        db.execute(
            "INSERT INTO messages (conversation_id, id, seq, user_id, expires_at, doc)"
            " VALUES (?, 'corrupt', 1, 'user-1', NULL, ?)",
            (conversation, json.dumps({"id": "corrupt", "role": "not-a-role"})),
        )

    await post(bot, message_activity(connector.url, "second"))
    replies = await connector.wait_for_messages(2)
    await settle(bot)
    assert "second" in replies[-1]["text"]
    stored = await bot.server.app[STORE].conversation_messages(conversation)
    assert [m.text for m in stored if m.role is Role.USER] == ["first", "second"]


async def test_a_command_answer_the_channel_refuses_ends_the_turn_cleanly(
    bot: TestClient[Any, Any], connector: RecordingConnector, caplog: pytest.LogCaptureFixture
) -> None:
    connector.fail_with = 502
    assert await post(bot, message_activity(connector.url, "/help")) == 202
    await connector.wait_for_messages(1)
    await settle(bot)
    assert not [r for r in caplog.records if r.getMessage() == "unhandled error in a turn"]
    assert [r for r in caplog.records if r.getMessage() == "the channel refused the gate's reply"]


async def test_an_activity_over_the_size_limit_gets_a_json_413(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    activity = message_activity(connector.url, "x" * 300_000)
    response = await bot.post("/api/messages", json=activity)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "too_large"


async def test_each_model_request_names_its_user_pseudonymously_and_its_tenant_for_api_management(
    make_app: Any, connector: RecordingConnector, simulator_url: str
) -> None:
    """API Management's per-user and per-tenant token limits key on two request headers
    (infra/apim/openai-policy.xml); the user is a reference, never the user id."""
    bot = await make_app()
    await bot.post("/api/messages", json=personal_message(connector.url, "Hello"))
    await settle(bot)

    [prompt] = [
        m
        for m in await bot.server.app[STORE].conversation_messages(
            safe_id(f"msteams:{PERSONAL_CONVERSATION}")
        )
        if m.role is Role.USER
    ]
    callers = (await sim_control(simulator_url, "GET", "/_sim/stats"))["by_caller"]
    assert callers == {f"{user_ref(prompt.user_id)} {TENANT}": 1}
    assert USER_AAD not in str(callers) and USER_ID not in str(callers)


async def test_a_tenant_id_that_is_not_plain_is_not_sent_as_a_header(
    make_app: Any, connector: RecordingConnector, simulator_url: str
) -> None:
    bot = await make_app()
    activity = personal_message(connector.url, "Hello")
    activity["channelData"]["tenant"]["id"] = "72f988bf\r\nx-injected: 1"
    await bot.post("/api/messages", json=activity)
    await settle(bot)

    stats = await sim_control(simulator_url, "GET", "/_sim/stats")
    [caller] = stats["by_caller"]
    assert caller.endswith(" -") and stats["by_status"] == {"200": 1}


class PromptRecorder(ModelGateway):
    """Between the app and the simulator: keeps every request body the model is sent."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.requests: list[dict[str, Any]] = []

    def seen(self, body: bytes) -> None:
        if body:
            self.requests.append(json.loads(body))


async def test_a_prompt_keeps_its_first_line_s_indentation_in_the_store_and_for_the_model(
    make_app: Any, connector: RecordingConnector, simulator_url: str, aiohttp_server: Any
) -> None:
    recorder = PromptRecorder(simulator_url)
    gateway: TestServer = await aiohttp_server(recorder.app())
    bot = await make_app(AZURE_OPENAI_ENDPOINT=str(gateway.make_url("")).rstrip("/"))
    # Pasted code, and Japanese indented with ideographic spaces; leading blank lines and
    # trailing whitespace are dropped.
    sent = {
        "code": ("\n \n  def f():\n      return 1\n\n  ", "  def f():\n      return 1"),
        "ja": ("\r\n\u3000\u3000字下げした段落。\u3000\r\n", "\u3000\u3000字下げした段落。"),
    }
    for conversation, (text, _) in sent.items():
        await post(bot, message_activity(connector.url, text, conversation_id=conversation))
    # Within MAX_MESSAGE_CHARS but past the history budget: the notice says so in tokens, its
    # characters being within the limit.
    too_many_tokens = "    " + "漢" * 7000
    await post(bot, message_activity(connector.url, too_many_tokens, conversation_id="long"))
    # Indentation counts toward MAX_MESSAGE_CHARS: a word behind pages of it is not taken.
    padded = " " * 200_000 + "hello"
    await post(bot, message_activity(connector.url, padded, conversation_id="padded"))
    replies = await connector.wait_for_messages(4)
    await settle(bot)
    texts = [r["text"] for r in replies]
    template = re.escape(localize("message_too_many_tokens", "en-US", needed="N", room="R"))
    pattern = template.replace("N", r"(?P<needed>[\d,]+)").replace("R", r"(?P<room>[\d,]+)")
    [budget_notice] = [m for t in texts if (m := re.fullmatch(pattern, t))]
    needed, room = (int(budget_notice[k].replace(",", "")) for k in ("needed", "room"))
    assert needed > 6000 and 0 < room < 6000  # HISTORY_TOKEN_BUDGET is 6,000
    assert texts.count(localize("message_too_long", "en-US", length=200_005, limit=8000)) == 1

    store = bot.server.app[STORE]
    assert await store.conversation_messages(safe_id("test:padded")) == []
    prompts = {request["messages"][-1]["content"] for request in recorder.requests}
    assert prompts == {expected for _, expected in sent.values()}
    for conversation, (_, expected) in sent.items():
        user, _ = await store.conversation_messages(safe_id(f"test:{conversation}"))
        assert user.text == expected
        summary = await store.get_summary("user-1", safe_id(f"test:{conversation}"))
        assert summary is not None and summary.title == expected.splitlines()[0].strip()


async def test_a_message_refused_for_its_tokens_leaves_the_earlier_conversation_in_context(
    make_app: Any, connector: RecordingConnector, simulator_url: str, aiohttp_server: Any
) -> None:
    """The user is told the message was not sent and sends a shorter one: the assistant still
    reads what was said before (the refused one ended every later window before)."""
    recorder = PromptRecorder(simulator_url)
    gateway: TestServer = await aiohttp_server(recorder.app())
    bot = await make_app(AZURE_OPENAI_ENDPOINT=str(gateway.make_url("")).rstrip("/"))
    for count, text in enumerate(["Our project is called Falcon.", "漢" * 7000, "Its name?"], 1):
        await post(bot, message_activity(connector.url, text))
        await connector.wait_for_messages(count)
        await settle(bot)

    users = [m["content"] for m in recorder.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["Our project is called Falcon.", "Its name?"]
    stored = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    refused = next(m for m in stored if m.role is Role.USER and m.text.startswith("漢"))
    assert (refused.status, refused.error) == (MessageStatus.ERROR, "message_too_long")


@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
async def test_a_model_throttled_for_a_day_is_called_unavailable_not_busy_right_now(
    make_app: Any, connector: RecordingConnector, locale: str
) -> None:
    """An hour's wait is still "very busy"; a day's (a quota that resets tomorrow) is not."""
    bot = await make_app()
    await post(bot, message_activity(connector.url, "hi [sim:quota]", locale=locale))
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)
    unavailable = localize("model_down", locale, wait="WAIT", ref="REF").split("WAIT")[0]
    assert reply["text"].startswith(unavailable), reply["text"]


@pytest.mark.parametrize("channel", ["test", "webchat"], ids=["whole", "streamed"])
async def test_a_reasoning_model_deployment_answers_and_its_hidden_tokens_are_billed_not_read(
    make_app: Any, connector: RecordingConnector, channel: str
) -> None:
    """o1, o3, o4-mini and gpt-5 refuse `max_tokens` (every turn would fail); they take
    `max_completion_tokens`, and bill hidden reasoning tokens: the quota and the summary count
    them, the stored answer (what a later window reads) counts its text."""
    runner, url = await run_simulator(SimulatorConfig(api_key="test-key", model="o4-mini"))
    try:
        bot = await make_app(AZURE_OPENAI_ENDPOINT=url, AZURE_OPENAI_MODEL="o4-mini")
        await post(bot, message_activity(connector.url, "What is a VPN?", channel_id=channel))
        [reply] = await connector.wait_for_messages(1)
        await settle(bot)
    finally:
        await runner.cleanup()

    assert "What is a VPN?" in reply["text"]
    store = bot.server.app[STORE]
    _, answer = await store.conversation_messages(safe_id(f"{channel}:conv-1"))
    assert answer.status is MessageStatus.COMPLETE
    assert answer.tokens == TokenCounter("o4-mini").count_text(answer.text)
    assert answer.usage is not None
    assert answer.usage.completion == answer.tokens + REASONING_TOKENS
    summary = await store.find_summary(safe_id(f"{channel}:conv-1"))
    assert summary is not None and summary.completion_tokens == answer.usage.completion


async def test_an_answer_empty_at_the_length_limit_says_the_limit_was_reached(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    """A reasoning model that spent the whole output limit reasoning answers nothing with
    `finish_reason: length`: the user is told the answer hit its limit, not to rephrase."""
    activity = message_activity(connector.url, "Prove it all [sim:empty-length]")

    assert await post(bot, activity) == 202
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)

    assert "length limit for one answer before writing any of it" in reply["text"]
    assert "rephrase" not in reply["text"]
    _, answer = await bot.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert (answer.status, answer.error, answer.finish_reason) == (
        MessageStatus.ERROR,
        "empty_answer",
        "length",
    )
