"""Quotas and rate limits end to end: the app over real HTTP, the simulator as the model, the
recording connector as the channel, counters in the real store (SQLite and Cosmos DB)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from app import STORE
from chat.texts import wait_text
from controls.quotas import user_scope
from controls.windows import day_window, minute_number, minute_window
from storage.ids import safe_id
from storage.models import MessageStatus, Role, UsageChange
from tests.admin.helpers import appservice_header
from tests.controls.support import Chat, ControlledApp, FakeClock, conversation, model_calls
from tests.support import RecordingConnector, settle
from tests.teams.activities import USER_AAD, personal_message

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


async def test_daily_token_quota_refuses_without_a_model_call_and_resets_the_next_day(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Estimate = prompt (~100) + 300 max output: the first turn fits, the second cannot.
    client = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=700, MAX_OUTPUT_TOKENS=300)
    chat = Chat(client, connector)

    first = await chat.send("What is the capital of France?")
    assert "capital of France" in first["text"]
    stored = await chat.store.conversation_messages(conversation(chat))
    answer = stored[-1]
    assert answer.usage is not None
    used = answer.usage.prompt + answer.usage.completion
    # Settled: once the deferred settlement is written, the counter holds the real usage.
    day = day_window(clock())
    assert await stored_tokens(chat, day.key) > used  # still the reservation
    await chat.quotas.flush()
    assert await stored_tokens(chat, day.key) == used

    calls = await model_calls(simulator_url)
    with caplog.at_level(logging.WARNING, logger="controls"):
        refused = await chat.send("And the capital of Germany?")
    assert "more than is left of your daily limit (700 tokens) until it resets" in refused["text"]
    assert f"00:00 UTC on {MONTHS[day.resets_at.month - 1]} {day.resets_at.day}" in refused["text"]
    assert "entities" not in refused or not refused["entities"]  # a notice, not model output
    assert await model_calls(simulator_url) == calls
    # What the gate reserved for the refused turn is given back (deferred, like a settlement).
    await chat.quotas.flush()
    assert await stored_tokens(chat, day.key) == used

    [event] = [r for r in caplog.records if getattr(r, "event", None) == "quota_exceeded"]
    # Named like the audit record below (the log outlives the user): never the user id.
    assert event.scope.startswith("p-")  # type: ignore[attr-defined]
    assert event.limit == "user_tokens_per_day"  # type: ignore[attr-defined]
    assert "Germany" not in event.getMessage() and "Germany" not in str(vars(event))
    records, _ = await chat.store.list_audit(10)
    [audit] = [r for r in records if r.action == "quota_exceeded"]
    # Named by the admin pseudonym of the user, not the user id (see the test below).
    assert audit.actor == "system" and audit.target.startswith("p-")
    assert audit.detail["limit"] == "user_tokens_per_day"

    clock.next_day()
    answered = await chat.send("And the capital of Spain?")
    assert "capital of Spain" in answered["text"]
    assert await model_calls(simulator_url) == calls + 1


async def test_a_message_too_big_for_what_is_left_is_not_sent_later_as_context(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    clock: FakeClock,
) -> None:
    client = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=5000, MAX_OUTPUT_TOKENS=300)
    chat = Chat(client, connector)
    # 1,000 left: the message below fits the whole limit, not what is left of it.
    day = day_window(clock())
    spent = UsageChange(minute=0, ttl_seconds=day.ttl_seconds, tokens=4000)
    await chat.store.add_usage(user_scope("user-1"), day.key, spent)

    refused = await chat.send("Please read this. " + "word " * 800)
    # The conversation's first message: no earlier conversation, so no /new advice.
    assert refused["text"].startswith("Your message needs about")
    assert "your daily limit (5,000 tokens) until it resets" in refused["text"]
    [prompt] = await chat.store.conversation_messages(conversation(chat))
    assert prompt.status is MessageStatus.ERROR and prompt.error == "quota_exceeded"

    # The notice said it was not sent: the next message's context does not carry it either
    # (with it, this estimate would not fit what is left today).
    calls = await model_calls(simulator_url)
    answered = await chat.send("What is the capital of France?")
    assert "capital of France" in answered["text"]
    assert await model_calls(simulator_url) == calls + 1


async def test_japanese_user_gets_the_quota_notice_in_japanese(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=5000, MAX_OUTPUT_TOKENS=300)
    chat = Chat(client, connector, locale="ja-JP")
    day = day_window(clock())
    spent = UsageChange(minute=0, ttl_seconds=day.ttl_seconds, tokens=4800)
    await chat.store.add_usage(user_scope("user-1"), day.key, spent)

    refused = await chat.send("こんにちは")

    # Less is left than one message needs, not "the limit is used up".
    assert refused["text"].startswith("1日の上限の残りが新しいメッセージの送信に必要な量を")
    assert (
        "（前回のリセット以降、上限5,000トークンのうち4,800トークンを使用済み）" in refused["text"]
    )
    assert "0:00にリセットされます（あと約" in refused["text"]


async def test_requests_per_minute_limit_refuses_the_extra_message_until_the_next_minute(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
) -> None:
    client = await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=2)
    chat = Chat(client, connector)
    await chat.send("one")
    await chat.send("two")
    calls = await model_calls(simulator_url)

    refused = await chat.send("three")

    assert "faster than allowed (2 per minute)" in refused["text"]
    assert "wait 50 seconds" in refused["text"]  # the clock stands at hh:mm:10
    assert await model_calls(simulator_url) == calls
    # The refused message was neither stored nor counted.
    texts = [m.text for m in await chat.store.conversation_messages(conversation(chat))]
    assert "three" not in texts
    counts = await chat.store.read_usage(user_scope("user-1"), day_window(clock()).key)
    assert counts.requests_in(minute_number(minute_window(clock()))) == 2
    # Another user is not affected.
    other = Chat(client, connector, conversation_id="conv-2", user_id="user-2")
    assert "three" in (await other.send("three"))["text"]

    clock.advance(minutes=1)
    assert "four" in (await chat.send("four"))["text"]


async def test_one_person_has_one_allowance_in_teams_and_through_azures_direct_line(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=2)
    # Teams (and the built-in web chat) name the person by their Entra object id; Azure's
    # Direct Line by the id the app bound into its token, `dl_<object id>`.
    teams = Chat(client, connector, user_id="0b1c-oid")
    widget = Chat(client, connector, conversation_id="dl-1", user_id="dl_0b1c-oid")
    assert "one" in (await teams.send("one"))["text"]
    assert "two" in (await widget.send("two", channel_id="webchat"))["text"]

    refused = await widget.send("three", channel_id="webchat")

    assert "faster than allowed (2 per minute)" in refused["text"]
    counts = await client.server.app[STORE].read_usage(
        user_scope("0b1c-oid"), day_window(clock()).key
    )
    assert counts.requests_in(minute_number(minute_window(clock()))) == 2
    assert user_scope("dl_0b1c-oid") == user_scope("0b1c-oid")


async def test_empty_attachment_only_and_too_long_messages_do_not_use_up_the_request_rate(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
) -> None:
    client = await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=3, MAX_MESSAGE_CHARS=100)
    chat = Chat(client, connector)
    calls = await model_calls(simulator_url)
    picture = [{"contentType": "image/png", "contentUrl": "https://example.com/a.png"}]

    assert "message was empty" in (await chat.send(" "))["text"]
    assert "message was empty" in (await chat.send(" \n "))["text"]
    assert "message was empty" in (await chat.send("\x00\u200b\x1b"))["text"]
    assert "attachments are not sent" in (await chat.send("", attachments=picture))["text"]
    assert "too long" in (await chat.send("x" * 101))["text"]
    assert "too long" in (await chat.send(" " * 100 + "x"))["text"]  # indentation counts
    assert await model_calls(simulator_url) == calls

    # None of them counted: three real questions fit in the minute, the fourth does not. The
    # limit applies to the text as stored: from its first non-blank line, without trailing
    # blanks, as the chat service reads it.
    assert "first" in (await chat.send("first question"))["text"]
    at_the_limit = "\n  " + "y" * 91 + " second  "  # 100 characters as stored
    assert "yyy" in (await chat.send(at_the_limit))["text"]
    assert "third" in (await chat.send("third question"))["text"]
    assert "faster than allowed (3 per minute)" in (await chat.send("fourth"))["text"]
    assert await model_calls(simulator_url) == calls + 3
    counts = await chat.store.read_usage(user_scope("user-1"), day_window(clock()).key)
    assert counts.requests_in(minute_number(minute_window(clock()))) == 3


async def test_a_quota_refusal_is_audited_under_the_user_pseudonym_and_never_the_user_id(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    """Like a deletion, a refusal record names the user by the admin pseudonym: an admin can
    reveal it, and the audit log does not bring the user id back after the user is deleted."""
    alice = "aad-object-id-of-alice"
    client = await controlled_app(QUOTA_USER_REQUESTS_PER_MINUTE=1, ADMIN_AUTH_MODE="appservice")
    chat = Chat(client, connector, user_id=alice)
    await chat.send("hello")
    assert "faster than allowed (1 per minute)" in (await chat.send("again"))["text"]

    admin = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
    admin["X-CSRF-Token"] = (await (await client.get("/admin/api/me", headers=admin)).json())[
        "csrfToken"
    ]
    audit = await (await client.get("/admin/api/audit", headers=admin)).json()
    [refusal] = [r for r in audit["items"] if r["action"] == "quota_exceeded"]
    pseudonym = refusal["target"]
    assert pseudonym.startswith("p-") and refusal["actor"] == "system"
    assert refusal["detail"]["limit"] == "user_requests_per_minute"
    # The admin app's key: its audited reveal turns the target back into the user id.
    revealed = await client.post(
        "/admin/api/reveal", json={"user": pseudonym, "reason": "quota complaint"}, headers=admin
    )
    assert revealed.status == 200 and (await revealed.json())["userId"] == alice

    deleted = await client.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
        headers=admin,
    )
    assert deleted.status == 200
    audit_text = await (await client.get("/admin/api/audit", headers=admin)).text()
    assert "quota_exceeded" in audit_text and "delete_user" in audit_text
    assert alice not in audit_text
    records, _ = await chat.store.list_audit(100)
    assert {r.action for r in records} >= {"quota_exceeded", "reveal_user", "delete_user"}
    assert not any(alice in json.dumps(r.to_doc(), default=str) for r in records)


async def test_tenant_daily_quota_applies_to_all_its_users_and_gives_the_user_share_back(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(QUOTA_TENANT_TOKENS_PER_DAY=1000, MAX_OUTPUT_TOKENS=300)
    tenant = {"channelData": {"tenant": {"id": "AAAA-1111"}}}
    alice = Chat(client, connector, conversation_id="a", user_id="alice", **tenant)
    bob = Chat(client, connector, conversation_id="b", user_id="bob", **tenant)
    outsider = Chat(client, connector, conversation_id="c", user_id="carol")

    await alice.send("Hello from Alice")
    await alice.send("Hello again from Alice")
    day = day_window(clock())
    bob_before = await stored_tokens(bob, day.key, user_id="bob")
    refused = await bob.send("Hello from Bob, " + "with many words " * 40)

    # Some of the organization's limit is left, not enough for Bob's message.
    assert "more than is left of your organization's daily limit" in refused["text"]
    # Bob's reservation (the gate's upfront one) is given back when the tenant refuses.
    await bob.quotas.flush()
    assert await stored_tokens(bob, day.key, user_id="bob") == bob_before
    assert "Carol" in (await outsider.send("Hello from Carol"))["text"]


async def test_tenant_policy_file_overrides_the_quota_of_one_tenant(
    controlled_app: ControlledApp, connector: RecordingConnector, tmp_path: Any
) -> None:
    policy = tmp_path / "tenants.yaml"
    policy.write_text(
        "tenants:\n  '0F0F0000-AAAA-BBBB-CCCC-000000000001':\n    user_requests_per_minute: 1\n",
        encoding="utf-8",
    )
    client = await controlled_app(TENANT_POLICY_FILE=str(policy))
    limited = Chat(
        client,
        connector,
        conversation_id="l",
        channelData={"tenant": {"id": "0f0f0000-aaaa-bbbb-cccc-000000000001"}},
    )
    free = Chat(client, connector, conversation_id="f", user_id="user-2")

    await limited.send("first")
    assert "1 per minute" in (await limited.send("second"))["text"]
    await free.send("first")
    assert "second" in (await free.send("second"))["text"]


async def test_counters_are_shared_by_two_app_instances_on_one_store(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    settings: dict[str, Any] = {"QUOTA_USER_REQUESTS_PER_MINUTE": 3, "MAX_OUTPUT_TOKENS": 300}
    first = await controlled_app(**settings, QUOTA_USER_TOKENS_PER_DAY=100_000)
    second = await controlled_app(**settings, QUOTA_USER_TOKENS_PER_DAY=100_000)
    on_first = Chat(first, connector)
    on_second = Chat(second, connector)

    await on_first.send("one")
    await on_second.send("two")
    # Another instance sees the first one's reservation until its settlement is written.
    await on_first.quotas.flush()
    usage = await on_second.send("/usage")
    used = sum(
        m.usage.prompt + m.usage.completion
        for m in await on_first.store.conversation_messages(conversation(on_first))
        if m.role is Role.ASSISTANT and m.usage is not None
    )
    assert (
        f"Tokens used since the last daily reset: {used:,} (daily limit: 100,000;" in usage["text"]
    )
    assert "Messages this minute: 2 (limit per minute: 3)" in usage["text"]

    await on_first.send("three")
    refused = await on_second.send("four")
    assert "faster than allowed (3 per minute)" in refused["text"]

    # A third instance with a tight daily limit sees what the other two spent.
    tight = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=used + 50, MAX_OUTPUT_TOKENS=50)
    clock.advance(minutes=1)
    refused = await Chat(tight, connector).send("five")
    # "three"'s reservation is still on the counter: the limit is used up.
    assert f"You have reached your daily limit of {used + 50:,} tokens" in refused["text"]


async def test_a_user_out_of_daily_tokens_is_refused_before_the_message_is_stored_or_counted(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    clock: FakeClock,
    simulator_url: str,
) -> None:
    client = await controlled_app(
        QUOTA_USER_TOKENS_PER_DAY=5000, QUOTA_USER_REQUESTS_PER_MINUTE=5, MAX_OUTPUT_TOKENS=300
    )
    chat = Chat(client, connector)
    day = day_window(clock())
    # Earlier today the user spent all but 200 tokens: less than any turn (300 output alone).
    spent = UsageChange(minute=0, ttl_seconds=day.ttl_seconds, tokens=4800)
    await chat.store.add_usage(user_scope("user-1"), day.key, spent)
    calls = await model_calls(simulator_url)

    refused = await chat.send("A question with some private text")

    # Not "used up" (/usage shows 4,800 of 5,000): what is left is too little for a message.
    assert refused["text"].startswith(
        "There is not enough of your daily limit left for a new message (used 4,800 of 5,000 "
        "tokens since the last reset), so your message was not sent to the assistant. It resets "
        f"at 00:00 UTC on {MONTHS[day.resets_at.month - 1]} {day.resets_at.day} "
        f"(in {wait_text(day.seconds_left(clock()), 'en')})."
    )
    assert await model_calls(simulator_url) == calls
    assert await chat.store.conversation_messages(conversation(chat)) == []
    counts = await chat.store.read_usage(user_scope("user-1"), day.key)
    assert counts.requests_in(minute_number(minute_window(clock()))) == 0
    assert counts.tokens == 4800


async def test_a_stream_that_breaks_off_is_charged_what_the_model_generated_before_it(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    # Azure bills the prompt and the tokens it streamed before the connection dropped.
    client = await controlled_app(QUOTA_USER_TOKENS_PER_DAY=100_000, MAX_OUTPUT_TOKENS=2000)
    chat, day = Chat(client, connector), day_window(clock()).key

    async def charged_for(text: str, conversation_id: str) -> int:
        before = await stored_tokens(chat, day, user_id=USER_AAD)
        activity = personal_message(connector.url, text)
        activity["conversation"]["id"] = conversation_id
        response = await client.post("/api/messages", json=activity)
        assert response.status == 202
        await settle(client)
        await chat.quotas.flush()
        return await stored_tokens(chat, day, user_id=USER_AAD) - before

    broken = await charged_for("tell me a long story [sim:long] [sim:drop]", "a:broken")
    assert "try again" in connector.messages("a:broken")[-1]["text"].lower()
    whole = await charged_for("tell me a long story [sim:long]", "a:whole")
    [answer] = [
        m
        for m in await chat.store.conversation_messages(safe_id("msteams:a:whole"))
        if m.role is Role.ASSISTANT
    ]
    assert answer.usage is not None and whole == answer.usage.prompt + answer.usage.completion
    # More than the prompt (part of the answer), less than the whole answer.
    assert answer.usage.prompt < broken < whole


async def stored_tokens(chat: Chat, day: str, *, user_id: str = "user-1") -> int:
    """The day's tokens as the store holds them (without any instance's pending settlement)."""
    return (await chat.store.read_usage(user_scope(user_id), day)).tokens
