"""A user's change of their own stored message, told by their channel: Teams sends one when they
delete (`softDeleteMessage`) or edit (`editMessage`) a message they sent the bot. The rules every
store applies, so they decide alike (`MessageStore.revise_message`).

A deletion withdraws the message: its text is erased (not hidden), its status becomes
`withdrawn`, so it leaves the model's context and the transcript shows only that the user
deleted a message. An edit puts the new text in place of the old, keeping no copy, and is not
answered. Either way the answer to the old text is kept for reviewers (the Teams chat still shows
it) but leaves the context (`Message.prompt_changed`): it answered words that are gone, and may
quote them. And the conversation's title goes with the old text when it was taken from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from storage.models import ConversationSummary, Message, MessageStatus, Role, as_utc
from storage.summaries import title_from

# What `revise_message` did: "withdrawn" or "edited"; or why it changed nothing: no such message
# (never stored: not for the bot, refused, erased or expired), someone else's (or an answer),
# withdrawn already (final: a late edit does not bring text back), an edit older than the change
# stored, or a stored message that cannot be read (logged, `UNREVISED_UNREADABLE`).
RevisionOutcome = Literal[
    "withdrawn", "edited", "missing", "not_theirs", "already_withdrawn", "stale", "unreadable"
]
# What a store does with a stored message or summary it cannot read when a user deletes or edits
# their message (the log says it "was <outcome>"): a message cannot be shown to be theirs, and a
# summary that cannot be read is started over by the conversation's next turn.
UNREVISED_UNREADABLE = "left as it was by a user's deletion or edit of their message"


class MessageRevision(BaseModel):
    model_config = ConfigDict(frozen=True)

    conversation_id: str
    message_id: str
    # Who deleted or edited it: only a message of theirs (`Message.user_id`) changes.
    user_id: str
    # The owner of the conversation's summary (its Cosmos DB partition), whose title may change.
    summary_owner: str
    # The answer to it, which is marked `prompt_changed`; "": none known.
    answer_id: str = ""
    # The new text and its token count; "" withdraws the message.
    text: str = ""
    tokens: int = 0
    # The conversation's title when it was taken from the old text: the new text's ("" on a
    # withdrawal).
    title: str = ""
    # When the user made the change (the channel's timestamp).
    at: datetime

    @property
    def withdraws(self) -> bool:
        return not self.text


def revised(stored: Message, revision: MessageRevision) -> Message | RevisionOutcome:
    """The stored message after the revision, or why it does not change."""
    if stored.role is not Role.USER or stored.user_id != revision.user_id:
        return "not_theirs"
    if stored.status is MessageStatus.WITHDRAWN:
        return "already_withdrawn"
    if revision.withdraws:
        # Whenever it was asked: a withdrawal never waits behind an edit.
        return stored.model_copy(
            update={
                "text": "",
                "tokens": 0,
                # Who wrote it stays as their id; their display name was only for the model.
                "author_name": None,
                "author_tokens": None,
                "status": MessageStatus.WITHDRAWN,
                "revised_at": revision.at,
            }
        )
    if stored.revised_at is not None and as_utc(revision.at) <= as_utc(stored.revised_at):
        return "stale"  # an edit delivered late, after a newer one
    return stored.model_copy(
        update={"text": revision.text, "tokens": revision.tokens, "revised_at": revision.at}
    )


def retitled(
    summary: ConversationSummary, old: Message, revision: MessageRevision
) -> ConversationSummary | None:
    """The summary with its title changed when the title was taken from the old text
    (`title_from`, as an erasure decides); None: it stays."""
    if not title_from(summary, [old.text]) or summary.title == revision.title:
        return None
    return summary.model_copy(update={"title": revision.title})


def outcome_of(revision: MessageRevision) -> RevisionOutcome:
    return "withdrawn" if revision.withdraws else "edited"
