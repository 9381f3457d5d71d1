"""Stored documents. Each has a `type` and a `schema_version`; field aliases are the camelCase
names the documents carry in Cosmos DB (SQLite stores the same JSON)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticSerializationError

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """The same moment in UTC; a time without a zone is taken as UTC (both stores agree)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Document(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """`to_doc` as JSON text, made in one step (about a third of the time of json.dumps of
        `to_doc()`): non-ASCII characters are written as they are, not escaped. Half a
        surrogate pair (which the ways in replace, but a document read from an older store may
        hold) cannot be UTF-8: that one is written escaped, as json.dumps does."""
        try:
            return self.model_dump_json(by_alias=True, exclude_none=True)
        except PydanticSerializationError:
            return json.dumps(self.to_doc())


_D = TypeVar("_D", bound=Document)


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    # A marker written by `/new`: the history window stops here.
    CONTEXT_RESET = "context_reset"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"
    FILTERED = "filtered"
    ERROR = "error"
    # A user's message they deleted in their channel (Teams): its text is erased, the record
    # stays so the transcript shows that something was withdrawn (storage.revisions).
    WITHDRAWN = "withdrawn"


class Usage(Document):
    prompt: int = 0
    completion: int = 0


# The longest feedback comment kept on a message, however it was given (a thumbs comment,
# /feedback); longer ones are cut.
MAX_FEEDBACK_CHARS = 2000


class Feedback(Document):
    """A rating and/or comment on an answer, stored on the rated message. It is the personal data
    of whoever gave it (`user_id`), which in a shared conversation (a Teams group chat or
    channel) may be someone other than the person the answer was for: it is exported and erased
    with the rater (`storage.ratings`), not with the message's user."""

    reaction: Literal["like", "dislike"] | None = None
    text: str = ""
    at: datetime = Field(default_factory=utcnow)
    # The rater, as their own messages carry them (`Message.user_id` of that channel). "" on
    # feedback stored before raters were recorded: it cannot be attributed, so it stays part of
    # the message it rates (exported and deleted with that message's user).
    user_id: str = ""


# A rating as the store is to keep it, given the feedback it replaces (None: none): decided
# inside the store's atomic write (`MessageStore.set_feedback`), so feedback stored meanwhile
# is what it sees (`storage.ratings.rerated`).
FeedbackUpdate = Callable[[Feedback | None], Feedback]


class Message(Document):
    """One message of a conversation (container `messages`, partition key `/conversationId`).
    Frozen: a read message may be shared between turns (`MessageDecoder`); a change is a
    `model_copy(update=...)`."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    type: Literal["message"] = "message"
    schema_version: int = 1
    id: str
    conversation_id: str
    seq: int
    role: Role
    text: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    activity_id: str | None = None
    reply_to_id: str | None = None
    user_id: str = ""
    tenant_id: str = ""
    channel_id: str = ""
    locale: str = ""
    status: MessageStatus = MessageStatus.COMPLETE
    # Token count of `text` for the model family in use, stored so the window never recounts.
    tokens: int = 0
    # A user's message in a shared conversation (a Teams group chat or channel thread) reaches
    # the model after a line naming its author (chat.speakers). `author_name`: their display
    # name as the channel gave it, made one plain line (None: the channel gave none, and the
    # model reads a neutral label). Personal data of the message's user: exported and deleted
    # with the message, dropped when they withdraw it. `author_tokens`: that line's token
    # count, stored as `tokens` is; None on every other message (and on those stored before
    # authors were named), which reaches the model as its text alone.
    author_name: str | None = None
    author_tokens: int | None = None
    usage: Usage | None = None
    deployment: str | None = None
    latency_ms: int | None = None
    finish_reason: str | None = None
    # Content-filter verdict from chat.filters, as JSON: storage knows no chat types.
    filter: dict[str, Any] | None = None
    # Text that was withheld from the user (filtered output), for reviewers only.
    withheld_text: str | None = None
    error: str | None = None
    correlation_id: str | None = None
    feedback: Feedback | None = None
    # When the user last edited or deleted this message in their channel (storage.revisions).
    revised_at: datetime | None = None
    # On an answer whose prompt the user deleted or edited afterwards (storage.revisions): it
    # answered words that are gone, and may quote them, so it leaves the model's context.
    prompt_changed: bool | None = None
    ttl: int | None = None


class FeedbackChange(BaseModel):
    """What `set_feedback` did: the message as stored now, and the feedback it replaced (None:
    it had none), read in the same atomic write, so two changes of one message's rating never
    both see the same previous one."""

    model_config = ConfigDict(frozen=True)

    message: Message
    previous: Feedback | None = None


class ConversationSummary(Document):
    """One per conversation (container `conversations`, partition key `/userId`)."""

    type: Literal["conversation"] = "conversation"
    schema_version: int = 1
    id: str
    user_id: str
    conversation_id: str
    channel_id: str = ""
    tenant_id: str = ""
    title: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    last_activity_at: datetime = Field(default_factory=utcnow)
    message_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    filtered_count: int = 0
    error_count: int = 0
    negative_feedback_count: int = 0
    flagged: bool = False
    flag_reasons: list[str] = Field(default_factory=list)
    ttl: int | None = None


class SummaryDelta(BaseModel):
    """What one turn (or one change of a rating) adds to a conversation summary; applied
    atomically by the store, once: `id` (unique per delta) lets a store tell a write it made
    already, whose answer was lost, from one still to make."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    conversation_id: str
    user_id: str
    channel_id: str = ""
    tenant_id: str = ""
    title: str = ""
    at: datetime = Field(default_factory=utcnow)
    # The turn of the conversation's first message (as the turn read the store): its update,
    # written after a later turn's, still gives the conversation its start and title
    # (`storage.summaries.apply_delta`).
    first_message: bool = False
    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    filtered: int = 0
    errors: int = 0
    # +1 when an answer's rating becomes a dislike, -1 when a dislike is taken back; the count
    # never goes below 0, and the `negative_feedback` reason goes when it reaches 0
    # (`storage.summaries.apply_delta`).
    negative_feedback: int = 0
    flag_reasons: list[str] = Field(default_factory=list)


class SummaryQuery(BaseModel):
    """Filters of the admin conversation list. All optional; combined with AND."""

    # Conversations of any of these ids: the ids one person is stored under (Teams and Azure's
    # Direct Line give the same person two).
    user_ids: list[str] | None = Field(default=None, min_length=1)
    # With `user_ids`: also the conversations someone else owns (a Teams group chat's or
    # channel's, whose summary belongs to `shared:<conversation>`) that hold a message under one
    # of them, as a deletion of that person's data finds their messages there.
    with_shared: bool = False
    tenant_id: str | None = None
    channel_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    flagged: bool | None = None
    flag_reason: str | None = None
    negative_feedback: bool | None = None
    has_errors: bool | None = None


class Page(BaseModel):
    items: list[ConversationSummary]
    continuation: str | None = None


class ConversationCount(BaseModel):
    """The conversations a user owns: every stored summary under their id, which is what a
    deletion of their data deletes and counts as `conversations`, and how many of those cannot be
    read (the admin list leaves those out). Besides those, the deletion deletes their messages in
    conversations someone else owns (shared ones): `shared_messages` in
    `shared_conversations`, found by the messages' user id, readable or not."""

    total: int = 0
    unreadable: int = 0
    shared_messages: int = 0
    shared_conversations: int = 0


class AuditRecord(Document):
    """Append-only record of an admin action (container `audit`, partition key `/day`)."""

    type: Literal["audit"] = "audit"
    schema_version: int = 1
    id: str
    day: str
    at: datetime = Field(default_factory=utcnow)
    actor: str
    action: str
    target: str = ""
    # The people the action concerned besides `target`, by pseudonym: a transcript view, a
    # conversation export or deletion (whose target is the conversation id) names its owner
    # and the authors and raters of the messages it read, so the person's data export and the
    # audit filter find it, also after their data is deleted. An export's or deletion's later
    # records (its outcome) name them again.
    subjects: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)
    client_ip: str = ""


class AuditQuery(BaseModel):
    """Filters of the audit log. All optional; combined with AND."""

    action: str | None = None
    # Records of any other action (with no `action`): the admin leaves its own reads of the
    # log out unless they are asked for.
    except_actions: list[str] = Field(default_factory=list)
    actor: str | None = None
    # Records whose `target`, or one of whose `subjects`, is one of these (a conversation id,
    # or every pseudonym of one person).
    targets: list[str] | None = Field(default=None, min_length=1)
    # `since` <= at < `until`.
    since: datetime | None = None
    until: datetime | None = None


class CounterResult(BaseModel):
    value: int
    allowed: bool


class UsageCounts(BaseModel):
    """One scope's usage for one UTC day (one document, or one SQLite row): the day's tokens,
    and the requests of the latest minute it counted (minutes since the Unix epoch, UTC)."""

    tokens: int = 0
    minute: int = 0
    requests: int = 0

    def requests_in(self, minute: int) -> int:
        """Requests counted in `minute`. A count kept for a later minute (an instance whose clock
        runs ahead) counts as this minute's too: stricter, never looser."""
        return self.requests if self.minute >= minute else 0


class UsageChange(BaseModel):
    """One atomic update of a usage document: `requests` more in `minute` (limit
    `request_limit`) and `tokens` more today (limit `token_limit`); 0 = unlimited. Both apply
    or neither does. Negative tokens (a settlement giving back part of a reservation) apply only
    while the stored tokens hold them: never below 0 (a give-back meeting a document that never
    counted its reservation, as one created after its user's erasure, would make the limit
    looser); `requests` = 0 leaves the minute and its count alone. Negative `requests` (a
    request given back) are never refused, and change the count only while the stored minute
    is still `minute`: a later minute's count is not theirs to lower.

    `given_back` (0 or negative): the part of `tokens` that gives back earlier reservations,
    folded into an update that also counts something new. It applies only while the stored
    tokens hold it on its own, whatever the rest of `tokens` adds: a document made afresh since
    those reservations (its user's data erased) never counted them."""

    model_config = ConfigDict(frozen=True)

    minute: int
    ttl_seconds: int
    requests: int = 0
    request_limit: int = 0
    tokens: int = 0
    token_limit: int = 0
    given_back: Annotated[int, Field(le=0)] = 0


def new_write_id() -> str:
    """An id for one counter or usage update (`write_id` of `CounterStore.add_usage` and
    `add_to_counter`): 32 lowercase hex digits, the shape a store may put into a query as is."""
    return uuid.uuid4().hex


class UsageResult(BaseModel):
    allowed: bool
    # After the update when allowed; as found when refused.
    counts: UsageCounts
    # What refused it: the request rate is checked first; "below_zero": tokens given back
    # that the stored count does not hold (`UsageChange`).
    refused: Literal["requests", "tokens", "below_zero"] | None = None


def apply_usage(current: UsageCounts, change: UsageChange) -> UsageResult:
    """The rule every store applies atomically (SQLite in one transaction; Cosmos DB as the
    filter predicate of one conditional patch, and here when a read decides after a 412)."""
    same_minute = current.minute >= change.minute
    requests = current.requests if same_minute else 0
    if (
        change.requests > 0
        and change.request_limit
        and requests + change.requests > change.request_limit
    ):
        return UsageResult(allowed=False, counts=current, refused="requests")
    if (
        change.tokens > 0
        and change.token_limit
        and current.tokens + change.tokens > change.token_limit
    ):
        return UsageResult(allowed=False, counts=current, refused="tokens")
    if min(change.tokens, change.given_back) < 0 and (
        current.tokens + min(change.tokens, change.given_back) < 0
    ):
        return UsageResult(allowed=False, counts=current, refused="below_zero")
    counts = current.model_copy(update={"tokens": current.tokens + change.tokens})
    if change.requests > 0:
        counts.minute = max(current.minute, change.minute)
        counts.requests = requests + change.requests
    elif change.requests < 0 and current.minute == change.minute:
        counts.requests = max(0, current.requests + change.requests)
    return UsageResult(allowed=True, counts=counts)


# What a reader that only needs the readable ones does with a stored document it cannot read.
SKIPPED = "skipped"
# A message looked up by its id (a redelivery check, a rating) that cannot be read: as if it
# were not there, rather than an error whose text would quote the document.
TAKEN_AS_MISSING = "taken as missing"


def readable_messages(
    documents: Iterable[str | dict[str, Any]], conversation_id: str
) -> list[Message]:
    """The messages among one conversation's stored documents (JSON text or dicts) that can be
    read. A document that cannot (corrupted, or written by an incompatible version) is skipped
    and logged (`readable_message`): one bad row must not make every later turn of its
    conversation fail."""
    found = (readable_message(document, conversation_id, SKIPPED) for document in documents)
    return [message for message in found if message is not None]


@functools.lru_cache(maxsize=4096)
def conversation_ref(conversation_id: str) -> str:
    """A non-reversible reference to a conversation for logs and telemetry (the chat service's
    and the stores' alike), so their lines can be matched without the id itself (a Teams
    conversation id can name its user)."""
    return hashlib.sha256(conversation_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def user_ref(user_id: str) -> str:
    """A non-reversible reference to a user, for what leaves the app with each model request
    (API Management's per-user token limit and metrics): never the user id itself."""
    return hashlib.sha256(f"user|{user_id}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def readable_summary(
    document: str | bytes | dict[str, Any], conversation_id: str, outcome: str = SKIPPED
) -> ConversationSummary | None:
    """The conversation summary in a stored document (JSON text or a dict), or None when it cannot
    be read (corrupted, or written by an incompatible version): logged, as unreadable messages
    are, so one bad row does not break the admin list, a turn, an export or an erasure. What the
    caller does with it instead is `outcome` (the log says the summary "was <outcome>"). The log
    names the conversation by its reference and the fields that failed, never the document's
    text or its user id. `conversation_id` is the one the store keeps beside the document."""
    try:
        return _validated(ConversationSummary, document)
    except ValidationError as exc:
        log_unreadable_summary(exc, conversation_id, outcome)
        return None


def log_unreadable_summary(
    error: ValidationError, conversation_id: str, outcome: str = SKIPPED
) -> None:
    """The ERROR line for a stored summary that cannot be read (`readable_summary`), for callers
    that got the error from a store (the admin transcript)."""
    log.error(
        "an unreadable stored conversation summary was %s",
        outcome,
        extra=_unreadable(error, conversation_id),
    )


def readable_message(
    document: str | dict[str, Any], conversation_id: str, outcome: str
) -> Message | None:
    """The message in a stored document (JSON text or a dict), or None when it cannot be read:
    `readable_messages` for a caller that does something with it besides skipping it (a user's
    export leaves it out, an erasure deletes or leaves it). Logged at ERROR as the message "was
    <outcome>", by the conversation's reference and the fields that failed, never the document's
    text or its user id. `conversation_id` is the one the store keeps beside the document."""
    try:
        return _validated(Message, document)
    except ValidationError as exc:
        log.error(
            "an unreadable stored message was %s",
            outcome,
            extra=_unreadable(exc, conversation_id),
        )
        return None


def readable_audit_record(document: str | dict[str, Any], record_id: str) -> AuditRecord | None:
    """The audit record in a stored document (JSON text or a dict), or None when it cannot be read
    (corrupted, a hand edit): skipped and logged at ERROR, so one bad record does not take the
    audit log's pages down with it. The log names the record by its id (a time and a random
    part, never a person) and the fields that failed, never the document's text: an audit
    record names who read what. `record_id` is the one the store keeps beside the document."""
    try:
        return _validated(AuditRecord, document)
    except ValidationError as exc:
        log.error(
            "an unreadable stored audit record was %s",
            SKIPPED,
            extra={"record": record_id, **_problems(exc)},
        )
        return None


def _validated(model: type[_D], document: str | bytes | dict[str, Any]) -> _D:
    """`model` read from a stored document, JSON text or a dict; ValidationError if it cannot be."""
    if isinstance(document, dict):
        return model.model_validate(document)
    return model.model_validate_json(document)


def _unreadable(error: ValidationError, conversation_id: str) -> dict[str, Any]:
    """What the log says about a stored document of a conversation that cannot be read."""
    return {"conversation": conversation_ref(conversation_id), **_problems(error)}


def _problems(error: ValidationError) -> dict[str, Any]:
    """Which fields of a stored document failed and how, for the log."""
    return {
        "errors": error.error_count(),
        # Where and what kind (`messageCount: int_parsing`), never the input itself.
        "problems": [
            f"{'.'.join(str(part) for part in problem['loc']) or '(document)'}: {problem['type']}"
            for problem in error.errors(include_url=False, include_input=False)
        ],
    }


class MessageDecoder:
    """`readable_messages` for JSON text, remembering the messages it read by their text.

    The history window reads a conversation's last messages again every turn, and parsing them
    was the largest single cost of a turn on the event loop (py-spy). The stored text is the key,
    so a message whose document changed (feedback, an edit) is read again; `Message` is frozen,
    so one instance can serve every turn. Oldest entries go first once `capacity` is reached.
    Used on the event loop only."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._by_text: dict[str, Message] = {}

    def readable(self, documents: Iterable[str], conversation_id: str) -> list[Message]:
        messages: list[Message] = []
        for document in documents:
            message = self._by_text.get(document)
            if message is None:
                message = readable_message(document, conversation_id, SKIPPED)
                if message is None:
                    continue
                if len(self._by_text) >= self._capacity:
                    del self._by_text[next(iter(self._by_text))]
                self._by_text[document] = message
            messages.append(message)
        return messages

    def forget(self, gone: Callable[[Message], bool]) -> None:
        """Drops the messages for which `gone` is true: a deleted user's words must not stay
        in memory until they happen to be pushed out."""
        self._by_text = {text: m for text, m in self._by_text.items() if not gone(m)}

    def clear(self) -> None:
        self._by_text = {}
