"""What an erasure's second pass deletes: the late writes of turns that began before the first
pass, never what the user or the conversation did after it. Shared by every store, so they agree.

A turn running on another instance (or worker) when a user or conversation was erased stores its
answer, its summary update and its dialog state when it ends, and a write the store refused is
written again for a while (chat.kept); a message that arrived before the erasure may also start
there after it. All of these stem from a prompt that arrived before the first pass. A person who
writes again after the erasure starts afresh: their new messages, the answers to them, a new
consent acceptance or a message waiting for it, a new rating are not late writes, and stay.

The line is drawn by what each stored document says of its turn, not by when it was written
(every late write is written after the first pass too):
- a prompt (or a `/new` marker) by its `createdAt`, when it arrived;
- an answer by its prompt (`replyToId`): it goes with a prompt from before the first pass, and
  with one that is no longer stored (the first pass deleted it while the answer was written);
- feedback (a rating, a `/feedback` comment) by its `at`, when it arrived: given before the
  first pass, it goes from the message it rates (which stays: a new answer, or another person's
  in a shared conversation), and a dislike among it from its conversation's count;
- a state document by the times it carries: `turn_arrived`, when the message arrived whose turn
  last changed it (a consent acceptance, a question asked), and `expires_from`, when a message
  waiting for consent was asked; one that carries neither stays.
The times come from the instances' clocks: instances whose clocks differ by more than the time
between the first pass and a user's next message could misplace that message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from storage.botstate import EXPIRES_FROM_PROPERTY, TURN_ARRIVED_PROPERTY
from storage.models import ConversationSummary, Message, Role, as_utc
from storage.summaries import erased, title_from, without_erased

# What the stores do with a stored message they cannot read in a second pass: it cannot be
# dated, and it is the erased user's (or the erased conversation's), so it goes.
LATE_UNREADABLE_MESSAGE = "deleted by an erasure's second pass (it could not be dated)"


def stems_from_before(
    message: Message | None, prompts: Mapping[str, Message | None], before: datetime
) -> bool:
    """Whether a stored message (None: unreadable) belongs to a turn whose prompt arrived before
    `before` (the first pass). `prompts` are the conversation's stored messages by id, where an
    answer's prompt is looked up."""
    if message is None:
        return True
    if message.role is Role.ASSISTANT and message.reply_to_id:
        prompt = prompts.get(message.reply_to_id)
        # Gone: deleted by the first pass while its answer was being written.
        return prompt is None or as_utc(prompt.created_at) < before
    return as_utc(message.created_at) < before


def summary_after(
    summary: ConversationSummary,
    gone: list[Message | None],
    prompts: Mapping[str, Message | None],
) -> ConversationSummary | None:
    """The summary of a conversation that keeps messages, once the second pass deleted `gone`
    from it (None: unchanged). Its counts no longer count them, and its title is cleared when
    it is the start of one of their prompts, or when one of them is an answer whose prompt is
    no longer stored (the late turn titled the conversation with words that are gone) or could
    not be read: the next turn titles it again."""
    if not gone:
        return None
    texts = [m.text for m in gone if m is not None and m.role is Role.USER and m.text]
    unchecked = any(
        m is None
        or (m.role is Role.ASSISTANT and bool(m.reply_to_id) and m.reply_to_id not in prompts)
        for m in gone
    )
    lowered = without_erased(summary, erased(gone))
    if summary.title and (unchecked or title_from(summary, texts)):
        lowered = lowered.model_copy(update={"title": ""})
    return lowered


def feedback_from_before(feedback: Any, before: datetime) -> bool:
    """Whether feedback as a stored message document holds it (its `feedback`) was given before
    `before`, by its `at` (when its rating or comment arrived). None (no feedback) is not; one
    whose time cannot be read cannot be dated, and is taken as from before: the second pass
    asks only of feedback that is the erased user's or the erased conversation's."""
    if not isinstance(feedback, Mapping):
        return False
    return _time_before(feedback.get("at"), before, undated=True)


def state_from_before(document: Mapping[str, Any], before: datetime) -> bool:
    """Whether a state document holds what a turn from before `before` stored: it was last
    changed by a turn whose message arrived before then (`turn_arrived`: a consent acceptance,
    a question asked), or it holds a message that has waited for consent since then. A document
    that carries neither time (written by an earlier release, or never changed by a turn since)
    stays: a consent given after the erasure must not be lost."""
    return _time_before(document.get(TURN_ARRIVED_PROPERTY), before, undated=False) or (
        _time_before(document.get(EXPIRES_FROM_PROPERTY), before, undated=False)
    )


def _time_before(value: Any, before: datetime, *, undated: bool) -> bool:
    """Whether `value` (ISO 8601, as stored) is before `before`; `undated` when it is not a
    time."""
    if not isinstance(value, str):
        return undated
    try:
        return as_utc(datetime.fromisoformat(value)) < before
    except ValueError:
        return undated
