"""Store interfaces. Implementations: `storage.sqlite` (embedded default) and `storage.cosmos`.

No query language leaks out of this package; callers speak in these methods only. Every method
may raise `StoreError` (or a subclass) when the backing service fails after its own retries.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from storage.models import (
    AuditQuery,
    AuditRecord,
    ConversationCount,
    ConversationSummary,
    CounterResult,
    Feedback,
    FeedbackChange,
    FeedbackUpdate,
    Message,
    Page,
    SummaryDelta,
    SummaryQuery,
    UsageChange,
    UsageCounts,
    UsageResult,
)
from storage.revisions import MessageRevision, RevisionOutcome


class StoreError(Exception):
    """The store could not complete an operation (after the client's own retries). Its message
    is the store's own, never its client's (which may quote a document or an id); `failure`
    says what failed underneath: "auth" (no token for the service), "http" (the service
    answered with an error), "unreachable" (no answer), "" (the store's own check)."""

    def __init__(self, *args: object, failure: str = "") -> None:
        super().__init__(*args)
        self.failure = failure


class StoreUnavailable(StoreError):
    """The store cannot be used for a reason it has logged once already (its file was removed,
    writes keep failing): readiness says so without logging it again on every probe."""


class StoreThrottled(StoreError):
    """The store is throttling (HTTP 429 in Cosmos DB) and retries were exhausted."""


class ETagMismatch(StoreError):
    """A conditional write lost a race."""


class UpdateOutcomeUnknown(StoreError):
    """A counter or usage update sent again (`CounterStore`'s `resend`) that the store could
    neither find applied nor prove was not: it applied nothing. `reason` names why, in words
    fit for a log line (no ids, no amounts)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"whether an earlier send of the update was applied is unknown: {reason}")
        self.reason = reason


class MessageStore(Protocol):
    async def add_message(self, message: Message) -> bool:
        """Insert; False (and no change) when a message with that id already exists."""
        ...

    async def replace_message(self, message: Message) -> None:
        """Overwrite an existing message (a prompt's new status). A message its user withdrew
        stays withdrawn: a replacement that is not (a status write kept by an instance that did
        not see the withdrawal, chat.kept) changes nothing, so the old words never come back."""
        ...

    async def get_message(self, conversation_id: str, message_id: str) -> Message | None: ...

    async def recent_messages(self, conversation_id: str, limit: int) -> list[Message]:
        """The newest `limit` messages of one conversation, oldest first. One single-partition
        query; callers stop at a `context_reset` marker."""
        ...

    async def conversation_messages(self, conversation_id: str) -> list[Message]:
        """Every message of one conversation, oldest first (transcripts). One that cannot be read
        is skipped (and logged by the conversation's reference)."""
        ...

    def conversation_message_pages(
        self, conversation_id: str, page_size: int
    ) -> AsyncGenerator[list[Message], None]:
        """`conversation_messages` in pages of at most `page_size` (never an empty one), each read
        when the previous one has been taken: an export of a long conversation holds one page.
        Pages are separate reads, as `UserDataStore.user_documents`' are."""
        ...

    async def set_feedback(
        self, conversation_id: str, message_id: str, feedback: Feedback | FeedbackUpdate
    ) -> FeedbackChange | None:
        """Store feedback on a message, replacing any it had; None when that message does not
        exist. The feedback it replaced is read in the same atomic write (`FeedbackChange`): of
        two changes of one message's rating arriving together, the one stored second sees the
        first's, so a rating's effect on the conversation's negative-feedback count is decided
        from it (`bot.feedback`). Given a `FeedbackUpdate`, what is stored is decided from the
        feedback it replaces, in that write (a rating keeps its rater's earlier comment:
        `storage.ratings.rerated`). Nothing else of the message changes."""
        ...

    async def revise_message(self, revision: MessageRevision) -> RevisionOutcome:
        """A user deleted or edited a message of theirs in their channel (`storage.revisions`):
        the message's new text in place of the old, or (no text) the message withdrawn, its text
        erased; its answer (`revision.answer_id`) marked `prompt_changed`; the conversation's
        title changed when it was the old text's. Nothing is kept of the old
        text. Single-partition point operations; the summary is written before the message, so
        a failure in between never leaves a title holding words the message no longer has."""
        ...


class SummaryStore(Protocol):
    async def apply_summary_delta(self, delta: SummaryDelta) -> None:
        """Create or atomically update the summary of one conversation."""
        ...

    async def get_summary(
        self, user_id: str, conversation_id: str
    ) -> ConversationSummary | None: ...

    async def find_summary(self, conversation_id: str) -> ConversationSummary | None:
        """Summary by conversation id alone (admin, feedback; may cross partitions). One that
        cannot be read raises pydantic's ValidationError rather than reading as None: a caller
        that needs its owner (feedback files its delta under it) must not guess one."""
        ...

    async def list_summaries(
        self, query: SummaryQuery, page_size: int, continuation: str | None = None
    ) -> Page:
        """Newest activity first, paged with an opaque continuation token (never OFFSET). With
        `query.with_shared`, the conversations someone else owns that hold a message under one of
        `query.user_ids` are listed too (Cosmos DB finds them with a cross-partition query of
        the messages by user id, on every page)."""
        ...


class CounterStore(Protocol):
    """`write_id` (`storage.models.new_write_id`; a new one when None) names one update: a
    caller that retries an update which failed outright passes the same id again, and the
    update counts once when the store finds the failed call applied it (its answer lost).
    Cosmos DB records the last ids applied to each document, so it finds only a recent one:
    applied a while ago, under many updates of others since, it may count again.

    `resend`, for an update that must never count twice (a negative amount: twice would make a
    limit looser): the same update as a call of this store that failed. The store applies it
    only when it can tell that no earlier send of it was applied, answers as it would have when
    it finds one applied (nothing more applied), and otherwise applies nothing and raises
    `UpdateOutcomeUnknown`. SQLite can always tell (a call that fails has rolled its transaction
    back); Cosmos DB can while the document has had at most 16 updates since this instance saw
    it before the first send (`storage.cosmos._InDoubt`), and it keeps what that takes only for
    a call given a `write_id`, for an hour after it failed (`storage.cosmos.IN_DOUBT_KEPT_SECONDS`):
    an update retried after a failure carries one from its first call on."""

    async def add_to_counter(
        self,
        scope: str,
        window: str,
        amount: int,
        limit: int,
        ttl_seconds: int,
        *,
        write_id: str | None = None,
        resend: bool = False,
    ) -> CounterResult:
        """Atomically add `amount` to the counter (scope, window) unless that would exceed
        `limit` (0 = unlimited); negative amounts always apply. Counters expire after ttl."""
        ...

    async def read_counter(self, scope: str, window: str) -> int: ...

    async def add_usage(
        self,
        scope: str,
        day: str,
        change: UsageChange,
        *,
        write_id: str | None = None,
        resend: bool = False,
    ) -> UsageResult:
        """One atomic update of the usage document (scope, day): the request count of
        `change.minute` and the day's tokens together, or nothing (`storage.models.apply_usage`
        is the rule: tokens given back never take the day's count below 0, refused as
        "below_zero"). One request to the service in the usual case: a Cosmos DB conditional
        patch; the first update of a day, a minute another instance rolled over, a lost race or
        a refusal add a read or a create. Documents expire after `change.ttl_seconds`."""
        ...

    async def read_usage(self, scope: str, day: str) -> UsageCounts:
        """The usage document (scope, day); zeros when there is none."""
        ...

    async def scope_documents(self, scopes: Sequence[str]) -> list[dict[str, Any]]:
        """Every unexpired counter and usage document of these scopes, as the same fields on
        every store: `{"type": "usage", "scope", "day", "tokens", "minute", "requests"}` and
        `{"type": "counter", "scope", "window", "total"}`; by scope, then day or window. The
        caller names the scopes (a person's, in their data export): the store does not know
        how controls name them. A few documents per scope (they expire within days)."""
        ...

    async def delete_scopes(self, scopes: Sequence[str]) -> int:
        """Delete every counter and usage document of these scopes (a person's, in their
        erasure: a user's scope holds their id); how many were deleted."""
        ...


class AuditStore(Protocol):
    async def append_audit(self, record: AuditRecord) -> None: ...

    async def list_audit(
        self, limit: int, continuation: str | None = None, query: AuditQuery | None = None
    ) -> tuple[list[AuditRecord], str | None]:
        """Newest first, at most `limit`, those `query` asks for; keyset paging (never OFFSET).
        Cosmos DB: a `since` a few days back reads only those days' `/day` partitions, one at a
        time; without one, one query across them."""
        ...

    def audit_records_about(
        self, targets: Sequence[str], page_size: int
    ) -> AsyncGenerator[list[AuditRecord], None]:
        """The records whose `target`, or one of whose `subjects`, is one of `targets` (a
        person's pseudonyms, in their data export: the caller names them), newest first as
        `list_audit`, in pages of at most `page_size` (never an empty one), each read when the
        previous one has been taken. A
        record that cannot be read is left out (and logged by its id). Cosmos DB: one query
        across the `/day` partitions."""
        ...


class StateStore(Protocol):
    """Key/value documents with ETags, behind botbuilder's `Storage` (see storage.botstate)."""

    async def read_state(self, keys: list[str]) -> dict[str, tuple[dict[str, Any], str]]:
        """Existing keys only, each with its document and current ETag."""
        ...

    async def write_state(
        self,
        key: str,
        document: dict[str, Any],
        etag: str | None,
        *,
        owner: str | None = None,
        conversation: str | None = None,
        expires: bool = False,
        expires_from: datetime | None = None,
        create_only: bool = False,
    ) -> str:
        """Write; with an etag other than "*" the write is conditional (ETagMismatch). With
        `create_only` it only creates (`etag` is not looked at): a document stored under `key`
        already fails it as a stale etag does (ETagMismatch). For a caller that read the key as
        absent: its first write must not overwrite another caller's first write.

        `owner` is the user whose data the document holds (the `userId` of their messages): it is
        exported and deleted with that user. `conversation` is the conversation (the id its
        messages are stored under) whose state it is (a dialog stack): it is deleted with that
        conversation (`UserDataStore.delete_conversation`). With `expires` the document expires
        with the retention period counted from this write, as messages do (when retention is
        on), or from `expires_from` when given (no later than this write): a message waiting
        for consent is kept counted from when it was asked, however often its dialog state is
        written again."""
        ...

    async def delete_state(self, keys: list[str]) -> None: ...


# The kinds of document a user's data export holds, in the order it holds them.
UserDataKind = Literal["conversations", "messages", "feedback", "states"]
USER_DATA_KINDS: tuple[UserDataKind, ...] = ("conversations", "messages", "feedback", "states")


class UserDataStore(Protocol):
    def user_documents(
        self, user_id: str, kind: UserDataKind, page_size: int
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """One kind of what is stored about one user, as stored, in pages of at most `page_size`
        documents (never an empty one), in the export's order:
        - `conversations`: the summaries they own, newest activity first;
        - `messages`: what `delete_user` deletes (their messages anywhere and every message of
          the conversations they own, with verdicts, usage and feedback), by conversation id,
          then seq; feedback someone else gave on one of them (`Feedback.user_id`) is left out,
          as it is that person's (`storage.ratings.exported_message`);
        - `feedback`: the feedback they gave on messages not among those (another person's
          answers in a shared conversation), each with its conversation and message id but not
          the message (`storage.ratings.given_feedback`), by conversation id, then seq;
        - `states`: the state documents they own (consent, a message waiting for it, the
          welcome marker of their one-to-one Teams chat), by key.
        A stored summary or message that cannot be read is left out (and logged by its
        conversation's reference).

        Each page is read when the previous one has been taken, so memory holds a page of
        documents (and the ids of the user's conversations), never all of them. Pages are
        separate reads: a write meanwhile may or may not show, but a document that stays stored
        throughout comes exactly once. A caller that stops early closes the generator
        (`aclose`), which ends the reads."""
        ...

    async def count_user_conversations(self, user_id: str) -> ConversationCount:
        """The conversations `delete_user` deletes and counts as `conversations`: every stored
        summary the user owns, readable or not. `unreadable` of them cannot be read (each is
        logged by its conversation's reference): the admin list skips those, so it can show
        fewer. Also the messages `delete_user` deletes in conversations someone else owns
        (shared ones), and in how many. One partition on Cosmos DB, and one cross-partition
        query of the messages by the user's id, as the deletion's."""
        ...

    async def delete_user(self, user_id: str) -> dict[str, int]:
        """Delete everything of one user; counts of what was deleted (`conversations`,
        `messages`, `states`). Unreadable stored items do not stop it: a shared conversation's
        summary that cannot be read is deleted (`unreadableSharedSummaries`), and a message in a
        shared conversation whose author cannot be read is left for review
        (`unattributedSharedMessages`); either key only when not zero.

        The summary of a shared conversation they wrote in (someone else's, or `shared:…`) no
        longer counts their deleted messages, nor the model usage those carried, nor the
        dislikes of their answers (`storage.summaries.erased`), and goes when no message of that
        conversation is left; it is not counted under `conversations`, which are theirs.

        The feedback they gave on messages that stay (another person's answers in a shared
        conversation; `Feedback.user_id`) is cleared from those messages and counted as
        `feedback` (only when not zero); a dislike among it is taken off its conversation's
        negative-feedback count, as taking it back would. Feedback others gave on the user's
        own messages goes with those messages."""
        ...

    async def delete_conversation(self, conversation_id: str) -> dict[str, int]:
        """Delete one conversation, whoever wrote in it (a Teams group chat or channel thread
        too): every message of it, readable or not; its summary (`conversations`: 1, or 0 when
        it had none), readable or not, in whichever partition it is; and its state
        (`states`): the documents written with it as their `conversation` (the dialog stacks of
        everyone in it, holding a message waiting for consent), and those an earlier release
        wrote without one whose key names this conversation whole
        (`storage.botstate.conversation_state_prefix`). Nothing else of its users (their
        consent records, their other conversations) changes.

        Messages first, the summary last: if this fails part-way, the summary is still there to
        find the conversation again. Idempotent: what is already gone counts 0."""
        ...

    async def delete_late_writes_of_user(self, user_id: str, before: datetime) -> dict[str, int]:
        """An erasure's second pass (`storage.late`): what turns that began before `before`
        (the first pass, `delete_user`) stored since, and nothing the user did after it. Their
        messages from such turns (prompts that arrived before it, answers to those, answers
        whose prompt the first pass deleted) are deleted, in their own conversations and
        in shared ones; a summary with no message left is deleted (counted as `conversations`
        when it is the user's), and one with messages left no longer counts the deleted ones
        (its title is cleared when it may be their words). State documents they own go when
        a turn from before `before` last changed them (a consent acceptance) or they hold a
        message waiting for consent since before it (`storage.late.state_from_before`).
        Feedback they gave before `before` (`Feedback.at`: a rating or comment that waited, and
        was stored after the first pass) is cleared from the messages that stay, its dislikes
        taken off their conversations' counts, and counted as `feedback` (only when not zero).
        Counts as `delete_user` gives them; usage documents are not touched. Idempotent."""
        ...

    async def delete_late_writes_of_conversation(
        self, conversation_id: str, before: datetime
    ) -> dict[str, int]:
        """`delete_late_writes_of_user` for one deleted conversation (`delete_conversation`):
        its messages from turns that began before `before`, whoever wrote them; its summary
        when no message is left (`conversations`: 1), or lowered by them; the state documents
        written with it as their conversation that a turn from before `before` last changed or
        that hold a message waiting for consent since before it; feedback given before `before`
        on its messages that stay, whoever gave it (`feedback`, only when not zero). New
        messages, their ratings, a message waiting for consent asked after it, and the dialog
        state of turns after it stay."""
        ...


class Store(
    MessageStore, SummaryStore, CounterStore, AuditStore, StateStore, UserDataStore, Protocol
):
    """Everything the app needs from its persistence, opened and closed as one resource."""

    name: str

    async def open(self) -> None:
        """Connect, and make or check what the store needs. State documents an earlier release
        stored without an owner get the one `storage.botstate.legacy_owners` can tell (at the
        first open that finds any; `storage.botstate.LEGACY_OWNERS_SEARCHED`)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError if the store is unreachable (readiness)."""
        ...

    async def purge_expired(self) -> int:
        """Delete what retention says has expired, by the RETENTION_DAYS the store runs with:
        a message or summary last written longer ago than that (none at 0), whatever the
        setting was when it was written. Where the service expires items itself (Cosmos DB),
        only what an earlier release stored with an expiry of its own is brought in line.
        Returns how many items it deleted."""
        ...


# The data operations of `Store` by whether they change anything (open, close and ping are
# neither): the benchmark's operation counts and the tests' fault injection both use these.
# `user_documents`, `conversation_message_pages` and `audit_records_about` are not one call but
# iterators of reads (one per page), so they are in neither: the benchmark's counting wrapper
# awaits each operation, which an iterator cannot be.
READ_OPERATIONS = frozenset(
    {
        "get_message",
        "recent_messages",
        "conversation_messages",
        "get_summary",
        "find_summary",
        "list_summaries",
        "read_counter",
        "read_usage",
        "scope_documents",
        "list_audit",
        "read_state",
        "count_user_conversations",
    }
)
WRITE_OPERATIONS = frozenset(
    {
        "add_message",
        "replace_message",
        "set_feedback",
        "revise_message",
        "apply_summary_delta",
        "add_to_counter",
        "add_usage",
        "delete_scopes",
        "append_audit",
        "write_state",
        "delete_state",
        "delete_user",
        "delete_conversation",
        "delete_late_writes_of_user",
        "delete_late_writes_of_conversation",
        "purge_expired",
    }
)
