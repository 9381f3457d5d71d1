"""Teams' feedback buttons: the `message/submitAction` invoke, stored on the rated message.

Teams sends `value: {"actionName": "feedback", "actionValue": {"reaction": "like"|"dislike",
"feedback": "{\\"feedbackText\\": \\"...\\"}"}}` (`feedback` is a JSON *string*) with `replyToId`
= the bot message that was rated, and expects 200 with body `{}`. Teams keeps nothing: this is
the only record. Facts: shared/reference/bot-framework-teams-directline.md.

A rating can be changed (each click is another invoke): the conversation's negative-feedback
count follows the answers' current ratings (`FeedbackRecorder.record`); a click changes the
reaction and keeps the rater's own comment given earlier (with `/feedback`). A rating is stored with
who gave it (in a group chat or channel, anyone may rate any answer): it is theirs to export and
to have erased (`storage.ratings`).

The user has the answer before its record is stored; when the store refused that record, the
answer is kept in this process and written again (chat.kept). A rating of it is kept with it and
stored on it once it is written (`KeptWrites.keep_rating`): neither lost nor put elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from chat.kept import KeptWrites
from storage.base import MessageStore, StoreError
from storage.ids import safe_id
from storage.models import MAX_FEEDBACK_CHARS, Feedback, FeedbackUpdate, Message, Role
from storage.ratings import Ratings, rerated
from storage.summaries import summary_owner

log = logging.getLogger(__name__)

SUBMIT_ACTION_INVOKE = "message/submitAction"
# Stored messages searched for the rated one: one single-partition query, newest first.
SEARCH_DEPTH = 200
# How long a rating looks for its answer when the answer's turn runs elsewhere (another worker
# or instance): looked for again after 0.05, 0.1, 0.2 ... s, while under this.
ELSEWHERE_WAIT_SECONDS = 3.0

Reaction = Literal["like", "dislike"]


@dataclass(frozen=True)
class FeedbackSubmission:
    rated_activity_id: str
    reaction: Reaction
    text: str
    # Who rated: their user id as their own messages in that channel carry it
    # (`bot.handler.user_key`); in a shared conversation not necessarily the answer's user.
    rater: str
    # Given in a Teams group chat or channel, where feedback that names nobody (stored before
    # raters were recorded) cannot be told to be the rater's own (`storage.ratings.own_feedback`).
    shared: bool = False
    # When the rating arrived (UTC; None: now): the feedback is dated by it (`Feedback.at`), so
    # an erasure's second pass clears one that arrived before the erasure and was stored after
    # it, as a rating that waited for its answer may be (storage.late).
    arrived_at: datetime | None = None


def parse_feedback(
    raw: dict[str, Any], rater: str, shared: bool = False
) -> FeedbackSubmission | None:
    """The rating in a `message/submitAction` invoke, given by `rater` (in a shared
    conversation: `shared`), or None when it is not a feedback action."""
    value = raw.get("value")
    if not isinstance(value, dict) or value.get("actionName") != "feedback":
        return None
    action = value.get("actionValue")
    reply_to = raw.get("replyToId")
    if not isinstance(action, dict) or not isinstance(reply_to, str) or not reply_to:
        return None
    reaction = action.get("reaction")
    if reaction not in ("like", "dislike"):
        return None
    return FeedbackSubmission(
        reply_to, reaction, _feedback_text(action.get("feedback")), rater, shared
    )


def _feedback_text(feedback: Any) -> str:
    if isinstance(feedback, str):
        plain: str = feedback
        try:
            feedback = json.loads(plain)
        except ValueError:
            return plain.strip()[:MAX_FEEDBACK_CHARS]  # a client that sends plain text
    if isinstance(feedback, dict):
        text = feedback.get("feedbackText")
        return text.strip()[:MAX_FEEDBACK_CHARS] if isinstance(text, str) else ""
    return ""


class FeedbackRecorder:
    def __init__(
        self,
        messages: MessageStore,
        ratings: Ratings,
        elsewhere_wait_seconds: float = ELSEWHERE_WAIT_SECONDS,
        kept: KeptWrites | None = None,
    ) -> None:
        self._messages = messages
        # The answers whose records the store refused, kept by the chat service (chat.kept).
        self._kept = kept
        # Shared with the /feedback command (dialogs.commands), so that the changes of one
        # conversation's ratings are counted one at a time, whichever way they came.
        self._ratings = ratings
        self._elsewhere_wait = elsewhere_wait_seconds

    async def record(
        self,
        conversation_key: str,
        submission: FeedbackSubmission,
        turns_settled: Callable[[], Awaitable[None]] | None = None,
    ) -> Message | None:
        """Store the rating, with its rater, on the rated assistant message; None when that
        message is unknown. It replaces the feedback the answer had, except the rater's own
        comments given earlier (with `/feedback` or with a button): those stay, and the text
        given with this rating is added to them (`storage.ratings.rerated`, decided in the
        store's write, so a comment stored meanwhile is kept too). Feedback someone else gave
        is replaced whole.

        The conversation's negative-feedback total is the number of its answers whose rating is
        a dislike: a rating that makes an answer's rating a dislike adds one and flags the
        conversation for review (admin page filter `negative_feedback`), one that changes a
        dislike to a like takes one away (the flag reason goes when none is left), and a dislike
        of an answer already disliked changes nothing. What the rating replaced is what the
        store's write replaced (`set_feedback`), not what an earlier read saw, so two ratings of
        one answer arriving together are counted in the order they were stored; in this process
        the ratings of one conversation also update its summary one at a time (`Ratings`).

        When the message is not found and `turns_settled` is given, it is awaited and the
        message looked for once more: a channel shows an answer (with its buttons) before the
        turn stores it, so a quick rating can arrive while that write is still under way. That
        turn may run where this process cannot wait for it (another worker or instance, over
        the same store): then the message is looked for a few more times, for up to
        `elsewhere_wait_seconds`.

        An answer whose record the store refused is kept in this process (chat.kept): the
        rating is then kept behind it and stored on it once it is written; the kept answer is
        returned. StoreError when it can be neither stored nor kept.
        """
        conversation_id = safe_id(conversation_key)
        rating = Feedback(
            reaction=submission.reaction, text=submission.text, user_id=submission.rater
        )
        if submission.arrived_at is not None:
            rating = rating.model_copy(update={"at": submission.arrived_at})
        feedback = rerated(rating, submission.shared)
        owner = summary_owner(conversation_key, submission.shared, submission.rater)
        try:
            rated, kept = await self._find(conversation_id, submission, feedback, owner)
        except StoreError:
            # The store refuses reads while the answer's own write is still being retried: once
            # its turn has settled, that answer is kept (chat.kept) and found there.
            if turns_settled is None:
                raise
            rated, kept = None, False
        if rated is None and turns_settled is not None:
            await turns_settled()
            rated, kept = await self._find(conversation_id, submission, feedback, owner)
            waited, pause = 0.0, 0.05
            while rated is None and waited < self._elsewhere_wait:
                await asyncio.sleep(pause)
                waited, pause = waited + pause, pause * 2
                rated, kept = await self._find(conversation_id, submission, feedback, owner)
        if rated is None:
            log.info("feedback for an unknown message", extra={"reaction": submission.reaction})
            return None
        if kept:
            return rated
        change = await self._ratings.store(conversation_id, rated, feedback, owner=owner)
        if change is None:  # deleted since it was found (an erasure)
            log.info("feedback for a deleted message", extra={"reaction": submission.reaction})
            return None
        log.info(
            "feedback stored",
            extra={"reaction": submission.reaction, "with_text": bool(submission.text)},
        )
        return change.message

    async def _find(
        self,
        conversation_id: str,
        submission: FeedbackSubmission,
        feedback: FeedbackUpdate,
        owner: str,
    ) -> tuple[Message | None, bool]:
        """The rated answer, and whether it is kept (chat.kept) with `feedback` queued behind
        it. Kept answers are looked at first: one written meanwhile is no longer kept, and is
        then in the store."""
        if self._kept is not None:
            answer = self._kept.kept_answer(conversation_id, submission.rated_activity_id)
            if answer is not None and self._kept.keep_rating(
                conversation_id,
                answer.id,
                lambda: self._ratings.store(conversation_id, answer, feedback, owner=owner),
            ):
                log.info(
                    "feedback kept until its answer is stored",
                    extra={
                        "event": "feedback_kept",
                        "reaction": submission.reaction,
                        "with_text": bool(submission.text),
                    },
                )
                return answer, True
        recent = await self._messages.recent_messages(conversation_id, SEARCH_DEPTH)
        found = next(
            (
                m
                for m in reversed(recent)
                if m.role is Role.ASSISTANT and m.activity_id == submission.rated_activity_id
            ),
            None,
        )
        return found, False
