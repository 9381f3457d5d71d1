"""Every Azure content-filter outcome, end to end over real HTTP: the app, the simulator (which
answers in Azure's exact wire shapes when a trigger phrase is in the prompt), and a recording
connector playing the channel. Each test checks what the user received, what was stored, and
whether the conversation is flagged for review."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from simulator import SimulatorConfig, run_simulator
from storage.ids import safe_id
from storage.models import Message, MessageStatus, Role
from tests.support import RecordingConnector, message_activity, settle

CONVERSATION = safe_id("test:conv-1")


async def turn(
    bot: TestClient[Any, Any], connector: RecordingConnector, text: str, **extra: Any
) -> tuple[dict[str, Any], list[Message]]:
    response = await bot.post("/api/messages", json=message_activity(connector.url, text, **extra))
    assert response.status == 202
    [reply] = await connector.wait_for_messages(1)
    await settle(bot)
    stored = await bot.server.app[STORE].conversation_messages(CONVERSATION)
    return reply, stored


async def summary_of(bot: TestClient[Any, Any]) -> Any:
    summary = await bot.server.app[STORE].find_summary(CONVERSATION)
    assert summary is not None
    return summary


# --- prompt filtered (HTTP 400 content_filter)


@pytest.mark.parametrize(
    ("trigger", "locale", "reason"),
    [
        ("[cf:violence]", "en-US", "violence"),
        ("[cf:hate:medium]", "en-US", "hate"),
        ("[cf:self_harm]", "ja-JP", "自傷行為"),
        ("[cf:violence]", "ja-JP", "暴力"),
        ("[cf:jailbreak]", "en-US", "an attempt to bypass the assistant's rules"),
        ("[cf:blocklist]", "en-US", "terms blocked by your organization"),
        ("[cf:blocklist-old]", "en-US", "terms blocked by your organization"),
        ("[cf:legacy400]", "en-US", "content that the usage policy does not allow"),
    ],
)
async def test_filtered_prompt_gets_localized_notice_and_is_stored_filtered_and_flagged(
    bot: TestClient[Any, Any],
    connector: RecordingConnector,
    trigger: str,
    locale: str,
    reason: str,
) -> None:
    reply, stored = await turn(bot, connector, f"please {trigger} now", locale=locale)

    assert reason in reply["text"]
    if locale == "en-US":
        assert "rephrase" in reply["text"]
    else:
        assert "表現を変えて" in reply["text"]
    assert "{" not in reply["text"] and "content_filter" not in reply["text"]
    assert not reply.get("entities"), "a notice is not labelled as AI content"
    assert "feedbackLoopEnabled" not in (reply.get("channelData") or {})

    [user] = stored  # no model answer is stored
    assert user.role is Role.USER and user.status is MessageStatus.FILTERED
    assert user.text == f"please {trigger} now"
    assert user.filter is not None and user.filter["filtered"] is True
    assert all(r["source"] == "prompt" for r in user.filter["results"])
    summary = await summary_of(bot)
    assert summary.flagged and summary.filtered_count == 1


@pytest.mark.parametrize(
    ("locale", "advice"),
    [
        ("en-US", "send /new to start a fresh one"),
        (
            "ja-JP",
            "お試しください。ブロックされたのが以前の会話の内容である場合は、/new（/新規）を送信して",
        ),
    ],
)
async def test_a_filtered_prompt_sent_with_earlier_messages_points_to_new(
    bot: TestClient[Any, Any], connector: RecordingConnector, locale: str, advice: str
) -> None:
    """The filter reads the prompt as sent, earlier messages included: if they are what it
    blocks, every later message is blocked too, until a fresh context leaves them behind."""
    first, _ = await turn(bot, connector, "[cf:violence] first words", locale=locale)
    assert "/new" not in first["text"] and "/新規" not in first["text"]  # nothing went with it
    connector.calls.clear()
    await turn(bot, connector, "a harmless question", locale=locale)
    connector.calls.clear()

    later, _ = await turn(bot, connector, "[cf:violence] more words", locale=locale)

    assert advice in later["text"]


async def test_filtered_prompt_verdict_names_category_and_severity(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    _, [user] = await turn(bot, connector, "[cf:hate:medium]")
    assert user.filter is not None
    [hate] = [r for r in user.filter["results"] if r["category"] == "hate"]
    assert hate == {**hate, "filtered": True, "severity": "medium", "source": "prompt"}
    assert (await summary_of(bot)).flag_reasons == ["hate"]


async def test_filtered_prompt_leaves_the_history_window(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    await turn(bot, connector, "[cf:violence] forbidden words")
    connector.calls.clear()
    reply, stored = await turn(bot, connector, "a harmless question")
    assert reply["text"].count("harmless") >= 1
    answer = stored[-1]
    assert answer.status is MessageStatus.COMPLETE
    assert answer.usage is not None
    # Only the system prompt and the new question were sent: the filtered prompt was left out.
    assert answer.usage.prompt < 200


# --- answer filtered (non-streaming)


async def test_filtered_answer_gets_notice_and_is_withheld_and_flagged(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    reply, stored = await turn(bot, connector, "write something [cf:output:sexual]")

    assert "withheld" in reply["text"] and "sexual content" in reply["text"]
    assert not reply.get("entities")
    user, answer = stored
    assert user.status is MessageStatus.COMPLETE
    assert answer.status is MessageStatus.FILTERED and answer.text == ""
    assert answer.finish_reason == "content_filter"
    assert answer.filter is not None
    assert [r["category"] for r in answer.filter["results"] if r["filtered"]] == ["sexual"]
    assert {r["source"] for r in answer.filter["results"] if r["filtered"]} == {"output"}
    summary = await summary_of(bot)
    assert summary.flagged and "sexual" in summary.flag_reasons and summary.filtered_count == 1


async def test_filtered_answer_in_japanese(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    reply, _ = await turn(bot, connector, "説明して [cf:output:violence]", locale="ja-JP")
    assert "暴力" in reply["text"] and "表示を控えました" in reply["text"]


# --- annotated, not blocked: the user experience is unchanged, the conversation is flagged


@pytest.mark.parametrize(
    ("trigger", "reason", "source"),
    [
        ("[cf:jailbreak-annotate]", "jailbreak", "prompt"),
        ("[cf:indirect]", "indirect_attack", "prompt"),
        ("[cf:protected-text]", "protected_material_text", "output"),
        ("[cf:medium-pass:violence]", "violence", "prompt"),
        ("[cf:output-medium-pass:sexual]", "sexual", "output"),
        ("[cf:blocklist-annotate]", "blocklist", "prompt"),
    ],
)
async def test_annotation_without_blocking_delivers_the_answer_and_flags_for_review(
    bot: TestClient[Any, Any],
    connector: RecordingConnector,
    trigger: str,
    reason: str,
    source: str,
) -> None:
    reply, stored = await turn(bot, connector, f"tell me about clouds {trigger}")

    assert "clouds" in reply["text"]
    assert reply["entities"][0]["additionalType"] == ["AIGeneratedContent"]
    answer = stored[-1]
    assert answer.status is MessageStatus.COMPLETE and answer.text == reply["text"]
    assert answer.filter is not None
    assert any(
        r["category"] == reason and r["source"] == source and not r["filtered"]
        for r in answer.filter["results"]
    )
    summary = await summary_of(bot)
    assert summary.flagged and reason in summary.flag_reasons
    assert summary.filtered_count == 0


async def test_low_severity_below_the_review_threshold_is_not_flagged(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    reply, stored = await turn(bot, connector, "a story [cf:low:violence]")
    assert "story" in reply["text"]
    assert stored[-1].filter is not None, "the verdict is still stored"
    assert not (await summary_of(bot)).flagged


async def test_review_threshold_is_configurable(
    make_app: Any, connector: RecordingConnector
) -> None:
    bot = await make_app(FILTER_REVIEW_SEVERITY="low")
    await turn(bot, connector, "a story [cf:low:violence]")
    assert (await summary_of(bot)).flag_reasons == ["violence"]


async def test_protected_code_answer_carries_its_citation(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    reply, stored = await turn(bot, connector, "show me a sorting function [cf:protected-code]")

    assert "license: `MIT`" in reply["text"]
    assert "https://github.com/" in reply["text"]
    # A note to the user, kept for reviewers in the verdict: not the model's own words, which
    # go back to it as context.
    answer = stored[-1]
    assert reply["text"].startswith(answer.text) and "license" not in answer.text
    assert answer.filter is not None
    assert "license" in str([r["citation"] for r in answer.filter["results"]])
    assert "protected_material_code" in (await summary_of(bot)).flag_reasons


async def test_protected_code_citation_in_japanese(
    bot: TestClient[Any, Any], connector: RecordingConnector
) -> None:
    reply, _ = await turn(bot, connector, "コードを見せて [cf:protected-code]", locale="ja-JP")
    assert "ライセンス: `MIT`" in reply["text"]


# --- the filter itself failed ("The contents are not filtered")


@pytest.mark.parametrize("trigger", ["[cf:filter-error]", "[cf:output-filter-error]"])
async def test_filter_error_delivers_by_default_and_flags(
    bot: TestClient[Any, Any], connector: RecordingConnector, trigger: str
) -> None:
    reply, stored = await turn(bot, connector, f"hello {trigger}")
    assert "hello" in reply["text"]
    assert stored[-1].status is MessageStatus.COMPLETE
    assert stored[-1].filter is not None and stored[-1].filter["errors"]
    assert "filter_error" in (await summary_of(bot)).flag_reasons


async def test_filter_error_withheld_when_configured(
    make_app: Any, connector: RecordingConnector
) -> None:
    bot = await make_app(FILTER_ERROR_POLICY="withhold")
    reply, stored = await turn(bot, connector, "hello [cf:output-filter-error]")
    assert "safety check could not run" in reply["text"]
    answer = stored[-1]
    assert answer.status is MessageStatus.FILTERED and answer.text == ""
    assert answer.withheld_text and "hello" in answer.withheld_text
    assert "filter_error" in (await summary_of(bot)).flag_reasons


# --- telemetry


async def test_filter_events_are_logged_with_category_and_without_message_text(
    bot: TestClient[Any, Any], connector: RecordingConnector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await turn(bot, connector, "my secret plan [cf:violence]")

    events = [r for r in caplog.records if getattr(r, "event", None) == "content_filter"]
    assert events
    event = events[0]
    assert vars(event)["category"] == "violence" and vars(event)["source"] == "prompt"
    assert vars(event)["severity"] == "high" and vars(event)["deployment"] == "default"
    assert len(vars(event)["conversation_ref"]) == 16
    assert CONVERSATION not in vars(event)["conversation_ref"]
    for record in caplog.records:
        assert "secret plan" not in record.getMessage()
        assert all("secret plan" not in str(v) for v in vars(record).values())


# --- streaming: the final message replaces whatever was streamed


@pytest.fixture
async def paced_simulator_url() -> AsyncIterator[str]:
    # Slow enough that at least one streaming update goes out before the filter trips.
    runner, url = await run_simulator(SimulatorConfig(api_key="test-key", tokens_per_second=25))
    yield url
    await runner.cleanup()


def teams_personal(connector: RecordingConnector, text: str) -> dict[str, Any]:
    return message_activity(
        connector.url,
        text,
        channel_id="msteams",
        conversation_id="a:personal-chat",
        conversation={
            "id": "a:personal-chat",
            "conversationType": "personal",
            "tenantId": "tenant-1",
        },
        channelData={"tenant": {"id": "tenant-1"}},
        **{"from": {"id": "29:user", "aadObjectId": "aad-user-1", "name": "Ada"}},
    )


@pytest.mark.parametrize(
    ("trigger", "category"),
    [("[cf:stream-cut:violence]", "violence"), ("[cf:async-cut:hate]", "hate")],
)
async def test_filter_tripping_mid_stream_replaces_streamed_text_with_the_notice(
    make_app: Any,
    connector: RecordingConnector,
    paced_simulator_url: str,
    trigger: str,
    category: str,
) -> None:
    bot = await make_app(AZURE_OPENAI_ENDPOINT=paced_simulator_url)
    activity = teams_personal(connector, f"tell me a long story {trigger}")
    assert (await bot.post("/api/messages", json=activity)).status == 202
    [final] = await connector.wait_for_messages(1)
    await settle(bot)

    streamed = [c.body for c in connector.calls if c.body["type"] == "typing"]
    updates = [a for a in streamed if a["entities"][0]["streamType"] == "streaming"]
    assert updates, "some text was streamed before the filter tripped"
    shown = updates[-1]["text"]
    assert "story" in shown
    assert final["entities"][0]["streamType"] == "final"
    assert "withheld" in final["text"] and shown not in final["text"]
    assert len(final["entities"]) == 1, "the notice carries no AI label"

    conversation = safe_id("msteams:a:personal-chat")
    stored = await bot.server.app[STORE].conversation_messages(conversation)
    answer = stored[-1]
    assert answer.status is MessageStatus.FILTERED and answer.text == ""
    assert answer.withheld_text is not None and answer.withheld_text.startswith(shown)
    assert answer.finish_reason == "content_filter"
    assert answer.filter is not None
    assert category in [r["category"] for r in answer.filter["results"] if r["filtered"]]
    if trigger.startswith("[cf:async"):
        assert answer.filter["offsets"], "where the asynchronous filter stopped the stream"
    summary = await bot.server.app[STORE].find_summary(conversation)
    assert summary is not None and summary.flagged and category in summary.flag_reasons


async def test_asynchronous_filter_that_passes_delivers_the_streamed_answer(
    make_app: Any, connector: RecordingConnector
) -> None:
    bot = await make_app()
    activity = teams_personal(connector, "a calm question [cf:async-pass]")
    await bot.post("/api/messages", json=activity)
    [final] = await connector.wait_for_messages(1)
    await settle(bot)
    assert "calm question" in final["text"]
    assert any(e.get("additionalType") == ["AIGeneratedContent"] for e in final["entities"])
    summary = await bot.server.app[STORE].find_summary(safe_id("msteams:a:personal-chat"))
    assert summary is not None and not summary.flagged
