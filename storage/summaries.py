"""Summary arithmetic and list filters shared by every store, so they agree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage.models import ConversationSummary, Message, Role, SummaryDelta, SummaryQuery

# The flag reason of a conversation with at least one disliked answer (admin category
# `negative_feedback`; the list filter of that name reads the count).
NEGATIVE_FEEDBACK = "negative_feedback"

# What the stores do with a stored summary that cannot be read (`readable_summary` logs that it
# "was <outcome>"), besides skipping it in the admin list.
# Erasure: the summary of a shared conversation whose title may be the erased user's words is
# deleted, since those words cannot be cleared from it; `delete_user` counts such summaries
# under UNREADABLE_SHARED_SUMMARIES (only when there were any: they are not the user's own).
ERASED_UNREADABLE = "deleted by a user's erasure (its title could not be checked for their words)"
UNREADABLE_SHARED_SUMMARIES = "unreadableSharedSummaries"
# A turn: the summary starts over from the turn's delta, as for a new conversation.
RESTARTED_UNREADABLE = "replaced by a new one from the next turn"
# A user's data export: left out (the conversation's messages are still exported).
EXPORTED_UNREADABLE = "left out of a user's data export"
# Counted for a deletion's confirmation (`count_user_conversations`): it is the user's, so their
# erasure deletes it like a readable one.
COUNTED_UNREADABLE = "counted among the conversations a user's erasure deletes"

# What the stores do with a stored MESSAGE that cannot be read (`readable_message` logs that it
# "was <outcome>"), besides skipping it in the history window and transcripts.
# A user's data export: left out (the export holds what can be read; the rest is logged).
EXPORTED_UNREADABLE_MESSAGE = "left out of a user's data export"
# Erasure, in a conversation owned by someone else (a shared one): a message whose stored owner
# (SQLite's user_id column, the document's userId on Cosmos DB; both readable when the rest is
# not) is the erased user is deleted like the rest of their messages. Its words cannot be
# checked against the conversation's title, so the title is cleared (`title_to_clear`).
ERASED_UNREADABLE_MESSAGE = (
    "deleted by a user's erasure (it is theirs by its stored owner; the shared conversation's "
    "title, which its words could not be checked against, is cleared)"
)
# Erasure, in a shared conversation the user wrote in: a message whose stored owner cannot be
# read either. It may be someone else's, so it is left (deleting it could destroy another
# participant's words, or a document a newer version can read), and the conversation's title is
# cleared as above; `delete_user` counts such messages under UNATTRIBUTED_SHARED_MESSAGES (only
# when there were any), so the result and the audit record say the erasure left something for
# a person to review.
UNATTRIBUTED_UNREADABLE_MESSAGE = (
    "left by a user's erasure (its owner could not be read: it may be someone else's); "
    "counted as unattributedSharedMessages for review"
)
UNATTRIBUTED_SHARED_MESSAGES = "unattributedSharedMessages"
# Erasure, in a shared conversation where messages are left: a summary that cannot be read cannot
# have the user's deleted messages taken off its counts (`without_erased`).
UNLOWERED_UNREADABLE = (
    "left by a user's erasure with its counts as they were (the next turn starts it over)"
)


_SHARED_OWNER_PREFIX = "shared:"


def summary_owner(conversation_key: str, shared: bool, user_id: str) -> str:
    """Whose summary a conversation's is (its partition on Cosmos DB): the user's own, or the
    group's for a conversation several people write in (a Teams group chat or channel thread),
    which belongs to no one of them: an erasure of one person must not take it for theirs."""
    return f"{_SHARED_OWNER_PREFIX}{conversation_key}" if shared else user_id


def is_shared_owner(owner: str) -> bool:
    """Whether a summary's owner is a group's (`summary_owner` of a shared conversation), which
    stands for no person: no pseudonym to reveal, no data of its own to export or erase."""
    return owner.startswith(_SHARED_OWNER_PREFIX)


def new_summary(delta: SummaryDelta) -> ConversationSummary:
    """The summary a conversation starts with, before its first delta is applied: for a new
    conversation, and for one whose stored summary cannot be read (it starts over)."""
    return ConversationSummary(
        id=delta.conversation_id,
        conversation_id=delta.conversation_id,
        user_id=delta.user_id,
        channel_id=delta.channel_id,
        tenant_id=delta.tenant_id,
        title=delta.title,
        created_at=delta.at,
        last_activity_at=delta.at,
    )


def apply_delta(summary: ConversationSummary, delta: SummaryDelta) -> ConversationSummary:
    """The summary after one turn or rating change; shared by every store so they agree on the
    arithmetic.

    The negative-feedback count is the number of answers whose rating is a dislike: a delta
    takes one away when a dislike is taken back, never below 0 (a count the summary never had,
    e.g. a dislike given while it could not be read, is not taken from the others). When a
    taking back leaves 0, the `negative_feedback` flag reason goes with it; other reasons stay,
    and `flagged` is whether any reason is left."""
    negative_feedback = max(0, summary.negative_feedback_count + delta.negative_feedback)
    reasons = list(dict.fromkeys([*summary.flag_reasons, *delta.flag_reasons]))
    if delta.negative_feedback < 0 and negative_feedback == 0:
        reasons = [reason for reason in reasons if reason != NEGATIVE_FEEDBACK]
    # The first message's turn, written after a later turn's: one instance kept its update
    # (chat.kept) while the conversation's next turn ran on another. The conversation started
    # then, and is titled by it. Told by the turn, not by `at`: instances' clocks differ, by
    # more than the time between two messages at times, and every turn's update has a title.
    first = delta.first_message
    return summary.model_copy(
        update={
            "title": (delta.title or summary.title) if first else (summary.title or delta.title),
            "created_at": min(delta.at, summary.created_at) if first else summary.created_at,
            "last_activity_at": max(summary.last_activity_at, delta.at),
            "message_count": summary.message_count + delta.messages,
            "prompt_tokens": summary.prompt_tokens + delta.prompt_tokens,
            "completion_tokens": summary.completion_tokens + delta.completion_tokens,
            "filtered_count": summary.filtered_count + delta.filtered,
            "error_count": summary.error_count + delta.errors,
            "negative_feedback_count": negative_feedback,
            "flag_reasons": reasons,
            "flagged": bool(reasons),
        }
    )


def matches(summary: ConversationSummary, query: SummaryQuery) -> bool:
    """Whether a summary passes the admin list filters (the non-indexed part)."""
    if query.flagged is not None and summary.flagged != query.flagged:
        return False
    if query.flag_reason is not None and query.flag_reason not in summary.flag_reasons:
        return False
    if query.negative_feedback is not None and (
        (summary.negative_feedback_count > 0) != query.negative_feedback
    ):
        return False
    return query.has_errors is None or (summary.error_count > 0) == query.has_errors


def prompts_by_conversation(messages: Iterable[Message]) -> dict[str, list[str]]:
    """The texts of the user prompts among `messages`, by conversation."""
    found: dict[str, list[str]] = {}
    for message in messages:
        if message.role is Role.USER and message.text:
            found.setdefault(message.conversation_id, []).append(message.text)
    return found


def answers_without_prompt(messages: Iterable[Message]) -> set[str]:
    """The conversations where one of these messages (a user's, being erased) is an answer
    whose prompt is not among them. The prompt went in an earlier pass of the erasure while
    the answer was still being written (on another instance), and the turn's summary update
    then titled the conversation with it if it had no title: so its title may be their words
    though no prompt of theirs is left to show it (`title_to_clear`'s `unchecked`)."""
    messages = list(messages)
    prompts = {m.id for m in messages if m.role is Role.USER}
    return {
        m.conversation_id
        for m in messages
        if m.role is Role.ASSISTANT and m.reply_to_id and m.reply_to_id not in prompts
    }


def title_from(summary: ConversationSummary, prompts: Iterable[str]) -> bool:
    """Whether the summary's title is the start of one of these prompts. A title is the start of
    a conversation's first prompt, whoever wrote it; in a shared conversation (group chat,
    channel) that may be someone other than the summary's owner, so erasing a user must find
    their words here too. Matching on the text rather than on the title rule keeps that rule in
    one place (chat/service.py)."""
    return bool(summary.title) and any(text.startswith(summary.title) for text in prompts)


def title_to_clear(summary: ConversationSummary, prompts: Iterable[str], unchecked: bool) -> bool:
    """Whether a user's erasure clears the title of a conversation owned by someone else: the
    title is the start of one of their prompts there (`title_from`), or (`unchecked`) words there
    that are, or may be, theirs could not be read, so the title cannot be shown not to be them.
    A title is derived from the first prompt, not anyone's message; the next turn sets one
    again."""
    return bool(summary.title) and (unchecked or title_from(summary, prompts))


@dataclass(frozen=True)
class Erased:
    """What a user's erasure deleted from a conversation whose summary is not theirs (a shared
    one): what that summary's counts are lowered by (`without_erased`). `dislikes`: answers whose
    rating was a dislike, deleted with their user or whose rating was the erased rater's."""

    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dislikes: int = 0


def erased(messages: Iterable[Message | None]) -> Erased:
    """What these deleted messages had added to their conversation's summary: one each for the
    user's prompts and the answers to them (a `/new` marker is not counted) and the model usage
    each answer carries. One that could not be read (None) counts as one message without usage:
    all but the markers are counted, and a marker is seldom unreadable. Tokens the summary
    counted for a stream that broke off are on no message, so they stay."""
    count = prompt_tokens = completion_tokens = dislikes = 0
    for message in messages:
        if message is None:
            count += 1
            continue
        if message.role is Role.CONTEXT_RESET:
            continue
        count += 1
        if message.usage is not None:
            prompt_tokens += message.usage.prompt
            completion_tokens += message.usage.completion
        if message.feedback is not None and message.feedback.reaction == "dislike":
            dislikes += 1
    return Erased(count, prompt_tokens, completion_tokens, dislikes)


def without_erased(summary: ConversationSummary, gone: Erased) -> ConversationSummary:
    """The summary of a conversation whose other messages stay, without what a user's erasure
    deleted from it; never below 0 (a count the summary never had is not taken from the rest).
    Dislikes taken off are taken back as `apply_delta` takes them back: at 0 the
    `negative_feedback` flag reason goes."""
    reasons = summary.flag_reasons
    negative_feedback = max(0, summary.negative_feedback_count - gone.dislikes)
    if gone.dislikes and negative_feedback == 0:
        reasons = [reason for reason in reasons if reason != NEGATIVE_FEEDBACK]
    return summary.model_copy(
        update={
            "message_count": max(0, summary.message_count - gone.messages),
            "prompt_tokens": max(0, summary.prompt_tokens - gone.prompt_tokens),
            "completion_tokens": max(0, summary.completion_tokens - gone.completion_tokens),
            "negative_feedback_count": negative_feedback,
            "flag_reasons": reasons,
            "flagged": bool(reasons),
        }
    )
