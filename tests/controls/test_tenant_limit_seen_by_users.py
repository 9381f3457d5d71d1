"""An organization's daily limit as its users meet it, over HTTP on both stores: a refusal while
some of it is left says that not enough is left for this message (not that it was reached), and
/usage says that the limit applies and how much of it is used since the quota day's reset, as a
percentage only (a small share as "<1%", "1%未満", not "about 0%")."""

from __future__ import annotations

from controls.quotas import tenant_scope, user_scope
from controls.windows import day_window, minute_number, minute_window
from tests.controls.support import Chat, ControlledApp, FakeClock, conversation
from tests.support import RecordingConnector

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

TENANT = {"channelData": {"tenant": {"id": "BBBB-2222"}}}
NO_USER_LIMITS = {"QUOTA_USER_TOKENS_PER_DAY": 0, "QUOTA_USER_REQUESTS_PER_MINUTE": 0}


async def test_a_tenant_limit_with_some_left_refuses_a_message_that_needs_more_and_usage_says_so(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(
        **NO_USER_LIMITS, QUOTA_TENANT_TOKENS_PER_DAY=2000, MAX_OUTPUT_TOKENS=300
    )
    chat = Chat(client, connector, **TENANT)
    day = day_window(clock())
    # Half of it used already: the message below fits the whole limit, not what is left.
    scope = tenant_scope("bbbb-2222") or ""
    await chat.store.add_to_counter(scope, day.key, 1000, 0, day.ttl_seconds)

    await chat.send("Hello")
    refused = await chat.send("Please read this: " + "with many words " * 200)
    await chat.quotas.flush()
    used = await chat.store.read_counter(tenant_scope("bbbb-2222") or "", day.key)

    assert 1000 < used < 2000, used
    assert refused["text"].startswith("Your message and the earlier conversation together need")
    assert "more than is left of your organization's daily limit" in refused["text"]
    assert "reached" not in refused["text"]

    usage = (await chat.send("/usage"))["text"]
    assert "No limits apply to you" not in usage
    assert "There is no limit on your messages per minute and no daily limit on your own " in usage
    # The tenant's totals stay hidden: only the share used.
    end = day.resets_at
    assert usage.endswith(
        "Your organization has a daily limit for the assistant, shared by all its users: about "
        f"{used * 100 // 2000}% of it has been used since the last reset (next reset at 00:00 UTC "
        f"on {MONTHS[end.month - 1]} {end.day})."
    )

    in_japanese = Chat(client, connector, conversation_id="ja", locale="ja-JP", **TENANT)
    usage = (await in_japanese.send("/利用状況"))["text"]
    assert usage.endswith(
        f"組織全体で共有する1日の上限があります。前回のリセット以降、その約{used * 100 // 2000}%を"
        f"使用済みです（次回のリセット: 協定世界時（UTC）{end.month}月{end.day}日 0:00）。"
    )


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
    assert "Tokens used since the last daily reset: 0 (daily limit: 1,000,000;" in usage
    end = day.resets_at
    assert usage.endswith(
        "Your organization has a daily limit for the assistant, shared by all its users: about "
        "100% of it has been used since the last reset (next reset at 00:00 UTC on "
        f"{MONTHS[end.month - 1]} {end.day})."
    )
    # Without a tenant limit, nothing about the organization.
    elsewhere = Chat(await controlled_app(), connector, conversation_id="o", **TENANT)
    assert "organization" not in (await elsewhere.send("/usage"))["text"]


async def test_a_tenant_limit_with_less_left_than_any_message_needs_is_not_said_to_be_reached(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(
        **NO_USER_LIMITS, QUOTA_TENANT_TOKENS_PER_DAY=1000, MAX_OUTPUT_TOKENS=300
    )
    chat = Chat(client, connector, **TENANT)
    day = day_window(clock())
    scope = tenant_scope("bbbb-2222") or ""
    await chat.store.add_to_counter(scope, day.key, 800, 0, day.ttl_seconds)

    # The first message needs more than the 200 left; the next is refused at the gate, as no
    # message can fit: neither is said to have reached the limit, which /usage puts at 80%.
    first = await chat.send("Hello")
    assert first["text"].startswith("Your message needs about"), first["text"]
    refused = await chat.send("Hello again")
    assert refused["text"].startswith(
        "There is not enough of your organization's daily limit for the assistant left for a "
        "new message, so your message was not sent."
    ), refused["text"]
    assert "about 80% of it has been used" in (await chat.send("/usage"))["text"]


async def test_once_the_organizations_limit_is_used_up_messages_are_refused_before_being_stored(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(
        QUOTA_TENANT_TOKENS_PER_DAY=1000, MAX_OUTPUT_TOKENS=300, QUOTA_USER_REQUESTS_PER_MINUTE=3
    )
    chat = Chat(client, connector, **TENANT)
    day = day_window(clock())
    scope = tenant_scope("bbbb-2222") or ""
    await chat.store.add_to_counter(scope, day.key, 1000, 0, day.ttl_seconds)
    assert (await chat.send("Hello"))["text"].startswith("Your organization has reached")
    stored = len(await chat.store.conversation_messages(conversation(chat)))

    # This instance knows now: the next messages are refused at the gate. Not stored, and none
    # of them uses up the user's three requests a minute (the notice stays the organization's).
    for text in ("one", "two", "three", "four"):
        refused = await chat.send(text)
        assert refused["text"].startswith("Your organization has reached"), refused["text"]
    assert len(await chat.store.conversation_messages(conversation(chat))) == stored
    counts = await chat.store.read_usage(user_scope("user-1"), day.key)
    assert counts.requests_in(minute_number(minute_window(clock()))) == 1

    # Room again (another instance's settlement gave tokens back): the gate reads the counter
    # again and lets the message through.
    await chat.store.add_to_counter(scope, day.key, -900, 0, day.ttl_seconds)
    assert "five" in (await chat.send("five"))["text"]


async def test_usage_says_a_share_under_one_percent_of_the_organizations_limit_as_such(
    controlled_app: ControlledApp, connector: RecordingConnector, clock: FakeClock
) -> None:
    client = await controlled_app(QUOTA_TENANT_TOKENS_PER_DAY=100_000_000)
    chat = Chat(client, connector, **TENANT)
    await chat.send("Hello")  # some hundred tokens: well under 1% of the organization's limit
    end = day_window(clock()).resets_at

    usage = (await chat.send("/usage"))["text"]
    in_japanese = Chat(client, connector, conversation_id="ja", locale="ja-JP", **TENANT)
    japanese = (await in_japanese.send("/利用状況"))["text"]

    assert usage.endswith(
        "Your organization has a daily limit for the assistant, shared by all its users: <1% of "
        "it has been used since the last reset (next reset at 00:00 UTC on "
        f"{MONTHS[end.month - 1]} {end.day})."
    )
    assert japanese.endswith(
        "組織全体で共有する1日の上限があります。前回のリセット以降、その1%未満を使用済みです"
        f"（次回のリセット: 協定世界時（UTC）{end.month}月{end.day}日 0:00）。"
    )
