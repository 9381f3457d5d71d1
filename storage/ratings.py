"""Feedback on answers (a like/dislike and its comment, `Feedback`) as the personal data of whoever
gave it, and a rating's effect on its conversation's negative-feedback count.

Feedback is stored on the rated answer, but in a shared conversation (a Teams group chat or
channel) the rater may be someone other than the person the answer was for. So it goes with the
rater (`Feedback.user_id`): their data export holds it (`given_feedback`), the asker's does not
(`exported_message`), and erasing the rater clears it wherever it is (the stores' `delete_user`).
Feedback stored before raters were recorded names nobody: it stays part of its message.

`Ratings` is here, not in `bot/`, because both the feedback buttons (bot.feedback) and the
`/feedback` command (dialogs.commands) change ratings, and `storage` is what both may import.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import ValidationError

from storage.base import MessageStore, SummaryStore
from storage.models import (
    MAX_FEEDBACK_CHARS,
    Feedback,
    FeedbackChange,
    FeedbackUpdate,
    Message,
    SummaryDelta,
    log_unreadable_summary,
)
from storage.summaries import NEGATIVE_FEEDBACK

# The key under which a user's erasure counts the feedback it cleared from messages that stay
# (`UserDataStore.delete_user`).
FEEDBACK_CLEARED = "feedback"
UNFLAGGED_UNREADABLE = "not flagged for a dislike (the rating is kept on its message)"
UNCOUNTED_UNREADABLE = "not updated for a dislike taken back (the rating is kept on its message)"


# Between two comments on one answer, as reviewers read them (the admin transcript shows the
# feedback on one line, so a line break would not show).
FEEDBACK_SEPARATOR = " | "


def own_feedback(stored: Feedback | None, rater: str, shared: bool) -> bool:
    """Whether the feedback stored on an answer is `rater`'s own. Feedback stored before raters
    were recorded names nobody: in a 1:1 chat it can only be the user's own; in a shared
    conversation (a Teams group chat or channel) whose it is cannot be told, so it is not."""
    return stored is not None and (stored.user_id == rater or (not stored.user_id and not shared))


def with_comment(earlier: str, comment: str) -> str:
    """`comment` after the comments already on an answer, within MAX_FEEDBACK_CHARS: the oldest
    text is cut (from its start, marked with "…") when both do not fit. The same comment again
    (a redelivered /feedback, or sent twice) adds nothing, nor does none (a bare rating)."""
    if not comment:
        return earlier
    if not earlier or earlier == comment or earlier.endswith(FEEDBACK_SEPARATOR + comment):
        return earlier or comment
    room = MAX_FEEDBACK_CHARS - len(FEEDBACK_SEPARATOR) - len(comment)
    if room < 2:
        return comment  # a comment of (nearly) the maximum length leaves no room for more
    if len(earlier) > room:
        earlier = "…" + earlier[len(earlier) - room + 1 :]
    return earlier + FEEDBACK_SEPARATOR + comment


def rerated(rating: Feedback, shared: bool) -> FeedbackUpdate:
    """What a like/dislike (`rating`, with the text given with it) stores on an answer, decided
    from the feedback it replaces in the store's write (`MessageStore.set_feedback`): the
    rater's own comments given earlier (with `/feedback`, or with a button) stay and the new
    text is added to them, as `/feedback` adds a comment to their rating; only the reaction
    changes. Feedback someone else gave (in a group chat or channel) is replaced whole, as a
    rating by another's click: neither their words nor their reaction may be stored as this
    rater's."""

    def update(previous: Feedback | None) -> Feedback:
        if previous is None or not own_feedback(previous, rating.user_id, shared):
            return rating
        return rating.model_copy(update={"text": with_comment(previous.text, rating.text)})

    return update


def disliked(feedback: Feedback | None) -> int:
    """1 when this feedback is a dislike: what it adds to the negative-feedback count."""
    return int(feedback is not None and feedback.reaction == "dislike")


def rater_of(document: dict[str, Any]) -> str:
    """Who gave the feedback on a stored message document ("" when it has none, or it was stored
    before raters were recorded), read from the document as stored."""
    feedback = document.get("feedback")
    rater = feedback.get("userId") if isinstance(feedback, dict) else None
    return rater if isinstance(rater, str) else ""


def exported_message(document: dict[str, Any], user_id: str) -> dict[str, Any]:
    """A message document as `user_id`'s data export holds it: as stored, except feedback that
    someone else gave on it, which is left out whole (reaction, comment, who and when). It is
    the rater's, in their export and gone with their erasure; Teams shows a rating only to the
    one who gave it, and in a chat of two even a bare reaction would say who gave it."""
    rater = rater_of(document)
    if rater and rater != user_id:
        return {key: value for key, value in document.items() if key != "feedback"}
    return document


def given_feedback(document: dict[str, Any]) -> dict[str, Any]:
    """What the rater's data export holds of feedback they gave on another person's message (a
    stored message document): the feedback as stored and where it is (conversation and message
    id), never the message itself, which is the other person's."""
    return {
        "conversationId": document.get("conversationId"),
        "messageId": document.get("id"),
        "feedback": document.get("feedback"),
    }


class Ratings:
    """Stores feedback on answers and keeps each conversation's negative-feedback count equal to
    the number of its answers whose rating is a dislike. The changes of one conversation's
    ratings are stored and counted one at a time in this process (a conversation's activities
    all reach one worker), so the count follows them in the order they were stored: a taking
    back counted before the dislike it takes back would find nothing to take (the count never
    goes below 0) and leave the dislike counted."""

    def __init__(self, messages: MessageStore, summaries: SummaryStore) -> None:
        self._messages = messages
        self._summaries = summaries
        # Per conversation: the lock its rating changes take turns on here, and how many hold
        # or wait for it (the entry goes when none do).
        self._turns: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    async def store(
        self,
        conversation_id: str,
        rated: Message,
        feedback: Feedback | FeedbackUpdate,
        *,
        owner: str,
    ) -> FeedbackChange | None:
        """`feedback` on the rated answer, replacing what it had (`set_feedback`; an update
        decides from that, in the same write: `rerated`), then counted:
        a change that makes the answer's rating a dislike adds one and flags the conversation
        for review (admin filter `negative_feedback`), one that takes a dislike away takes one
        away (the flag reason goes when none is left). What it replaced is what the store's
        write replaced, not what an earlier read saw. None when the message is gone.
        `owner`: whose summary the conversation's is (`storage.summaries.summary_owner`), for
        a summary the count starts again (one gone with retention or found unreadable)."""
        async with self._one_at_a_time(conversation_id):
            change = await self._messages.set_feedback(conversation_id, rated.id, feedback)
            if change is None:
                return None
            dislikes = disliked(change.message.feedback) - disliked(change.previous)
            if dislikes:
                await self._count_dislikes(conversation_id, rated, dislikes, owner)
        return change

    @asynccontextmanager
    async def _one_at_a_time(self, conversation_id: str) -> AsyncIterator[None]:
        lock, users = self._turns.setdefault(conversation_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._turns[conversation_id]

    async def _count_dislikes(
        self, conversation_id: str, rated: Message, dislikes: int, owner: str
    ) -> None:
        """`dislikes` (+1 or -1) more toward the conversation's negative-feedback total."""
        # The summary's owner (a user, or the group of a shared conversation) is its key.
        try:
            # A point read under its owner; the query across owners (on Cosmos DB, across
            # partitions) only for a summary stored under someone else, as before shared
            # conversations had their own owner, or for none at all.
            summary = await self._summaries.get_summary(owner, conversation_id)
            if summary is None:
                summary = await self._summaries.find_summary(conversation_id)
        except ValidationError as exc:
            # Its owner is unknown, and a guessed one would start a second summary: the rating
            # stays on its message, and the conversation's next turn starts the summary over.
            log_unreadable_summary(
                exc, conversation_id, UNFLAGGED_UNREADABLE if dislikes > 0 else UNCOUNTED_UNREADABLE
            )
            return
        if summary is None and dislikes < 0:
            return  # no summary counted the dislike taken back
        await self._summaries.apply_summary_delta(
            SummaryDelta(
                conversation_id=conversation_id,
                # Not the rated answer's user: in a group chat that is whoever asked, and a
                # summary of theirs would make the group's messages theirs to erase.
                user_id=summary.user_id if summary is not None else owner,
                channel_id=rated.channel_id,
                tenant_id=rated.tenant_id,
                negative_feedback=dislikes,
                flag_reasons=[NEGATIVE_FEEDBACK] if dislikes > 0 else [],
            )
        )
