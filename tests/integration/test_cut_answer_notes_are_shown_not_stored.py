"""An answer cut short (Teams' stream time limit, `MODEL_DEADLINE_SECONDS`) ends with a note in
the user's language that it was cut: the user sees it after the text, as before, but it is not
stored with the answer. The stored text is what the model wrote, its token count is that text's,
and the next turn sends the model that text, never the note as the model's own words. Reviewers
see on the transcript that the answer was cut, and why.

So does an answer that reached MAX_OUTPUT_TOKENS (the model's finish_reason "length"), streamed
or not.

Real HTTP on both stores: the Teams channel double (tests/teams/channel.py), the recording
connector or the built-in Direct Line, a paced simulator, and a gateway at the network edge that
records every request the app sends the model and the text the model streamed back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import bot.streaming
from app import STORE
from chat.texts import localize
from chat.tokens import TokenCounter
from simulator import SimulatorConfig, run_simulator
from storage.ids import safe_id
from storage.models import Message, MessageStatus
from tests.admin.helpers import appservice_header
from tests.reliability.support import ModelGateway
from tests.support import RecordingConnector, message_activity, settle
from tests.teams.activities import PERSONAL_CONVERSATION, personal_message
from tests.teams.channel import TeamsChannel
from tests.webchat.support import open_session, stored_messages

CONVERSATION_ID = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
# The note as users have always seen it (chat/texts.yaml `answer_cut_time_limit`).
CUT_NOTE = {
    "en-US": '(The answer was cut here: it reached the time limit for one answer. Send "continue"'
    " if you need the rest.)",
    "ja-JP": "（1回の回答の制限時間に達したため、回答はここで打ち切られました。続きが必要な場合は"
    "「続けて」と送信してください。）",
}
CONTINUE = {"en-US": "continue", "ja-JP": "続けて"}
LONG_QUESTION = {
    "en-US": "Tell me everything about streaming [sim:long]",
    "ja-JP": "ストリーミングについて詳しく教えてください [sim:long]",
}
COUNTER = TokenCounter("gpt-4o")


class ModelTraffic(ModelGateway):
    """Records the messages of every request the app sends the model, and the text each answer
    streamed back (`fence`: put a code fence at the start of the first answer's text, as a model
    that answers with a code block does)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.requests: list[list[dict[str, str]]] = []
        self.produced: list[str] = []
        self.fence = False
        self.url = ""

    def seen(self, body: bytes) -> None:
        if body:
            self.requests.append(json.loads(body)["messages"])
            self.produced.append("")

    def relay(self, line: bytes) -> bytes | None:
        if not line.startswith(b"data: {"):
            return line
        event = json.loads(line[len(b"data: ") :])
        for choice in event.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if not content:
                continue
            if self.fence and len(self.requests) == 1 and not self.produced[-1]:
                choice["delta"]["content"] = content = "```text\n" + content
                line = b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n"
            self.produced[-1] += content
        return line

    def assistant_contents(self, request: int) -> list[str]:
        return [m["content"] for m in self.requests[request] if m["role"] == "assistant"]


@pytest.fixture
async def model(aiohttp_server: Any) -> AsyncIterator[ModelTraffic]:
    # About 80 tokens a second: a `[sim:long]` answer streams for several seconds.
    runner, url = await run_simulator(SimulatorConfig(api_key="test-key", tokens_per_second=80))
    traffic = ModelTraffic(url)
    server: TestServer = await aiohttp_server(traffic.app())
    traffic.url = str(server.make_url("")).rstrip("/")
    yield traffic
    await runner.cleanup()


@pytest.fixture
async def teams(aiohttp_server: Any) -> TeamsChannel:
    channel = TeamsChannel()
    server: TestServer = await aiohttp_server(channel.app())
    channel.url = str(server.make_url("")).rstrip("/")
    return channel


async def teams_turn(
    client: TestClient[Any, Any], teams: TeamsChannel, text: str, locale: str, turn: int
) -> dict[str, Any]:
    response = await client.post("/api/messages", json=personal_message(teams.url, text, locale))
    assert response.status == 202
    messages = await teams.wait_for_messages(turn)
    await settle(client)
    return messages[turn - 1]


def assert_stored_as_the_model_wrote_it(answer: Message, reason: str, produced: str) -> None:
    assert (answer.status, answer.finish_reason) == (MessageStatus.PARTIAL, reason)
    assert answer.text and produced.startswith(answer.text), "the model's words, nothing added"
    assert "打ち切られ" not in answer.text and "cut here" not in answer.text
    # The window counts the text it sends: the stored count is the stored text's, which is what
    # the model produced (and was billed for) before the cut.
    assert answer.tokens == COUNTER.count_text(answer.text)
    assert answer.usage is not None and answer.usage.completion == answer.tokens


@pytest.mark.parametrize(
    ("reason", "locale"),
    [
        ("stream_time_limit", "en-US"),
        ("stream_time_limit", "ja-JP"),
        ("model_deadline", "en-US"),
        ("model_deadline", "ja-JP"),
    ],
)
async def test_a_cut_answer_shows_its_note_but_the_model_never_reads_it_as_its_own_words(
    make_app: Any,
    teams: TeamsChannel,
    model: ModelTraffic,
    monkeypatch: pytest.MonkeyPatch,
    reason: str,
    locale: str,
) -> None:
    if reason == "stream_time_limit":
        # Teams' 2 minutes and our 110 s, scaled down: the answer takes several seconds.
        teams.stream_time_limit = 2.5
        monkeypatch.setattr(bot.streaming, "TEAMS_STREAM_TIME_LIMIT_SECONDS", 1.5)
        client = await make_app(AZURE_OPENAI_ENDPOINT=model.url)
    else:
        client = await make_app(AZURE_OPENAI_ENDPOINT=model.url, MODEL_DEADLINE_SECONDS=2)

    final = await teams_turn(client, teams, LONG_QUESTION[locale], locale, 1)
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)

    # The user sees what they saw before: the text so far, then the note, in their language.
    assert teams.violations == []
    shown = teams.stream_calls("streaming")[-1].body["text"]
    assert final["text"].startswith(shown)
    assert final["text"] == f"{answer.text}\n\n{CUT_NOTE[locale]}"
    assert final["channelData"] == {"feedbackLoopEnabled": True}
    assert_stored_as_the_model_wrote_it(answer, reason, model.produced[0])

    # The next turn sends the model its own words, without the note.
    monkeypatch.setattr(bot.streaming, "TEAMS_STREAM_TIME_LIMIT_SECONDS", 110.0)
    teams.stream_time_limit = None
    await teams_turn(client, teams, CONTINUE[locale], locale, 2)
    assert len(model.requests) == 2
    assert model.assistant_contents(1) == [answer.text]
    sent = json.dumps(model.requests[1], ensure_ascii=False)
    assert CUT_NOTE[locale] not in sent and CUT_NOTE[locale][1:30] not in sent


async def test_a_code_block_cut_open_is_closed_for_the_user_only(
    make_app: Any, teams: TeamsChannel, model: ModelTraffic
) -> None:
    model.fence = True  # the answer is one code block, cut before its closing fence
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url, MODEL_DEADLINE_SECONDS=2)

    final = await teams_turn(client, teams, LONG_QUESTION["en-US"], "en-US", 1)
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)

    assert answer.text.startswith("```text\n") and answer.text.count("```") == 1
    # Closed before the note, or the note would show as code.
    assert final["text"] == f"{answer.text}\n```\n\n{CUT_NOTE['en-US']}"
    assert_stored_as_the_model_wrote_it(answer, "model_deadline", model.produced[0])
    # "continue" carries on inside the block the model opened.
    await teams_turn(client, teams, "continue", "en-US", 2)
    assert model.assistant_contents(1) == [answer.text]


async def test_a_web_chat_answer_cut_at_the_model_deadline_shows_the_note_but_stores_none(
    make_app: Any, model: ModelTraffic
) -> None:
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url, MODEL_DEADLINE_SECONDS=2)
    session = await open_session(client)
    await session.say(LONG_QUESTION["ja-JP"], locale="ja-JP")
    [final] = await session.wait_for_bot_messages(1)
    await settle(client)
    _, answer = await stored_messages(client, session.conversation_id)

    assert final["text"] == f"{answer.text}\n\n{CUT_NOTE['ja-JP']}"
    assert_stored_as_the_model_wrote_it(answer, "model_deadline", model.produced[0])
    await session.say(CONTINUE["ja-JP"], locale="ja-JP")
    await session.wait_for_bot_messages(2)
    assert model.assistant_contents(1) == [answer.text]


async def test_reviewers_see_that_a_partial_answer_was_cut_and_why(
    make_app: Any, teams: TeamsChannel, model: ModelTraffic
) -> None:
    client = await make_app(
        AZURE_OPENAI_ENDPOINT=model.url,
        MODEL_DEADLINE_SECONDS=2,
        ADMIN_AUTH_MODE="appservice",
        ADMIN_PSEUDONYM_KEY="k" * 40,
        ADMIN_SESSION_SECRET="s" * 40,
    )
    await teams_turn(client, teams, LONG_QUESTION["ja-JP"], "ja-JP", 1)
    reviewer = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"])}

    page = await client.get(f"/admin/conversations/{CONVERSATION_ID}", headers=reviewer)
    html = await page.text()
    api = await client.get(f"/admin/api/conversations/{CONVERSATION_ID}", headers=reviewer)
    [_, answer] = (await api.json())["messages"]

    assert page.status == 200 and api.status == 200
    assert (answer["status"], answer["finishReason"]) == ("partial", "model_deadline")
    assert "打ち切られ" not in answer["text"]
    assert 'data-testid="answer-cut"' in html
    assert "model deadline (MODEL_DEADLINE_SECONDS)" in html
    assert "The user was told so in a note after it, which is not stored." in html
    assert localize("answer_cut_time_limit", "ja-JP") not in html


# The note for an answer that reached MAX_OUTPUT_TOKENS (chat/texts.yaml
# `answer_cut_length_limit`): the model's finish_reason "length".
LENGTH_NOTE = {
    "en-US": '(The answer was cut here: it reached the length limit for one answer. Send "continue"'
    " if you need the rest.)",
    "ja-JP": "（1回の回答の長さの上限に達したため、回答はここで打ち切られました。続きが必要な場合は"
    "「続けて」と送信してください。）",
}


def assert_stored_as_cut_at_the_length_limit(answer: Message) -> None:
    assert (answer.status, answer.finish_reason) == (MessageStatus.PARTIAL, "length")
    assert answer.text, "the model's words"
    assert "打ち切られ" not in answer.text and "cut here" not in answer.text
    assert answer.usage is not None and answer.usage.completion == 30


@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
async def test_a_streamed_answer_cut_at_max_output_tokens_shows_a_note_the_model_never_reads(
    make_app: Any, teams: TeamsChannel, model: ModelTraffic, locale: str
) -> None:
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url, MAX_OUTPUT_TOKENS=30)

    final = await teams_turn(client, teams, LONG_QUESTION[locale], locale, 1)
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)

    assert teams.violations == []
    assert final["text"] == f"{answer.text}\n\n{LENGTH_NOTE[locale]}"
    assert final["channelData"] == {"feedbackLoopEnabled": True}
    assert_stored_as_cut_at_the_length_limit(answer)
    assert model.produced[0] == answer.text

    await teams_turn(client, teams, CONTINUE[locale], locale, 2)
    assert model.assistant_contents(1) == [answer.text]
    sent = json.dumps(model.requests[1], ensure_ascii=False)
    assert LENGTH_NOTE[locale][1:30] not in sent


@pytest.mark.parametrize("locale", ["en-US", "ja-JP"])
async def test_a_whole_answer_cut_at_max_output_tokens_shows_a_note_the_model_never_reads(
    make_app: Any, connector: RecordingConnector, model: ModelTraffic, locale: str
) -> None:
    """A channel that does not stream gets the answer in one message, from a call that did not
    stream either: its finish_reason says the same."""
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url, MAX_OUTPUT_TOKENS=30)
    conversation = safe_id("test:conv-1")

    await client.post(
        "/api/messages", json=message_activity(connector.url, LONG_QUESTION[locale], locale=locale)
    )
    [final] = await connector.wait_for_messages(1)
    await settle(client)
    _, answer = await client.server.app[STORE].conversation_messages(conversation)

    assert final["text"] == f"{answer.text}\n\n{LENGTH_NOTE[locale]}"
    assert_stored_as_cut_at_the_length_limit(answer)
    await client.post(
        "/api/messages", json=message_activity(connector.url, CONTINUE[locale], locale=locale)
    )
    await connector.wait_for_messages(2)
    await settle(client)
    assert model.assistant_contents(1) == [answer.text]


async def test_a_code_block_cut_open_at_max_output_tokens_is_closed_for_the_user_only(
    make_app: Any, teams: TeamsChannel, model: ModelTraffic
) -> None:
    model.fence = True
    client = await make_app(AZURE_OPENAI_ENDPOINT=model.url, MAX_OUTPUT_TOKENS=30)

    final = await teams_turn(client, teams, LONG_QUESTION["en-US"], "en-US", 1)
    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)

    assert answer.text.startswith("```text\n") and answer.text.count("```") == 1
    assert final["text"] == f"{answer.text}\n```\n\n{LENGTH_NOTE['en-US']}"
    assert_stored_as_cut_at_the_length_limit(answer)
