"""UserDataStore contract: erasing the people who wrote in a shared conversation (a Teams group
chat or channel, whose summary belongs to `shared:<conversation>`, chat/service.py) takes their
messages off its summary: its message count and the model usage their answers carried go down by
what was deleted, and once no message of the conversation is left the summary goes too, so the
admin list does not show an empty conversation with the old counts."""

from __future__ import annotations

from storage.base import Store
from storage.models import Role, SummaryQuery, Usage
from tests.storage.support import T0, delta, message

GROUP = "group-1"
OWNER = f"shared:{GROUP}"


async def _turn(store: Store, seq: int, user_id: str, prompt: int, completion: int) -> None:
    """One turn as the chat service writes it: the prompt, the answer with the model's usage,
    and the summary delta counting both."""
    await store.add_message(message(GROUP, seq, user_id=user_id, text=f"{user_id} asks {seq}"))
    await store.add_message(
        message(
            GROUP,
            seq + 1,
            role=Role.ASSISTANT,
            user_id=user_id,
            usage=Usage(prompt=prompt, completion=completion),
        )
    )
    await store.apply_summary_delta(
        delta(
            GROUP,
            OWNER,
            title=f"{user_id} asks {seq}" if seq == 1 else "",
            at=T0,
            messages=2,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
    )


async def _group_chat(store: Store) -> None:
    """Grace opens the group chat and has two turns, Ada one: six messages."""
    await _turn(store, 1, "grace", 100, 10)
    await _turn(store, 3, "grace", 200, 20)
    await _turn(store, 5, "ada", 400, 40)


async def test_erasing_one_author_takes_their_messages_and_tokens_off_the_shared_summary(
    store: Store,
) -> None:
    await _group_chat(store)
    # A `/new` marker is a message the summary never counted.
    await store.add_message(message(GROUP, 7, role=Role.CONTEXT_RESET, user_id="grace", text=""))

    deleted = await store.delete_user("grace")

    assert deleted == {"conversations": 0, "messages": 5, "states": 0}
    summary = await store.get_summary(OWNER, GROUP)
    assert summary is not None
    assert (summary.message_count, summary.prompt_tokens, summary.completion_tokens) == (2, 400, 40)
    assert summary.title == ""  # it was grace's words
    assert [m.user_id for m in await store.conversation_messages(GROUP)] == ["ada", "ada"]


async def test_erasing_every_author_of_a_shared_conversation_removes_its_summary(
    store: Store,
) -> None:
    """The tester's steps: grace writes, then ada; grace is deleted, then ada."""
    await _group_chat(store)
    await store.delete_user("grace")

    assert await store.delete_user("ada") == {"conversations": 0, "messages": 2, "states": 0}

    assert await store.conversation_messages(GROUP) == []
    assert await store.get_summary(OWNER, GROUP) is None
    assert await store.find_summary(GROUP) is None
    assert (await store.list_summaries(SummaryQuery(), 10)).items == []
    # The conversation's next turn starts a summary of its own again.
    await _turn(store, 9, "ada", 1, 1)
    again = await store.get_summary(OWNER, GROUP)
    assert again is not None and again.message_count == 2


async def test_a_shared_summary_is_kept_while_a_message_someone_else_wrote_is_left(
    store: Store,
) -> None:
    """Only the erased user's messages go; a message of another participant the summary never
    counted (written before a summary, say) still keeps the conversation listed."""
    await store.add_message(message(GROUP, 0, user_id="ada", text="ada, before it counted"))
    await _turn(store, 1, "grace", 100, 10)

    await store.delete_user("grace")

    summary = await store.find_summary(GROUP)
    assert summary is not None
    assert (summary.message_count, summary.prompt_tokens, summary.completion_tokens) == (0, 0, 0)
    assert [m.seq for m in await store.conversation_messages(GROUP)] == [0]
