"""`ChannelTurnContext` sends like botbuilder's TurnContext (addressing, defaults, handlers,
`responded`) without deep-copying each activity, never changes the caller's activity, and
leaves no reference cycle behind (a turn's objects are freed as soon as it ends, not by the
garbage collector)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    ChannelAccount,
    ConversationAccount,
)

from bot.adapter import ChannelTurnContext
from tests.unit.adapters import RecordingAdapter


def incoming() -> Activity:
    return Activity(
        type=ActivityTypes.message,
        id="in-1",
        channel_id="msteams",
        service_url="https://smba.example/",
        locale="ja-JP",
        conversation=ConversationAccount(id="conv-1"),
        from_property=ChannelAccount(id="user-1", name="User"),
        recipient=ChannelAccount(id="bot-1", name="Bot"),
        text="hi",
    )


async def test_outbound_activities_are_addressed_like_botbuilder_does_it() -> None:
    stock_adapter, ours_adapter = RecordingAdapter(), RecordingAdapter()
    reply = Activity(text="answer", id="caller-set-id")
    await TurnContext(stock_adapter, incoming()).send_activity(reply)
    await ChannelTurnContext(ours_adapter, incoming()).send_activity(reply)

    [stock], [ours] = stock_adapter.sent, ours_adapter.sent
    assert ours.serialize() == stock.serialize()
    assert ours.reply_to_id == "in-1" and ours.id is None and ours.type == "message"
    assert ours.from_property.id == "bot-1" and ours.recipient.id == "user-1"


async def test_the_callers_activity_is_left_as_it_was_and_can_be_sent_again() -> None:
    adapter = RecordingAdapter()
    context = ChannelTurnContext(adapter, incoming())
    reply = Activity(text="answer", id="caller-set-id", entities=[])
    before = reply.serialize()

    await context.send_activity(reply)
    await context.send_activity(reply)

    assert reply.serialize() == before
    assert [a.text for a in adapter.sent] == ["answer", "answer"]
    assert adapter.sent[0] is not reply and adapter.sent[0] is not adapter.sent[1]


async def test_send_handlers_see_the_activities_and_trace_alone_is_not_a_response() -> None:
    adapter = RecordingAdapter()
    context = ChannelTurnContext(adapter, incoming())
    seen: list[str] = []

    async def handler(ctx: TurnContext, activities: list[Activity], next_send: Any) -> Any:
        seen.extend(a.type for a in activities)
        return await next_send()

    context.on_send_activities(handler)
    await context.send_activity(Activity(type=ActivityTypes.trace, name="debug"))
    assert context.responded is False
    await context.send_activity("hello")
    assert context.responded is True
    assert seen == ["trace", "message"]


async def _run_handler_chain(context: TurnContext) -> list[str]:
    """Three send handlers, the second of which does not call the next one."""
    seen: list[str] = []

    def handler(name: str, calls_next: bool) -> Callable[..., Any]:
        async def handle(ctx: TurnContext, activities: list[Activity], next_send: Any) -> Any:
            seen.append(f"{name} before")
            if calls_next:
                await next_send()
            seen.append(f"{name} after")

        return handle

    context.on_send_activities(handler("first", True))
    context.on_send_activities(handler("second", False))
    context.on_send_activities(handler("third", True))
    await context.send_activity("hello")
    await context.update_activity(Activity(id="sent-1", text="edited"))
    return seen


async def test_send_and_update_handlers_chain_as_in_botbuilder() -> None:
    """Each handler gets the next one to call; one that does not call it ends the chain, and
    the send still happens (botbuilder-python's order, kept exactly)."""
    stock_adapter, ours_adapter = RecordingAdapter(), RecordingAdapter()
    stock = await _run_handler_chain(TurnContext(stock_adapter, incoming()))
    ours = await _run_handler_chain(ChannelTurnContext(ours_adapter, incoming()))

    assert ours == stock == ["first before", "second before", "second after", "first after"]
    assert [a.text for a in ours_adapter.sent] == [a.text for a in stock_adapter.sent]
    assert [a.text for a in ours_adapter.sent] == ["hello", "edited"]


async def test_a_turn_that_sent_replies_is_freed_without_the_garbage_collector() -> None:
    adapter = RecordingAdapter()
    gc.disable()
    try:
        context = ChannelTurnContext(adapter, incoming())

        async def handler(ctx: TurnContext, activities: list[Activity], next_send: Any) -> Any:
            return await next_send()

        context.on_send_activities(handler)
        await context.send_activity("hello")
        await context.update_activity(Activity(id="sent-1", text="edited"))
        freed = weakref.ref(context)
        del context, handler
        assert freed() is None
    finally:
        gc.enable()
