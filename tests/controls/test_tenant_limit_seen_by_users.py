"""An organization's daily limit as its users meet it, over HTTP on both stores: a refusal while
some of it is left says that not enough is left for this message (not that it was reached), and
/usage says that the limit applies and how much of it is used today, as a percentage only."""

from __future__ import annotations

from controls.quotas import tenant_scope
from controls.windows import day_window
from tests.controls.support import Chat, ControlledApp, FakeClock
from tests.support import RecordingConnector

TENANT = {"channelData": {"tenant": {"id": "BBBB-2222"}}}
NO_USER_LIMITS = {"QUOTA_USER_TOKENS_PER_DAY": 0, "QUOTA_USER_REQUESTS_PER_MINUTE": 0}


async def test_a_tenant_limit_with_some_left_refuses_a_message_that_needs_more_and_usage_says_so(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(
        **NO_USER_LIMITS, QUOTA_TENANT_TOKENS_PER_DAY=1000, MAX_OUTPUT_TOKENS=300
    )
    chat = Chat(client, connector, **TENANT)
    day = day_window(clock())

    await chat.send("Hello")
    refused = await chat.send("Please read this: " + "with many words " * 200)
    await chat.quotas.flush()
    used = await chat.store.read_counter(tenant_scope("bbbb-2222") or "", day.key)

    assert 0 < used < 1000, used
    assert refused["text"].startswith("Your message and the earlier conversation together need")
    assert "more than is left today of your organization's daily limit" in refused["text"]
    assert "reached" not in refused["text"]

    usage = (await chat.send("/usage"))["text"]
    assert "No limits apply to you" not in usage
    assert "There is no limit on your messages per minute and no daily limit on your own " in usage
    # The tenant's totals stay hidden: only the share used.
    assert usage.endswith(
        "Your organization has a daily limit for the assistant, shared by all its users: about "
        f"{used * 100 // 1000}% of it is used today (resets at {day.resets_at:%Y-%m-%d} 00:00 UTC)."
    )

    in_japanese = Chat(client, connector, conversation_id="ja", locale="ja-JP", **TENANT)
    usage = (await in_japanese.send("/利用状況"))["text"]
    assert f"組織全体で共有する1日の上限があります。本日はその約{used * 100 // 1000}%を" in usage


async def test_a_tenant_limit_used_up_is_said_to_be_reached_and_usage_shows_it_beside_user_limits(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(QUOTA_TENANT_TOKENS_PER_DAY=1000, MAX_OUTPUT_TOKENS=300)
    chat = Chat(client, connector, **TENANT)
    day = day_window(clock())
    scope = tenant_scope("bbbb-2222") or ""
    await chat.store.add_to_counter(scope, day.key, 1000, 0, day.ttl_seconds)

    refused = await chat.send("Hello")
    usage = (await chat.send("/usage"))["text"]

    assert refused["text"].startswith("Your organization has reached its daily limit")
    assert "Tokens today: 0 (daily limit: 1,000,000;" in usage
    assert usage.endswith(
        "Your organization has a daily limit for the assistant, shared by all its users: about "
        f"100% of it is used today (resets at {day.resets_at:%Y-%m-%d} 00:00 UTC)."
    )
    # Without a tenant limit, nothing about the organization.
    elsewhere = Chat(await controlled_app(), connector, conversation_id="o", **TENANT)
    assert "organization" not in (await elsewhere.send("/usage"))["text"]
