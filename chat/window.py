"""The history window: the newest messages of a conversation that fit a token budget."""

from __future__ import annotations

from dataclasses import dataclass

from chat.speakers import fallback_label, speaker_line
from chat.tokens import TokenCounter
from storage.models import Message, MessageStatus, Role

# Messages that carry conversation context. Filtered prompts and withheld answers are left out:
# re-sending them would trip the filter again, and errors carry no content. So is the prompt of
# an answer the content filter blocked: sent again it asks for the same answer, with no answer
# after it. (An answer withheld because the filter could not run is no verdict on the prompt,
# which stays, as the prompt of any answer that did not come does: "try again" refers to it.)
# A prompt its user withdrew (deleted in Teams) has no text left; its answer goes with it, as the
# answer to a prompt the user edited afterwards does.
_CONTEXT_STATUSES = {MessageStatus.COMPLETE, MessageStatus.PARTIAL}


class MessageTooLong(Exception):
    """The current message alone does not fit the budget next to the system prompt."""

    def __init__(self, needed: int, room: int) -> None:
        super().__init__(f"the message needs {needed} tokens; {room} fit next to the system prompt")
        self.needed = needed  # tokens of the message
        self.room = max(0, room)  # tokens a message may have next to the system prompt


@dataclass(frozen=True)
class Window:
    messages: list[dict[str, str]]
    prompt_tokens: int
    dropped: int


def build_window(
    system_prompt: str,
    system_tokens: int,
    history: list[Message],
    counter: TokenCounter,
    budget: int,
) -> Window:
    """System prompt first, then as many of the newest messages as fit within `budget` tokens.

    `history` is oldest first and ends with the current user message, which is always kept (or
    MessageTooLong is raised). Stored token counts are used, so nothing is re-tokenized here:
    a message that names its author (a shared conversation, chat.speakers) costs its text's
    tokens and its author line's, both stored.
    """
    used = counter.family.reply_priming + counter.message_tokens(system_tokens)
    # What a message must fit into beside the system prompt and the current message.
    room = budget - used
    chosen: list[Message] = []
    dropped = 0
    # An answer comes after its prompt: newest first, the blocked answers are met first.
    blocked_prompts: set[str] = set()
    changed_prompts = {m.id for m in history if m.role is Role.USER and m.revised_at}
    since_reset: set[str] = set()
    for index, message in enumerate(reversed(history)):
        if message.role is Role.CONTEXT_RESET:
            dropped += len(history) - index - 1
            # An answer stored after the reset to a question from before it (a turn still
            # running on another instance when /new came): context without its question.
            stale = [m for m in chosen if _answers_from_before(m, since_reset)]
            for answer in stale:
                chosen.remove(answer)
                used -= counter.message_tokens(_content_tokens(answer))
            dropped += len(stale)
            break
        since_reset.add(message.id)
        if _blocked_by_filter(message) and message.reply_to_id:
            blocked_prompts.add(message.reply_to_id)
        if (
            message.status not in _CONTEXT_STATUSES
            or not message.text
            or message.id in blocked_prompts
            or _answers_changed(message, changed_prompts)
        ):
            if index == 0:
                raise ValueError("the newest message of the window must be the current prompt")
            continue
        cost = counter.message_tokens(_content_tokens(message))
        if index == 0:
            room -= cost
        elif cost > room:
            # It fits no window beside this prompt (one stored before such prompts were marked
            # not sent, chat.service): left out, not the end of the window, or nothing older
            # would ever be read again.
            dropped += 1
            continue
        if used + cost > budget:
            if index == 0:
                raise MessageTooLong(cost, budget - used)
            dropped += len(history) - index
            break
        used += cost
        chosen.append(message)
    chosen.reverse()
    messages = [{"role": "system", "content": system_prompt}]
    messages += [{"role": m.role.value, "content": _content(m)} for m in chosen]
    return Window(messages=messages, prompt_tokens=used, dropped=dropped)


def _content_tokens(message: Message) -> int:
    return message.tokens + (message.author_tokens or 0)


def _content(message: Message) -> str:
    """What the model reads of a message: its text, after a line naming its author when it
    was written in a shared conversation (only those store `author_tokens`)."""
    if message.author_tokens is None:
        return message.text
    label = message.author_name or fallback_label(message.conversation_id, message.user_id)
    return speaker_line(label) + message.text


def _answers_from_before(message: Message, since_reset: set[str]) -> bool:
    return (
        message.role is Role.ASSISTANT
        and message.reply_to_id is not None
        and message.reply_to_id not in since_reset
    )


def _blocked_by_filter(message: Message) -> bool:
    """An answer withheld on the content filter's verdict (not on a filter error): stored as
    filtered, or as the error record of a turn cut short after the verdict had blocked it (the
    shutdown, the turn's deadline), which keeps that verdict."""
    if message.role is not Role.ASSISTANT:
        return False
    if bool((message.filter or {}).get("filtered")):
        return True
    return message.status is MessageStatus.FILTERED and message.finish_reason == "content_filter"


def _answers_changed(message: Message, changed: set[str]) -> bool:
    """An answer to a prompt its user deleted or edited afterwards (storage.revisions): it
    answered words that are gone, and may quote them. The store marks it; the prompt says the
    same to a turn that stored the answer after the change (on another instance), when the mark
    could not be set."""
    return bool(message.prompt_changed) or (
        message.reply_to_id is not None and message.reply_to_id in changed
    )
