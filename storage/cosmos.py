"""The production store: Azure Cosmos DB for NoSQL through the async azure-cosmos SDK.

Containers and partition keys (see /work/shared/DESIGN.md, "Data model"):

| container       | partition key      | what                                         |
|-----------------|--------------------|----------------------------------------------|
| messages        | /conversationId    | one item per message                         |
| conversations   | /userId            | one summary per conversation (admin list)    |
| botstate        | /id                | botbuilder dialog/user/conversation state    |
| usage           | /scope             | quota and rate counters                      |
| audit           | /day               | append-only admin audit records              |

With data-plane RBAC (Entra ID) the app cannot create databases or containers: the
infrastructure does, and `open()` only checks they exist. Containers are created only when
asked to (`create_containers`, on by default for a key-authenticated emulator).

Query rules: the turn's hot path is point reads/writes plus one single-partition query
(`recent_messages`); admin lists may cross partitions. Admin lists page with a keyset cursor
(last sort key + id) rather than the SDK's continuation token: the Python SDK cannot resume
cross-partition ORDER BY queries from a continuation token
(https://github.com/Azure/azure-sdk-for-python/issues/41434, #37230), and OFFSET/LIMIT costs
grow with the page number. The keyset cursor needs a composite index (sort key DESC, id DESC),
which `CONTAINER_SPECS` declares and the Bicep module must declare too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import math
import random
import re
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.async_paging import AsyncItemPaged
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceExistsError
from opentelemetry import metrics

from config import ConfigurationError
from storage.base import (
    ETagMismatch,
    Store,
    StoreError,
    StoreThrottled,
    UpdateOutcomeUnknown,
    UserDataKind,
)
from storage.botstate import (
    LEGACY_OWNERS_SEARCHED,
    OWNER_CANDIDATES,
    conversation_state_prefix,
    legacy_owners,
    names_conversation,
    report_legacy_owners,
)
from storage.cursors import decode_keyset, encode_cursor
from storage.ids import safe_id
from storage.late import (
    LATE_UNREADABLE_MESSAGE,
    feedback_from_before,
    state_from_before,
    stems_from_before,
    summary_after,
)
from storage.models import (
    SKIPPED,
    TAKEN_AS_MISSING,
    AuditQuery,
    AuditRecord,
    ConversationCount,
    ConversationSummary,
    CounterResult,
    Feedback,
    FeedbackChange,
    FeedbackUpdate,
    Message,
    MessageStatus,
    Page,
    SummaryDelta,
    SummaryQuery,
    UsageChange,
    UsageCounts,
    UsageResult,
    apply_usage,
    as_utc,
    new_write_id,
    readable_audit_record,
    readable_message,
    readable_messages,
    readable_summary,
)
from storage.pages import in_pages
from storage.ratings import FEEDBACK_CLEARED, exported_message, given_feedback, rater_of
from storage.revisions import (
    UNREVISED_UNREADABLE,
    MessageRevision,
    RevisionOutcome,
    outcome_of,
    retitled,
    revised,
)
from storage.summaries import (
    COUNTED_UNREADABLE,
    ERASED_UNREADABLE,
    ERASED_UNREADABLE_MESSAGE,
    EXPORTED_UNREADABLE,
    EXPORTED_UNREADABLE_MESSAGE,
    RESTARTED_UNREADABLE,
    UNATTRIBUTED_SHARED_MESSAGES,
    UNATTRIBUTED_UNREADABLE_MESSAGE,
    UNLOWERED_UNREADABLE,
    UNREADABLE_SHARED_SUMMARIES,
    Erased,
    answers_without_prompt,
    apply_delta,
    erased,
    matches,
    new_summary,
    prompts_by_conversation,
    title_to_clear,
    without_erased,
)

log = logging.getLogger(__name__)

# Ids Cosmos accepts in a URL path without surprises; anything else goes through `safe_id`.
_COSMOS_ID = re.compile(r"^[A-Za-z0-9_.:;@=+,!$'()*~\-]{1,255}$")
# Read-modify-write loops (summaries, counters) give up after this many lost races.
_MAX_RACES = 20
_RETRY_WITH = 449
# Messages and summaries carry no `ttl` of their own: the containers' defaultTtl, which Cosmos DB
# counts from each item's last write (`_ts`), is RETENTION_DAYS, so a changed setting applies to
# every item without a ttl of its own at once. Where a container's defaultTtl is not what the
# setting needs and the app cannot change it (Entra ID: data-plane roles cannot), every write
# gives them the ttl the setting needs instead (`_item_ttls`), and the purge gives one to those
# stored without it, so the setting still decides. Earlier releases wrote each one with `ttl` =
# RETENTION_DAYS of that write, which overrides the default: the retention purge gives such
# items the ttl the setting of the day needs (`retention_ttl`) and records on them when they
# were last written (a patch renews `_ts`), with the setting and the time of that patch
# (`_RETENTION`). Every other patch of them sets or takes away `ttl` and takes the record away
# (`_renewed`); a write after it by an earlier release's patch (one that keeps both) is told by a
# `_ts` later than that time by more than this (the app's clock against the service's).
_RETENTION = "retention"
_RETENTION_PATCH_SLACK_SECONDS = 5
# The items whose ttl is not what the setting of the day gives (@seconds: what a write gets, -1
# at 0): `key` is the container's partition key field; `without` is "NOT IS_DEFINED(c.ttl) OR"
# where items without a ttl of their own need one too (the container's defaultTtl is not it).
_OWN_TTL_QUERY = (
    "SELECT c.id, c.{key}, c._ts, c._etag, c.ttl, c.retention FROM c WHERE {without} ("
    "IS_DEFINED(c.ttl) AND ((IS_DEFINED(c.retention) AND c.retention.days != @days)"
    " OR (NOT IS_DEFINED(c.retention) AND c.ttl != @seconds)))"
)
# Items of `purge_expired` read and changed at a time.
_RETAINED_PAGE = 100
# How many conversation ids one `IN` of the list's user filter names (`list_summaries`): a
# person can have written in many shared conversations, and a query's text is bounded.
_SHARED_IN_SLICE = 500
# How long the list remembers which shared conversations hold a person's messages: finding them
# reads every message of theirs across partitions, and a text search asks for page after page
# (admin.queries) with the same filter within one request. Only next pages use it: a first page
# finds them afresh.
_SHARED_REMEMBERED_SECONDS = 10.0
_SHARED_REMEMBERED_PEOPLE = 64
# What a shared summary becomes: deleted, a new document, or left as it is (None).
_SummaryRewrite = Literal["delete"] | dict[str, Any] | None
# Usage documents whose minute this instance remembers (a hint for the next patch).
_USAGE_MINUTES_KEPT = 50_000
# Deletes of one user's data run with this much concurrency.
_DELETE_CONCURRENCY = 16
# The SDK sends a write again by itself when its answer is lost (a read timeout, a connection cut
# after the request went out: azure/cosmos/aio/_retry_utility_async.py retries writes on any
# aiohttp ClientConnectionError), so a write that landed may come back as a conflict (409) or a
# lost race (412). A summary keeps the ids of the last deltas applied to it (`appliedDeltas`) to
# tell its own landed write from a race: a delta found there is not applied again. Enough for
# the deltas other turns and ratings apply between a write and the SDK's resend of it.
_APPLIED_DELTAS_KEPT = 10
# A message create carries an id of its own call (`writeId`), which tells the stored item that
# call wrote from one stored before it under the same message id (a redelivery's earlier turn).
_WRITE_ID = "writeId"
# Likewise a rating's patch carries the id of its call (`feedbackWriteId`): its resend's 412
# finds it, so the feedback it replaced is the one before it, not itself.
_FEEDBACK_WRITE_ID = "feedbackWriteId"
# A usage or counter document keeps the ids of the last updates applied to it, newest first, in
# `applied`: always this long (a new document starts with its own id and empty slots; each patch
# inserts its id at the front and removes the last). Each patch's filter predicate refuses a
# document that holds its id, so the SDK's resend of an update that landed is a 412, and the read
# after it finds the id: the first send's success, counted once. Each patch applies atomically,
# so concurrent updates from other turns and instances each push one id and drop the oldest, none
# out of turn: a resend goes unrecognized (counted again) only when more than this many other
# updates of the same document landed between the first send and the SDK's resend of it, or the
# caller's retry of it under the same id (`CounterStore`: seconds later, from controls.quotas).
# The document also counts the updates applied to it (`updates`, its create the first), so the
# ring holds those numbered `updates` - 15 to `updates`: what lets a caller's `resend` of an
# update be applied only when no earlier send of it can have landed (`_InDoubt`).
_APPLIED_KEPT = 16
# A call given a `write_id` (its caller resends it when it fails: `CounterStore`) that fails
# with a send in doubt leaves what a `resend` of it needs (`_InDoubt`) for this long; calls
# without one leave nothing (a gate's request count, a reservation: not resent). The quotas
# (controls.quotas) resend a failed write at their flusher's next round, at most 30 seconds
# after the last one ended, and each failed resend leaves its record anew. A round writes 16
# scopes at a time, each call bounded by the SDK's own retries (throttled: 15 seconds in all;
# a connection that fails: about 2.5 minutes), so in a long outage a round of hundreds of
# scopes takes minutes: an hour covers thousands. A record older than that is of a write no
# longer resent (its quotas closed, or gave it up); forgotten, its key is kept while its
# document may live, and a `resend` of it applies nothing (dropped: stricter, never looser).
IN_DOUBT_KEPT_SECONDS = 3600.0
_UPDATE_ID = re.compile(r"[0-9a-f]{16,64}")
_SERVICE_FIELDS = ("_rid", "_self", "_etag", "_attachments", "_ts")
_SYSTEM_FIELDS = (*_SERVICE_FIELDS, "rawId")
# Endpoint hosts for which azure-cosmos turns certificate checks off by itself, whatever
# `connection_verify` says (azure/cosmos/aio/_asynchronous_request.py, 4.17.1: it compares the
# request URL's hostname with exactly these two, for the local emulator).
_UNVERIFIED_HOSTS = frozenset({"localhost", "127.0.0.1"})
# What an operator does about a container whose defaultTtl the app cannot change.
_PROVISION_AGAIN = (
    "the app changes a container's defaultTtl only where it creates the containers (a key with "
    "COSMOS_CREATE_CONTAINERS on); with Entra ID, provision the infrastructure again with the "
    "app's RETENTION_DAYS (azd provision) or set the container's Time to Live to that value"
)


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class CosmosSettings(Protocol):
    """The part of the app's `Settings` this store reads (storage imports nothing of ours)."""

    @property
    def cosmos_endpoint(self) -> str: ...
    @property
    def cosmos_key(self) -> _Secret: ...
    @property
    def cosmos_database(self) -> str: ...
    @property
    def cosmos_messages_container(self) -> str: ...
    @property
    def cosmos_conversations_container(self) -> str: ...
    @property
    def cosmos_botstate_container(self) -> str: ...
    @property
    def cosmos_usage_container(self) -> str: ...
    @property
    def cosmos_audit_container(self) -> str: ...
    @property
    def cosmos_should_create_containers(self) -> bool: ...
    @property
    def cosmos_verify_tls(self) -> bool: ...
    @property
    def retention_days(self) -> int: ...


@dataclass(frozen=True)
class CosmosConfig:
    """Everything `CosmosStore` needs; build it with `CosmosConfig.from_settings(settings)`."""

    endpoint: str
    database: str = "chat"
    # Account key: only for emulators and the local protocol server. Empty = Entra ID.
    key: str = field(default="", repr=False)
    messages_container: str = "messages"
    conversations_container: str = "conversations"
    botstate_container: str = "botstate"
    usage_container: str = "usage"
    audit_container: str = "audit"
    create_containers: bool = False
    verify_tls: bool = True
    retention_days: int = 0
    # Throttling (429): the SDK waits what the service says (x-ms-retry-after-ms) up to this
    # many times and this many seconds in total, then the store raises StoreThrottled. Kept well
    # under the turn deadline so a throttled turn fails with a notice instead of hanging.
    throttle_retries: int = 6
    throttle_max_wait_seconds: int = 15
    # Connection-level failures (refused, reset, read timeout, 5xx on reads).
    connection_retries: int = 3
    connection_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: CosmosSettings) -> CosmosConfig:
        return cls(
            endpoint=settings.cosmos_endpoint,
            database=settings.cosmos_database,
            key=settings.cosmos_key.get_secret_value(),
            messages_container=settings.cosmos_messages_container,
            conversations_container=settings.cosmos_conversations_container,
            botstate_container=settings.cosmos_botstate_container,
            usage_container=settings.cosmos_usage_container,
            audit_container=settings.cosmos_audit_container,
            create_containers=settings.cosmos_should_create_containers,
            verify_tls=settings.cosmos_verify_tls,
            retention_days=settings.retention_days,
        )

    @property
    def retention_seconds(self) -> int:
        return self.retention_days * 86400


@dataclass(frozen=True)
class ContainerSpec:
    role: str
    partition_key: str
    # "retention" = the retention period (-1 when it is 0); -1 = TTL on, per-item ttl only.
    default_ttl: str | int | None = None
    composite: tuple[tuple[str, str], ...] = ()
    excluded_paths: tuple[str, ...] = ()

    def indexing_policy(self) -> dict[str, Any]:
        policy: dict[str, Any] = {
            "indexingMode": "consistent",
            "automatic": True,
            "includedPaths": [{"path": "/*"}],
            "excludedPaths": [{"path": '/"_etag"/?'}, *({"path": p} for p in self.excluded_paths)],
        }
        if self.composite:
            policy["compositeIndexes"] = [
                [{"path": path, "order": order} for path, order in self.composite]
            ]
        return policy


# What `open()` creates (when allowed) and checks. infra/ must declare the same.
CONTAINER_SPECS: tuple[ContainerSpec, ...] = (
    # Message text is never filtered on: keep it out of the index (cheaper writes).
    ContainerSpec("messages", "/conversationId", "retention", (), ("/text/?", "/withheldText/?")),
    ContainerSpec(
        "conversations",
        "/userId",
        "retention",
        (("/lastActivityAt", "descending"), ("/id", "descending")),
    ),
    # TTL on without a default: only the state documents written with `expires` carry a ttl.
    ContainerSpec("botstate", "/id", -1),
    ContainerSpec("usage", "/scope", -1),
    ContainerSpec("audit", "/day", None, (("/at", "descending"), ("/id", "descending"))),
)


def _stamp(value: datetime) -> str:
    """Fixed-width UTC timestamps, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so string order is time order
    in queries and cursors (pydantic writes `...:05Z` and `...:05.250000Z`, which do not sort).
    Not `strftime("%Y")`: glibc does not zero-pad years before 1000 (`999-...`, which sorts
    after `2026-...`); isoformat always writes four digits."""
    return as_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# A `since` at most this many days before `until` (or today) reads those days' `/day` partitions
# one at a time, newest first; an earlier one (or none) queries across the partitions.
AUDIT_DAYS_ONE_BY_ONE = 31


def _audit_conditions(query: AuditQuery) -> tuple[list[str], list[dict[str, Any]]]:
    """The WHERE conditions (ANDed) and parameters of an audit log query, on item `c`."""
    conditions: list[str] = []
    params: list[dict[str, Any]] = []
    if query.action is not None:
        conditions.append("c.action = @action")
        params.append({"name": "@action", "value": query.action})
    elif query.except_actions:
        conditions.append("NOT ARRAY_CONTAINS(@exceptActions, c.action)")
        params.append({"name": "@exceptActions", "value": query.except_actions})
    if query.actor is not None:
        conditions.append("c.actor = @actor")
        params.append({"name": "@actor", "value": query.actor})
    if query.targets:
        either = ["ARRAY_CONTAINS(@targets, c.target)"]
        params.append({"name": "@targets", "value": query.targets})
        for n, target in enumerate(query.targets):
            either.append(f"ARRAY_CONTAINS(c.subjects, @subject{n})")
            params.append({"name": f"@subject{n}", "value": target})
        conditions.append(f"({' OR '.join(either)})")
    if query.since is not None:
        conditions.append("c.at >= @since AND c.day >= @sinceDay")
        params.append({"name": "@since", "value": _stamp(query.since)})
        params.append({"name": "@sinceDay", "value": as_utc(query.since).date().isoformat()})
    if query.until is not None:
        conditions.append("c.at < @until")
        params.append({"name": "@until", "value": _stamp(query.until)})
    return conditions, params


def _audit_days(query: AuditQuery, cursor_day: str | None) -> list[str | None]:
    """The `/day` partitions an audit query reads, newest first (a record's day is its time's
    UTC date), down to its `since` and from its `until` (or tomorrow, for an instance whose
    clock is ahead) or the continuation's day; `[None]` (across partitions) when it has no
    `since` or spans more than AUDIT_DAYS_ONE_BY_ONE days."""
    if query.since is None:
        return [None]
    first = as_utc(query.since).date()
    last = (datetime.now(UTC) + timedelta(days=1)).date()
    if query.until is not None:
        last = min(last, (as_utc(query.until) - timedelta(microseconds=1)).date())
    if cursor_day is not None:
        with contextlib.suppress(ValueError):
            last = min(last, date.fromisoformat(cursor_day))
    if (last - first).days > AUDIT_DAYS_ONE_BY_ONE:
        return [None]
    return [(last - timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def cosmos_id(raw: str) -> str:
    """`raw` when Cosmos accepts it as an id as it is, else its `safe_id`."""
    return raw if _COSMOS_ID.fullmatch(raw) else safe_id(raw)


def _with_id(doc: dict[str, Any], raw: str) -> dict[str, Any]:
    """Store `raw` as the document id, keeping the original in `rawId` when it was unsafe."""
    doc["id"] = cosmos_id(raw)
    if doc["id"] != raw:
        doc["rawId"] = raw
    return doc


def _clean(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored item as our document: the original id back, Cosmos system fields gone."""
    clean = {k: v for k, v in doc.items() if k not in _SYSTEM_FIELDS}
    if "rawId" in doc:
        clean["id"] = doc["rawId"]
    return clean


def _conversation_of(summary: Mapping[str, Any]) -> str:
    """The conversation a stored summary item is of, whether or not the rest of it can be read:
    its id (the original in `rawId` when it was unsafe), which `_summary_doc` always writes as
    the conversation id, and which Cosmos DB keeps a string."""
    return str(_clean(summary)["id"])


def _message_conversation(message: Mapping[str, Any]) -> str:
    """The conversation a stored message item is of, whether or not the rest of it can be read:
    its conversationId is the container's partition key, which a replace cannot change, so it is
    the string `_message_doc` wrote."""
    return str(message["conversationId"])


def _seq_of(message: Mapping[str, Any]) -> int | float | None:
    """A stored message's seq, or None when it is not a number (a hand edit)."""
    seq = message.get("seq", 0)
    if isinstance(seq, int | float) and not isinstance(seq, bool):
        return seq
    return None


def _message_order(message: Mapping[str, Any]) -> tuple[str, int, float]:
    """Conversation, then seq; a message whose seq is not a number (it cannot be read) sorts last
    in its conversation instead of failing the comparison."""
    seq = _seq_of(message)
    if seq is None:
        return (_message_conversation(message), 1, 0)
    return (_message_conversation(message), 0, seq)


def _last_write(item: Mapping[str, Any]) -> float:
    """When an item with a ttl of its own was last written: its `_ts`, unless the retention
    purge's own patch set that (`_RETENTION` says when it was last written before)."""
    written = float(item["_ts"])
    record = item.get(_RETENTION)
    if isinstance(record, dict):
        try:
            before, patched_at = float(record["lastWrite"]), float(record["at"])
        except (KeyError, TypeError, ValueError):
            return written
        if written <= patched_at + _RETENTION_PATCH_SLACK_SECONDS:
            return before
    return written


def retention_ttl(item: Mapping[str, Any], retention_seconds: int, now: float) -> int | None:
    """The ttl a message or summary with a ttl of its own needs to expire RETENTION_DAYS after
    its last write (-1 at 0: never), counted from a write now; None when that time has passed
    (the item is deleted)."""
    if not retention_seconds:
        return -1
    left = _last_write(item) + retention_seconds - now
    return math.ceil(left) if left > 0 else None


def _status(exc: CosmosHttpResponseError) -> int:
    return int(exc.status_code or 0)


async def _race_status(exc: CosmosHttpResponseError) -> int:
    """The status a read-modify-write loop acts on. 449 (RetryWith) is Cosmos DB refusing a
    write that met another one on the same item at that moment, asking for it to be sent again
    (the SDK does not, in gateway mode); nothing was written, so it is a lost race, as a 412:
    read again, after a short pause that parts the writers."""
    status = _status(exc)
    if status == _RETRY_WITH:
        await asyncio.sleep(random.uniform(0.005, 0.05))  # noqa: S311 - jitter, not a secret
        return 412
    return status


def _applied_deltas(summary: Mapping[str, Any] | None) -> list[str]:
    """The ids of the last deltas applied to a stored summary (`_APPLIED_DELTAS_KEPT`)."""
    applied = summary.get("appliedDeltas") if summary is not None else None
    return [str(i) for i in applied] if isinstance(applied, list) else []


def _recorded(doc: Mapping[str, Any], write_id: str) -> bool:
    """Whether a usage or counter document holds `write_id` among its last updates applied
    (`_APPLIED_KEPT`): that update landed already."""
    applied = doc.get("applied")
    return isinstance(applied, list) and write_id in applied


def _update_id(write_id: str | None) -> str:
    """The id a usage or counter update records: the caller's (`storage.models.new_write_id`),
    or a new one. It goes into a filter predicate as is, so nothing but lowercase hex."""
    if write_id is None:
        return new_write_id()
    if not _UPDATE_ID.fullmatch(write_id):
        raise ValueError("a write_id is lowercase hex (storage.models.new_write_id)")
    return write_id


def _has_ring(doc: Mapping[str, Any]) -> bool:
    """Whether a usage or counter document has the `applied` ring a patch pushes onto and the
    count of its updates: a document written before they existed has neither (or no count)."""
    applied, updates = doc.get("applied"), doc.get("updates")
    return (
        isinstance(applied, list)
        and len(applied) == _APPLIED_KEPT
        and isinstance(updates, int)
        and not isinstance(updates, bool)
    )


def _updates(doc: Mapping[str, Any]) -> int:
    """How many updates a usage or counter document counts (`_APPLIED_KEPT`); 0 without."""
    return int(doc["updates"]) if _has_ring(doc) else 0


def _new_ring(write_id: str) -> list[str]:
    return [write_id] + [""] * (_APPLIED_KEPT - 1)


def _record_patch(
    write_id: str, ring: bool, after: int, resend: bool
) -> tuple[list[dict[str, Any]], str]:
    """The patch operations that record `write_id` in a usage or counter document and count the
    update, and the condition that refuses a document holding it (`_APPLIED_KEPT`). `ring`: the
    document is taken to have the ring (`_has_ring`); a document without one (written by an
    earlier version) gets a new ring and count, on the condition that it still has none.
    `after`: the update applies only while the document counts at least this many updates; a
    `resend` only while it counts at most `_APPLIED_KEPT` more (`_InDoubt`). The id is lowercase
    hex and the only string in the predicate (see `_usage_patch`)."""
    shaped = (
        f"IS_ARRAY(c.applied) AND ARRAY_LENGTH(c.applied) = {_APPLIED_KEPT}"
        " AND IS_NUMBER(c.updates)"
    )
    operations: list[dict[str, Any]]
    if not ring:
        operations = [
            {"op": "set", "path": "/applied", "value": _new_ring(write_id)},
            {"op": "set", "path": "/updates", "value": 1},
        ]
        return operations, f"NOT ({shaped})"
    operations = [
        {"op": "add", "path": "/applied/0", "value": write_id},
        {"op": "remove", "path": f"/applied/{_APPLIED_KEPT}"},
        {"op": "incr", "path": "/updates", "value": 1},
    ]
    conditions = [shaped, f"NOT ARRAY_CONTAINS(c.applied, '{write_id}')"]
    if after:
        conditions.append(f"c.updates >= {int(after)}")
    if resend:
        conditions.append(f"c.updates <= {int(after) + _APPLIED_KEPT}")
    return operations, " AND ".join(conditions)


@dataclass(frozen=True)
class _InDoubt:
    """What a `resend` (`CounterStore`) of an update whose call failed needs to tell whether a
    send of it landed on its usage or counter document.

    Each send carries a bound (`_record_patch`'s `after`): it applies only while the document
    counts at least that many updates, so had it landed, it is number `after` + 1 or later,
    and the ring holds its id for as long as the document counts at most `after` +
    `_APPLIED_KEPT` updates. A `resend` therefore applies only on that condition (with the
    ring's, which refuses a document holding the id): the document then proves that no earlier
    send landed. When more updates were applied since, the ring may have lost the id: the
    resend applies nothing (`UpdateOutcomeUnknown`). Read at the failure instead, the count
    would prove nothing: the send may have landed and left the ring before (the SDK's own
    resends of it take seconds). `after` is the lowest bound of the sends that may have landed;
    None: no send went out; no record at all: no call of this instance given its id sent it,
    unless the record was forgotten (`IN_DOUBT_KEPT_SECONDS`: its key is kept). A 412 or 409 is
    no proof that a send did not land (the SDK's earlier send of it may have, its answer lost),
    so every send counts."""

    after: int | None
    # When the call failed (monotonic), and how long its document lives after an update.
    failed_at: float
    ttl_seconds: int


@dataclass
class _Update:
    """One call's usage or counter update, under its id, on its way (`_InDoubt`)."""

    write_id: str
    # The bound its next send carries (`_record_patch`).
    after: int
    # A send of it may have landed before this call: `after` is that send's bound (or lower).
    resend: bool
    # The lowest bound of its sends that may have landed, earlier calls' and this one's.
    in_doubt: int | None = None

    def record(self, ring: bool) -> tuple[list[dict[str, Any]], str]:
        """The next send's recording operations and condition (`_record_patch`)."""
        after = self.after if ring else 0  # a new ring and count: its first update
        self.sent(after)
        return _record_patch(self.write_id, ring, after, self.resend)

    def sent(self, after: int) -> None:
        """A send that applies only after `after` updates (a create: 0) goes out."""
        self.in_doubt = after if self.in_doubt is None else min(self.in_doubt, after)

    def refused_by(self, doc: Mapping[str, Any]) -> None:
        """A send was refused by `doc` (read after the 412), which does not hold the id."""
        updates = _updates(doc)
        if not self.resend:
            self.after = updates  # what the next send can count on
        elif updates > self.after + _APPLIED_KEPT:
            raise UpdateOutcomeUnknown(
                "more updates of the document since its earlier send than the document remembers"
            )
        else:
            # The document proves that no send landed. It counts fewer than `after` when it is
            # new (the one a send may have landed on is gone), none when an earlier version
            # wrote it (no send reached it): the next sends carry that bound.
            self.after = min(self.after, updates)


def _usage_patch(
    change: UsageChange, same_minute: bool, record: tuple[list[dict[str, Any]], str]
) -> tuple[list[dict[str, Any]], str]:
    """The patch operations of `change` and the filter predicate that makes them atomic with
    its limits (`storage.models.apply_usage` is the rule) and applies them once (`record`:
    `_record_patch`'s). Predicates take no parameters: the numbers are ints formatted here.
    Property names stay lowercase and the only string is a lowercase hex id: the local protocol
    server (tests/cosmos_server.js) lowercases the whole predicate before it evaluates it, where
    Azure keeps it as written."""
    operations, recorded = record
    conditions = [recorded]
    if change.requests < 0:
        # A request given back: only while the document still counts its minute, never below
        # 0 (when it does not, the read after the 412 decides what is left to give back).
        conditions.append(f"c.minute = {int(change.minute)}")
        conditions.append(f"c.requests >= {-int(change.requests)}")
        operations.append({"op": "incr", "path": "/requests", "value": int(change.requests)})
    elif change.requests:
        if same_minute:
            conditions.append(f"c.minute >= {int(change.minute)}")
            if change.request_limit:
                limit = int(change.request_limit) - int(change.requests)
                conditions.append(f"c.requests <= {limit}")
            operations.append({"op": "incr", "path": "/requests", "value": int(change.requests)})
        else:
            conditions.append(f"c.minute < {int(change.minute)}")
            operations.append({"op": "set", "path": "/minute", "value": int(change.minute)})
            operations.append({"op": "set", "path": "/requests", "value": int(change.requests)})
    if change.tokens > 0 and change.token_limit:
        conditions.append(f"c.tokens <= {int(change.token_limit) - int(change.tokens)}")
    given_back = min(int(change.tokens), int(change.given_back))
    if given_back < 0:
        # Given back: only what the document holds, never below 0 (`UsageChange`).
        conditions.append(f"c.tokens >= {-given_back}")
    if change.tokens:
        operations.append({"op": "incr", "path": "/tokens", "value": int(change.tokens)})
    operations.append({"op": "set", "path": "/ttl", "value": max(1, int(change.ttl_seconds))})
    return operations, "FROM c WHERE " + " AND ".join(conditions)


class _OwnerEvidence:
    """`storage.botstate.OwnerEvidence` from the containers (store open): a cross-partition
    query of the summaries (by id) and two single-partition queries of the messages."""

    def __init__(self, store: CosmosStore) -> None:
        self._store = store

    async def conversation_owners(self, exact: str | None, start: str) -> list[tuple[str, str]]:
        store, op = self._store, "open"
        if exact is not None:
            query = "SELECT c.id, c.rawId, c.userId FROM c WHERE c.id = @id"
            parameters: list[dict[str, Any]] = [{"name": "@id", "value": cosmos_id(exact)}]
        else:
            query = "SELECT TOP @n c.id, c.rawId, c.userId FROM c WHERE STARTSWITH(c.id, @start)"
            parameters = [
                {"name": "@n", "value": OWNER_CANDIDATES + 1},
                {"name": "@start", "value": start},
            ]
        container = store._container("conversations")
        return [
            (_conversation_of(doc), str(doc.get("userId") or ""))
            async for doc in store._query(container, op, query, parameters)
        ]

    async def wrote_alone(self, conversation_id: str, user_id: str) -> bool:
        store, op = self._store, "open"
        container = store._container("messages")
        parameters = [
            {"name": "@cid", "value": conversation_id},
            {"name": "@uid", "value": user_id},
        ]
        theirs = "SELECT TOP 1 c.id FROM c WHERE c.conversationId = @cid AND c.userId = @uid"
        # A message whose owner cannot be read may be anyone's.
        others = (
            "SELECT TOP 1 c.id FROM c WHERE c.conversationId = @cid"
            " AND NOT (IS_STRING(c.userId) AND c.userId = @uid)"
        )

        async def found(query: str) -> bool:
            items = store._query(container, op, query, parameters, partition_key=conversation_id)
            return any([item async for item in items])

        return await found(theirs) and not await found(others)


class CosmosStore:
    name = "cosmos"

    def __init__(self, config: CosmosConfig, credential: AsyncTokenCredential | None = None):
        self._config = config
        self._credential = credential
        self._client: CosmosClient | None = None
        self._database: DatabaseProxy | None = None
        self._containers: dict[str, ContainerProxy] = {}
        # The retention containers (by role) whose defaultTtl is not what RETENTION_DAYS needs,
        # read at open: the ttl each message or summary written there gets (`_check_properties`).
        self._item_ttls: dict[str, int] = {}
        # Request units per operation name, summed since start (read by metrics/telemetry).
        self.request_charges: dict[str, float] = {}
        # Usage document id -> the minute it last counted, as this instance saw it.
        self._usage_minutes: dict[str, int] = {}
        # Usage or counter document id -> how many updates it counted (`_InDoubt`), as this
        # instance last saw it; (document id, write id) -> an update whose call failed, oldest
        # failure first; and the keys of those forgotten -> until when (monotonic) they matter.
        self._updates_seen: dict[str, int] = {}
        self._in_doubt: dict[tuple[str, str], _InDoubt] = {}
        self._forgotten: dict[tuple[str, str], float] = {}
        self.request_counts: dict[str, int] = {}
        # One person's ids -> (when found, monotonic; their shared conversations).
        self._shared_found: OrderedDict[tuple[str, ...], tuple[float, list[str]]] = OrderedDict()
        # The same as an OpenTelemetry metric (a no-op unless the app configured a provider).
        self._charge_metric = metrics.get_meter("enterprise_chat.storage").create_counter(
            "store.request_charge", unit="RU", description="Cosmos DB request units by operation"
        )

    # --- lifecycle

    def _container_names(self) -> dict[str, str]:
        c = self._config
        return {
            "messages": c.messages_container,
            "conversations": c.conversations_container,
            "botstate": c.botstate_container,
            "usage": c.usage_container,
            "audit": c.audit_container,
        }

    async def open(self) -> None:
        config = self._config
        if not config.endpoint:
            raise StoreError("the Cosmos DB store needs an endpoint (COSMOS_ENDPOINT)")
        auth: str | AsyncTokenCredential
        if config.key:
            # The SDK decodes it only when signing the first request: a traceback from deep in
            # the SDK that does not name the setting.
            try:
                base64.b64decode(config.key, validate=True)
            except binascii.Error:
                raise ConfigurationError(
                    "COSMOS_KEY: not an account key (those are base64 text)"
                ) from None
            auth = config.key
            log.info("cosmos auth: account key (emulator/protocol server)")
        elif self._credential is not None:
            auth = self._credential
            log.info("cosmos auth: Entra ID via %s", type(self._credential).__name__)
        else:
            raise StoreError("the Cosmos DB store needs a key or an Entra ID credential")
        if not config.verify_tls:
            log.warning("cosmos TLS certificate checks are off (local protocol server only)")
        elif (endpoint := urlsplit(config.endpoint)).scheme == "https" and (
            endpoint.hostname in _UNVERIFIED_HOSTS
        ):
            # A tunnel to a real account on localhost would otherwise lose its checks silently.
            log.warning(
                "cosmos TLS certificate checks are off: the Cosmos DB SDK never checks them for "
                "an endpoint on localhost or 127.0.0.1, whatever COSMOS_VERIFY_TLS says"
            )
        self._client = CosmosClient(
            config.endpoint,
            auth,
            connection_verify=config.verify_tls,
            retry_throttle_total=config.throttle_retries,
            retry_throttle_backoff_max=config.throttle_max_wait_seconds,
            retry_total=config.connection_retries,
            retry_connect=config.connection_retries,
            retry_read=config.connection_retries,
            retry_backoff_max=5,
            connection_timeout=config.connection_timeout_seconds,
            read_timeout=config.read_timeout_seconds,
        )
        try:
            async with self._guard("open"):
                if config.create_containers:
                    await self._create_containers()
                else:
                    await self._check_containers()
            await self._name_legacy_owners()
        except BaseException:
            await self.close()
            raise

    async def _name_legacy_owners(self) -> None:
        """State items a release before owners were recorded wrote (no `owner`) get the owner
        `storage.botstate.legacy_owners` can tell, so deleting or exporting their user finds
        them. A replace on the item's ETag: one a turn wrote meanwhile was stamped by the turn.
        One cross-partition query over the state container, once: a marker says it was done.
        Not being able to look is no reason not to start: the user's next message stamps the
        owner too."""
        op = "open"
        container = self._container("botstate")
        marker_id = LEGACY_OWNERS_SEARCHED
        try:
            async with self._guard(op):
                if await self._read_or_none(container, marker_id, marker_id, op) is not None:
                    return
                items = {
                    str(doc["id"]): doc
                    async for doc in self._query(
                        container, op, "SELECT * FROM c WHERE NOT IS_DEFINED(c.owner)", []
                    )
                }
                documents = [
                    (str(_clean(doc)["id"]), document)
                    for doc in items.values()
                    if isinstance(document := doc.get("document"), dict)
                ]
                owners, unattributed = await legacy_owners(documents, _OwnerEvidence(self))
                gate = asyncio.Semaphore(_DELETE_CONCURRENCY)
                named = sum(
                    await asyncio.gather(
                        *(self._name_owner(items[cosmos_id(k)], o, gate) for k, o in owners.items())
                    )
                )
                if owners or unattributed:
                    marker = {"named": named, "unattributed": unattributed}
                    item = {"type": "state", "schemaVersion": 1, "document": marker}
                    await container.upsert_item(
                        _with_id(item, marker_id), response_hook=self._hook(op)
                    )
        except StoreError:
            log.warning("the owners of bot state stored by an earlier release were not looked up")
            return
        report_legacy_owners(named, unattributed)

    async def _name_owner(self, item: dict[str, Any], owner: str, gate: asyncio.Semaphore) -> int:
        op = "open"
        replacement = {k: v for k, v in item.items() if k not in _SERVICE_FIELDS}
        replacement["owner"] = owner
        async with gate:
            try:
                await self._container("botstate").replace_item(
                    item["id"],
                    replacement,
                    etag=item["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                    response_hook=self._hook(op),
                )
            except CosmosHttpResponseError as exc:
                if _status(exc) not in (404, 412):
                    raise
                self._record(op, exc.headers)  # written (and stamped) or deleted meanwhile
                return 0
        return 1

    async def _create_containers(self) -> None:
        assert self._client is not None
        # The SDK looks before it creates: an instance starting at the same moment can create
        # the database or a container in between, and this one's create is answered 409. What
        # it wanted exists then, which is all it needs (the read below checks it).
        try:
            database = await self._client.create_database_if_not_exists(self._config.database)
        except CosmosResourceExistsError:
            database = self._client.get_database_client(self._config.database)
        self._database = database
        names = self._container_names()
        for spec in CONTAINER_SPECS:
            name = names[spec.role]
            ttl = self._default_ttl(spec)
            extra: dict[str, Any] = {} if ttl is None else {"default_ttl": ttl}
            try:
                container = await database.create_container_if_not_exists(
                    name,
                    PartitionKey(path=spec.partition_key),
                    indexing_policy=spec.indexing_policy(),
                    **extra,
                )
            except CosmosResourceExistsError:
                container = database.get_container_client(name)
            properties = await container.read()
            self._check_partition_key(spec, name, properties)
            # An existing container keeps the defaultTtl it was made with: RETENTION_DAYS
            # changed since (or an older release made it) would never take effect otherwise.
            if ttl is not None and properties.get("defaultTtl") != ttl:
                properties = await self._replace_default_ttl(database, spec, name, properties)
            self._check_properties(spec, name, properties)
            self._containers[spec.role] = container
        log.info("cosmos containers ready in database %s", self._config.database)

    async def _replace_default_ttl(
        self, database: DatabaseProxy, spec: ContainerSpec, name: str, properties: dict[str, Any]
    ) -> dict[str, Any]:
        """The container with the defaultTtl the app needs. A replace resets every property it
        is not given, so the partition key, indexing policy and the other settings read are
        given back as they are. Refused (a read-only key), the container stays as it was and
        `_check_properties` says so."""
        ttl = self._default_ttl(spec)
        assert ttl is not None
        key = properties["partitionKey"]
        try:
            _, replaced = await database.replace_container(
                name,
                # A key read without a version is a version 1 (legacy) one.
                PartitionKey(
                    path=key["paths"], kind=key.get("kind", "Hash"), version=key.get("version", 1)
                ),
                indexing_policy=properties.get("indexingPolicy"),
                default_ttl=ttl,
                conflict_resolution_policy=properties.get("conflictResolutionPolicy"),
                analytical_storage_ttl=properties.get("analyticalStorageTtl"),
                computed_properties=properties.get("computedProperties"),
                full_text_policy=properties.get("fullTextPolicy"),
                vector_embedding_policy=properties.get("vectorEmbeddingPolicy"),
                return_properties=True,
                response_hook=self._hook("open"),
            )
        except CosmosHttpResponseError as exc:
            if _status(exc) not in (401, 403):
                raise
            self._record("open", exc.headers)
            return properties
        before = properties.get("defaultTtl")
        if ttl != -1:
            effect = (
                "items without a ttl of their own now expire that many seconds after their last "
                "write"
            )
        elif before is None:
            # -1 is not a number of seconds: TTL on, and only items with a ttl of their own expire.
            effect = "TTL turned on; items without a ttl of their own do not expire"
        else:
            effect = "items without a ttl of their own no longer expire"
        log.warning(
            "cosmos container %s: defaultTtl changed from %s to %s (RETENTION_DAYS=%d); %s",
            name,
            "off" if before is None else before,
            ttl,
            self._config.retention_days,
            effect,
        )
        return dict(replaced)

    def _default_ttl(self, spec: ContainerSpec) -> int | None:
        if spec.default_ttl == "retention":
            # -1, not None: TTL stays on, so turning retention on later only changes the
            # default, and items written meanwhile with a ttl of their own still expire.
            return self._config.retention_seconds or -1
        return spec.default_ttl if isinstance(spec.default_ttl, int) else None

    async def _check_containers(self) -> None:
        assert self._client is not None
        database = self._client.get_database_client(self._config.database)
        self._database = database
        names = self._container_names()
        missing: list[str] = []
        for spec in CONTAINER_SPECS:
            container = database.get_container_client(names[spec.role])
            try:
                properties = await container.read()
            except CosmosHttpResponseError as exc:
                if _status(exc) != 404:
                    raise
                missing.append(names[spec.role])
                continue
            self._check_properties(spec, names[spec.role], properties)
            self._containers[spec.role] = container
        if missing:
            message = (
                f"Cosmos DB database {self._config.database!r} lacks the container(s) "
                f"{', '.join(missing)} (or the database itself). With Entra ID the app cannot "
                "create them: deploy them with the infrastructure (infra/), or set "
                "COSMOS_CREATE_CONTAINERS=true where the app authenticates with a key."
            )
            log.error(message)
            raise StoreError(message)

    def _check_partition_key(
        self, spec: ContainerSpec, name: str, properties: Mapping[str, Any]
    ) -> None:
        paths = (properties.get("partitionKey") or {}).get("paths") or []
        if paths != [spec.partition_key]:
            message = (
                f"Cosmos DB container {name!r} is partitioned by {paths}, "
                f"expected [{spec.partition_key!r}]"
            )
            log.error(message)
            raise StoreError(message)

    def _check_properties(
        self, spec: ContainerSpec, name: str, properties: Mapping[str, Any]
    ) -> None:
        self._check_partition_key(spec, name, properties)
        ttl, found = self._default_ttl(spec), properties.get("defaultTtl")
        self._item_ttls.pop(spec.role, None)
        if ttl is not None and found != ttl:
            meanwhile = ""
            if found is None:
                # Per-item ttl is ignored while the container has TTL off.
                state, effect = "TTL off", "its items will never expire"
            elif found == -1:
                state, effect = "defaultTtl -1", "items without a ttl of their own never expire"
            else:
                state = f"defaultTtl {found}"
                effect = f"items without a ttl of their own expire {found} s after their last write"
            if found is not None and spec.default_ttl == "retention":
                # The setting wins all the same (an operator who shortened it for compliance
                # gets that): each message and summary carries the ttl the default should have.
                self._item_ttls[spec.role] = ttl
                meanwhile = (
                    " Meanwhile the app gives each item it writes there a ttl of its own of"
                    f" {ttl}{' (never expires)' if ttl == -1 else ''}"
                    " and the retention purge gives one to the items stored without it (deleting"
                    " those already past RETENTION_DAYS), so RETENTION_DAYS applies;"
                )
            log.warning(
                "cosmos container %s has %s, where the app needs defaultTtl %s "
                "(RETENTION_DAYS=%d): %s.%s %s",
                name,
                state,
                ttl,
                self._config.retention_days,
                effect,
                meanwhile,
                _PROVISION_AGAIN,
            )
        if spec.composite:
            wanted = [{"path": path, "order": order} for path, order in spec.composite]
            composites = (properties.get("indexingPolicy") or {}).get("compositeIndexes") or []
            if wanted not in composites:
                # Cosmos DB rejects the admin list's two-key ORDER BY without it (HTTP 400).
                log.warning(
                    "cosmos container %s lacks the composite index %s: admin lists will fail",
                    name,
                    " + ".join(f"{path} {order}" for path, order in spec.composite),
                )

    async def close(self) -> None:
        # The credential belongs to the app (it closes it after the store).
        if self._client is not None:
            await self._client.close()
        self._client = None
        self._database = None
        self._containers = {}
        self._item_ttls = {}

    async def ping(self) -> None:
        if self._database is None:
            raise StoreError("the Cosmos DB store is not open")
        async with self._guard("ping"):
            await self._database.read(response_hook=self._hook("ping"))

    async def purge_expired(self) -> int:
        """Cosmos DB deletes expired items itself (the containers' defaultTtl, an item's own
        ttl). Messages and summaries an earlier release wrote with a ttl of their own that the
        setting of the day does not give (`_RETENTION`) get the ttl it needs, or are deleted
        when they are past it; so do those stored without one in a container whose defaultTtl
        is not the setting (`_item_ttls`). One cross-partition query per container (index
        lookups, none found once done), at each start and hourly, so items an earlier release
        still running beside this one writes are found too. How many were deleted."""
        op = "purge_expired"
        days, seconds = self._config.retention_days, self._config.retention_seconds
        gate = asyncio.Semaphore(_DELETE_CONCURRENCY)
        outcomes: list[str] = []
        async with self._guard(op):
            for role, key in (("messages", "conversationId"), ("conversations", "userId")):
                container = self._container(role)
                without = "NOT IS_DEFINED(c.ttl) OR" if role in self._item_ttls else ""
                found = self._query(
                    container,
                    op,
                    _OWN_TTL_QUERY.format(key=key, without=without),
                    [
                        {"name": "@days", "value": days},
                        {"name": "@seconds", "value": seconds or -1},
                    ],
                    page_size=_RETAINED_PAGE,
                )
                async for page in found.by_page():
                    items = [item async for item in page if isinstance(item.get(key), str)]
                    outcomes += await asyncio.gather(
                        *(self._retain(container, item, item[key], gate) for item in items)
                    )
        changed, deleted = outcomes.count("changed"), outcomes.count("deleted")
        if changed or deleted:
            log.info(
                "retention: %d messages and summaries stored with a ttl of their own (an earlier "
                "release's RETENTION_DAYS) or without one where the container's defaultTtl is not "
                "the setting now expire by RETENTION_DAYS=%d; %d past it deleted",
                changed,
                days,
                deleted,
            )
        return deleted

    async def _retain(
        self,
        container: ContainerProxy,
        item: dict[str, Any],
        partition: str,
        gate: asyncio.Semaphore,
    ) -> str:
        """One item of `purge_expired`, on the ETag it was read with: an item written meanwhile
        is left to the next purge (a write gives it the ttl of the day anyway, `_renewed`)."""
        op = "purge_expired"
        async with gate:
            # Taken when the patch goes: `_last_write` compares the `_ts` it sets with it.
            now = time.time()
            ttl = retention_ttl(item, self._config.retention_seconds, now)
            try:
                if ttl is None:
                    await container.delete_item(
                        item["id"],
                        partition,
                        etag=item["_etag"],
                        match_condition=MatchConditions.IfNotModified,
                        response_hook=self._hook(op),
                    )
                    return "deleted"
                record = {
                    "lastWrite": _last_write(item),
                    "days": self._config.retention_days,
                    "at": now,
                }
                await container.patch_item(
                    item["id"],
                    partition,
                    [
                        {"op": "set", "path": "/ttl", "value": ttl},
                        {"op": "set", "path": f"/{_RETENTION}", "value": record},
                    ],
                    etag=item["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                    response_hook=self._hook(op),
                )
                return "changed"
            except CosmosHttpResponseError as exc:
                if _status(exc) not in (404, 412):
                    raise
                self._record(op, exc.headers)
                return "left"

    def _container(self, role: str) -> ContainerProxy:
        try:
            return self._containers[role]
        except KeyError:
            raise StoreError("the Cosmos DB store is not open") from None

    def _ttl(self) -> int | None:
        """A state document's own ttl (`write_state` with `expires`): RETENTION_DAYS."""
        return self._config.retention_seconds or None

    def _renewed(self, role: str, current: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The patch operations that go with any other patch of a message or summary (`role`'s
        container) read as `current`: the patch renews its `_ts`, so it gets the ttl a write gets
        (`_item_ttls`), or none where the container's defaultTtl is the setting, and the purge's
        record goes. A ttl the purge shortened (counted from the item's last write before it)
        would otherwise count from this write, and the next purge, finding the record of the
        setting of the day, would leave it: the item would expire early."""
        operations: list[dict[str, Any]] = []
        if _RETENTION in current:
            operations.append({"op": "remove", "path": f"/{_RETENTION}"})
        ttl = self._item_ttls.get(role)
        if ttl is not None:
            operations.append({"op": "set", "path": "/ttl", "value": ttl})
        elif "ttl" in current:
            operations.append({"op": "remove", "path": "/ttl"})
        return operations

    # --- errors and request charges

    @asynccontextmanager
    async def _guard(self, op: str) -> AsyncIterator[None]:
        """SDK failures (after the SDK's own retries) as StoreError; never the SDK's message,
        which may quote a document, a query or an item's address (ids), not even as the
        error's cause: a logged traceback prints the chain. What support needs is the status,
        the sub-status and the service's activity id."""
        try:
            yield
        except CosmosHttpResponseError as exc:
            self._record(op, exc.headers)
            status, sub_status = _status(exc), exc.sub_status
            if status == 429:
                log.warning("cosmos %s throttled after retries", op)
                throttled = f"Cosmos DB is throttling {op} (429)"
                raise StoreThrottled(throttled, failure="http") from None
            activity = (exc.headers or {}).get("x-ms-activity-id", "")
            log.warning(
                "cosmos %s failed: HTTP %s/%s",
                op,
                status,
                sub_status,
                extra={"cosmos_activity_id": activity},
            )
            hint = " (check the managed identity's data-plane role)" if status in (401, 403) else ""
            raise StoreError(
                f"Cosmos DB {op} failed with HTTP {status}{hint}", failure="http"
            ) from None
        except (AzureError, TimeoutError) as exc:
            log.warning("cosmos %s failed: %s", op, type(exc).__name__)
            if isinstance(exc, ClientAuthenticationError):
                failure = "auth"
            elif isinstance(exc, HttpResponseError):
                failure = "http"
            else:
                failure = "unreachable"
            raise StoreError(
                f"Cosmos DB {op} failed: {type(exc).__name__}", failure=failure
            ) from None

    async def _read_or_none(
        self, container: ContainerProxy, item_id: str, partition_key: str, op: str
    ) -> dict[str, Any] | None:
        """A point read; None when the item does not exist (404 is an answer, not a failure)."""
        try:
            doc: dict[str, Any] = await container.read_item(
                item_id, partition_key, response_hook=self._hook(op)
            )
        except CosmosHttpResponseError as exc:
            if _status(exc) != 404:
                raise
            self._record(op, exc.headers)
            return None
        return doc

    def _hook(self, op: str) -> Callable[[Mapping[str, str], Any], None]:
        def hook(headers: Mapping[str, str], _body: Any) -> None:
            self._record(op, headers)

        return hook

    def _record(self, op: str, headers: Mapping[str, str] | None) -> None:
        raw = headers.get("x-ms-request-charge") if headers else None
        if raw is None:
            return
        try:
            charge = float(raw)
        except ValueError:
            return
        self.request_charges[op] = self.request_charges.get(op, 0.0) + charge
        self.request_counts[op] = self.request_counts.get(op, 0) + 1
        self._charge_metric.add(charge, {"operation": op})
        log.debug("cosmos %s request charge %.2f RU", op, charge)

    def _query(
        self,
        container: ContainerProxy,
        op: str,
        query: str,
        parameters: list[dict[str, Any]],
        partition_key: str | None = None,
        page_size: int | None = None,
    ) -> AsyncItemPaged[dict[str, Any]]:
        """Items of a parameterized query; cross-partition when no partition key is given.
        Pages are fetched lazily, so a caller that stops early reads no further pages."""
        kwargs: dict[str, Any] = {}
        if partition_key is not None:
            kwargs["partition_key"] = partition_key
        if page_size is not None:
            kwargs["max_item_count"] = page_size
        return container.query_items(
            query, parameters=parameters, response_hook=self._hook(op), **kwargs
        )

    # --- messages

    def _message_doc(self, message: Message) -> dict[str, Any]:
        # No ttl of its own (one read from an earlier release's item goes): the container's
        # defaultTtl counts from this write; or the setting's, where that is not it.
        message = message.model_copy(update={"ttl": self._item_ttls.get("messages")})
        doc = _with_id(message.to_doc(), message.id)
        doc["createdAt"] = _stamp(message.created_at)
        return doc

    async def add_message(self, message: Message) -> bool:
        """False when the message was stored before this call (by a redelivery's earlier
        turn). A conflict (409) costs one read, on that path only: the id may be taken by this
        very call's write, which landed though its answer was lost, and the SDK sent it again
        (see `_APPLIED_DELTAS_KEPT`). The stored item's `writeId` tells: this call's own write
        is a success, or its turn would go unanswered as a redelivery."""
        op = "add_message"
        container = self._container("messages")
        doc = self._message_doc(message)
        doc[_WRITE_ID] = uuid.uuid4().hex
        async with self._guard(op):
            created, stored = await self._create(container, doc, message.conversation_id, op)
        if created:
            return True
        if stored is None:
            return False  # deleted since (an erasure): nothing of it to answer
        return bool(stored.get(_WRITE_ID) == doc[_WRITE_ID])

    async def _create(
        self, container: ContainerProxy, doc: dict[str, Any], partition_key: str, op: str
    ) -> tuple[bool, dict[str, Any] | None]:
        """Creates `doc`: (True, None). On a conflict, (False, the item stored under its id; None
        when it is gone since): the SDK's resend of a create whose answer was lost meets the
        item that create wrote, which only the caller can tell from another one."""
        try:
            await container.create_item(doc, response_hook=self._hook(op))
        except CosmosHttpResponseError as exc:
            if _status(exc) != 409:
                raise
            self._record(op, exc.headers)
            return False, await self._read_or_none(container, doc["id"], partition_key, op)
        return True, None

    async def replace_message(self, message: Message) -> None:
        """A point read, then a replace if the item did not change meanwhile (ETag): one that
        its user withdrew stays withdrawn (MessageStore.replace_message). Only a prompt whose
        status the user must hear about is replaced, so the read is rare."""
        op = "replace_message"
        doc = self._message_doc(message)
        container = self._container("messages")
        withdrawal = message.status is MessageStatus.WITHDRAWN
        async with self._guard(op):
            for _ in range(_MAX_RACES):
                current = await self._read_or_none(
                    container, doc["id"], message.conversation_id, op
                )
                if current is None:
                    # Same as SQLite: replacing a message that is not there changes nothing.
                    log.debug("cosmos replace_message: no such message")
                    return
                if current.get("status") == MessageStatus.WITHDRAWN.value and not withdrawal:
                    log.debug("cosmos replace_message: withdrawn by its user, left as it is")
                    return
                try:
                    await container.replace_item(
                        doc["id"],
                        doc,
                        etag=current["_etag"],
                        match_condition=MatchConditions.IfNotModified,
                        response_hook=self._hook(op),
                    )
                    return
                except CosmosHttpResponseError as exc:
                    if await _race_status(exc) not in (404, 412):
                        raise
                    self._record(op, exc.headers)  # changed or gone meanwhile: read again
            raise ETagMismatch(f"message replace lost {_MAX_RACES} races in a row")

    async def get_message(self, conversation_id: str, message_id: str) -> Message | None:
        op = "get_message"
        async with self._guard(op):
            doc = await self._read_or_none(
                self._container("messages"), cosmos_id(message_id), conversation_id, op
            )
        if doc is None:
            return None
        return readable_message(_clean(doc), conversation_id, TAKEN_AS_MISSING)

    async def recent_messages(self, conversation_id: str, limit: int) -> list[Message]:
        op = "recent_messages"
        if limit <= 0:
            return []
        async with self._guard(op):
            docs = [
                doc
                async for doc in self._query(
                    self._container("messages"),
                    op,
                    "SELECT TOP @n * FROM c WHERE c.conversationId = @cid ORDER BY c.seq DESC",
                    [{"name": "@n", "value": limit}, {"name": "@cid", "value": conversation_id}],
                    partition_key=conversation_id,
                    page_size=limit,
                )
            ]
        return readable_messages((_clean(doc) for doc in reversed(docs)), conversation_id)

    async def conversation_messages(self, conversation_id: str) -> list[Message]:
        return [m async for m in self._conversation_messages(conversation_id, page_size=None)]

    def conversation_message_pages(
        self, conversation_id: str, page_size: int
    ) -> AsyncGenerator[list[Message], None]:
        return in_pages(self._conversation_messages(conversation_id, page_size), page_size)

    async def _conversation_messages(
        self, conversation_id: str, page_size: int | None
    ) -> AsyncGenerator[Message, None]:
        """The conversation's readable messages in order (one that cannot be read is skipped and
        logged), `page_size` from the service at a time (None: the service's own page size)."""
        op = "conversation_messages"
        async with self._guard(op):
            async for doc in self._query(
                self._container("messages"),
                op,
                "SELECT * FROM c WHERE c.conversationId = @cid ORDER BY c.seq ASC",
                [{"name": "@cid", "value": conversation_id}],
                partition_key=conversation_id,
                page_size=page_size,
            ):
                message = readable_message(_clean(doc), conversation_id, SKIPPED)
                if message is not None:
                    yield message

    async def set_feedback(
        self, conversation_id: str, message_id: str, feedback: Feedback | FeedbackUpdate
    ) -> FeedbackChange | None:
        """A point read for the feedback it replaces, then a patch of `/feedback` alone on the
        read's ETag (nothing else of the message is written, so a concurrent write of another
        field is not undone); a lost race (412) reads again, so the feedback replaced is the
        one stored just before, and a `FeedbackUpdate` decides again from it. A message deleted
        meanwhile (404) is None, as a missing one."""
        op = "set_feedback"
        container = self._container("messages")
        item_id = cosmos_id(message_id)
        # The last patch sent, and the feedback it replaced: a 412 may be the SDK's resend of
        # a patch that landed (its answer lost), found by its id in the item read again.
        sent: tuple[str, Feedback | None] | None = None
        async with self._guard(op):
            for _ in range(_MAX_RACES):
                current = await self._read_or_none(container, item_id, conversation_id, op)
                if current is None:
                    return None
                stored = readable_message(_clean(current), conversation_id, TAKEN_AS_MISSING)
                if stored is None:
                    return None
                if sent is not None and current.get(_FEEDBACK_WRITE_ID) == sent[0]:
                    return FeedbackChange(message=stored, previous=sent[1])
                previous = stored.feedback
                given = feedback if isinstance(feedback, Feedback) else feedback(previous)
                sent = (uuid.uuid4().hex, previous)
                # A rating renews the message: its expiry counts from it, as from any other
                # write.
                try:
                    doc = await container.patch_item(
                        item_id,
                        conversation_id,
                        [
                            {"op": "set", "path": "/feedback", "value": given.to_doc()},
                            {"op": "set", "path": f"/{_FEEDBACK_WRITE_ID}", "value": sent[0]},
                            *self._renewed("messages", current),
                        ],
                        etag=current["_etag"],
                        match_condition=MatchConditions.IfNotModified,
                        response_hook=self._hook(op),
                    )
                except CosmosHttpResponseError as exc:
                    if await _race_status(exc) not in (404, 412):
                        raise
                    self._record(op, exc.headers)
                    continue
                # The rating is stored: an answer that cannot be read says the same as this.
                message = readable_message(_clean(doc), conversation_id, TAKEN_AS_MISSING)
                message = message or stored.model_copy(update={"feedback": given})
                return FeedbackChange(message=message, previous=previous)
            raise ETagMismatch(f"storing feedback lost {_MAX_RACES} races in a row")

    async def revise_message(self, revision: MessageRevision) -> RevisionOutcome:
        """Point operations in two partitions: the message is read, the summary's title changed
        (an ETag-conditional replace, read again on a lost race), the answer marked (a patch of
        `/promptChanged` alone), then the message replaced on the ETag it was read with; a
        write meanwhile (feedback, a turn) reads it again and decides again."""
        op = "revise_message"
        container = self._container("messages")
        item_id = cosmos_id(revision.message_id)
        async with self._guard(op):
            for _ in range(_MAX_RACES):
                current = await self._read_or_none(container, item_id, revision.conversation_id, op)
                if current is None:
                    return "missing"
                stored = readable_message(
                    _clean(current), revision.conversation_id, UNREVISED_UNREADABLE
                )
                if stored is None:
                    return "unreadable"
                message = revised(stored, revision)
                if isinstance(message, str):
                    return message
                await self._retitle(stored, revision, op)
                if revision.answer_id:
                    await self._mark_prompt_changed(revision, op)
                try:
                    await container.replace_item(
                        item_id,
                        self._message_doc(message),
                        etag=current["_etag"],
                        match_condition=MatchConditions.IfNotModified,
                        response_hook=self._hook(op),
                    )
                except CosmosHttpResponseError as exc:
                    if await _race_status(exc) not in (404, 412):
                        raise
                    self._record(op, exc.headers)
                    continue
                return outcome_of(revision)
            raise ETagMismatch(f"revising a message lost {_MAX_RACES} races in a row")

    async def _mark_prompt_changed(self, revision: MessageRevision, op: str) -> None:
        """The answer to a revised prompt marked (a patch of `/promptChanged`, with its expiry
        renewed as by any write: `_renewed`) on the ETag it was read with; no answer: nothing to
        take out of the context."""
        container = self._container("messages")
        item_id = cosmos_id(revision.answer_id or "")
        for _ in range(_MAX_RACES):
            current = await self._read_or_none(container, item_id, revision.conversation_id, op)
            if current is None:
                return
            try:
                await container.patch_item(
                    item_id,
                    revision.conversation_id,
                    [
                        {"op": "set", "path": "/promptChanged", "value": True},
                        *self._renewed("messages", current),
                    ],
                    etag=current["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                    response_hook=self._hook(op),
                )
                return
            except CosmosHttpResponseError as exc:
                if await _race_status(exc) not in (404, 412):
                    raise
                self._record(op, exc.headers)
        raise ETagMismatch(f"marking an answer lost {_MAX_RACES} races in a row")

    async def _retitle(self, old: Message, revision: MessageRevision, op: str) -> None:
        """The conversation summary's title, when it was taken from `old`'s text (`retitled`)."""
        container = self._container("conversations")
        item_id = cosmos_id(revision.conversation_id)
        for _ in range(_MAX_RACES):
            current = await self._read_or_none(container, item_id, revision.summary_owner, op)
            if current is None:
                return
            summary = readable_summary(
                _clean(current), revision.conversation_id, UNREVISED_UNREADABLE
            )
            after = retitled(summary, old, revision) if summary is not None else None
            if after is None:
                return
            try:
                await container.replace_item(
                    item_id,
                    self._summary_doc(after, _applied_deltas(current)),
                    etag=current["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                    response_hook=self._hook(op),
                )
                return
            except CosmosHttpResponseError as exc:
                if await _race_status(exc) not in (404, 412):
                    raise
                self._record(op, exc.headers)
        raise ETagMismatch(f"changing a title lost {_MAX_RACES} races in a row")

    # --- conversation summaries

    def _summary_doc(
        self, summary: ConversationSummary, applied: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The stored document; `applied`: the ids of the last deltas applied to it (a
        rewrite keeps the ones it read), Cosmos DB's alone (`_APPLIED_DELTAS_KEPT`)."""
        summary = summary.model_copy(update={"ttl": self._item_ttls.get("conversations")})
        doc = _with_id(summary.to_doc(), summary.conversation_id)
        doc["createdAt"] = _stamp(summary.created_at)
        doc["lastActivityAt"] = _stamp(summary.last_activity_at)
        if applied:
            doc["appliedDeltas"] = list(applied[-_APPLIED_DELTAS_KEPT:])
        return doc

    async def apply_summary_delta(self, delta: SummaryDelta) -> None:
        """Read, apply the shared arithmetic (`storage.summaries.apply_delta`), write back with
        the read's ETag; a lost race (412, 449, 409 on a concurrent first write, or 404: the
        summary was deleted after the read, and starts over) reads again.
        A patch cannot express this: it needs max(lastActivityAt), a set union of flag reasons
        and more than the 10 operations one patch allows. A stored summary that cannot be read
        starts over from this delta (logged), as a new conversation's does: replaced on the same
        ETag condition, so a turn that wrote it meanwhile is read again and added to.
        The write records the delta's id, and a read that finds it there is done: the 412 or
        409 was this write's own, sent again by the SDK after its answer was lost, and the
        delta is not counted twice (`_APPLIED_DELTAS_KEPT`). SQLite needs no such record: its
        transaction commits or fails, and nothing sends it again."""
        op = "apply_summary_delta"
        container = self._container("conversations")
        item_id = cosmos_id(delta.conversation_id)
        async with self._guard(op):
            for _ in range(_MAX_RACES):
                current = await self._read_or_none(container, item_id, delta.user_id, op)
                applied = _applied_deltas(current)
                if delta.id in applied:
                    return
                applied.append(delta.id)
                try:
                    if current is None:
                        await container.create_item(
                            self._summary_doc(apply_delta(new_summary(delta), delta), applied),
                            response_hook=self._hook(op),
                        )
                    else:
                        stored = readable_summary(
                            _clean(current), delta.conversation_id, RESTARTED_UNREADABLE
                        )
                        await container.replace_item(
                            item_id,
                            self._summary_doc(
                                apply_delta(
                                    stored if stored is not None else new_summary(delta), delta
                                ),
                                applied,
                            ),
                            etag=current["_etag"],
                            match_condition=MatchConditions.IfNotModified,
                            response_hook=self._hook(op),
                        )
                    return
                except CosmosHttpResponseError as exc:
                    # A 404 is a race only for a replace (the summary deleted after the read);
                    # a create's is a missing container, not to be read again.
                    races = (404, 409, 412) if current is not None else (409, 412)
                    if await _race_status(exc) not in races:
                        raise
                    self._record(op, exc.headers)
            raise ETagMismatch(f"summary update lost {_MAX_RACES} races in a row")

    async def get_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        op = "get_summary"
        async with self._guard(op):
            doc = await self._read_or_none(
                self._container("conversations"), cosmos_id(conversation_id), user_id, op
            )
        return ConversationSummary.model_validate(_clean(doc)) if doc is not None else None

    async def find_summary(self, conversation_id: str) -> ConversationSummary | None:
        op = "find_summary"  # admin, a dislike not under its owner: crosses /userId partitions
        async with self._guard(op):
            async for doc in self._query(
                self._container("conversations"),
                op,
                "SELECT * FROM c WHERE c.conversationId = @cid",
                [{"name": "@cid", "value": conversation_id}],
            ):
                return ConversationSummary.model_validate(_clean(doc))
        return None

    async def list_summaries(
        self, query: SummaryQuery, page_size: int, continuation: str | None = None
    ) -> Page:
        op = "list_summaries"
        clauses: list[str] = []
        params: list[dict[str, Any]] = []

        def where(clause: str, name: str | None = None, value: Any = None) -> None:
            clauses.append(clause)
            if name is not None:
                params.append({"name": name, "value": value})

        if query.tenant_id is not None:
            where("c.tenantId = @tenant", "@tenant", query.tenant_id)
        if query.channel_id is not None:
            where("c.channelId = @channel", "@channel", query.channel_id)
        if query.since is not None:
            where("c.lastActivityAt >= @since", "@since", _stamp(query.since))
        if query.until is not None:
            where("c.lastActivityAt < @until", "@until", _stamp(query.until))
        if query.flagged is not None:
            where("c.flagged = @flagged", "@flagged", query.flagged)
        if query.flag_reason is not None:
            where("ARRAY_CONTAINS(c.flagReasons, @reason)", "@reason", query.flag_reason)
        if query.negative_feedback is not None:
            where(f"c.negativeFeedbackCount {'>' if query.negative_feedback else '<='} 0")
        if query.has_errors is not None:
            where(f"c.errorCount {'>' if query.has_errors else '<='} 0")
        if continuation:
            at, item_id = decode_keyset(continuation)
            where(
                "(c.lastActivityAt < @at OR (c.lastActivityAt = @at AND c.id < @id))",
                "@at",
                at,
            )
            params.append({"name": "@id", "value": item_id})

        async def scan(
            field: str | None, values: Sequence[str], partition: str | None
        ) -> list[tuple[dict[str, Any], ConversationSummary]]:
            """The first page_size + 1 readable matches of one query, newest first; with `field`,
            of the summaries whose `field` is one of `values`."""
            names = [f"@in{index}" for index in range(len(values))]
            sql = "SELECT * FROM c"
            every = [f"{field} IN ({', '.join(names)})", *clauses] if field else clauses
            if every:
                sql += " WHERE " + " AND ".join(every)
            sql += " ORDER BY c.lastActivityAt DESC, c.id DESC"
            bound = params + [{"name": n, "value": v} for n, v in zip(names, values, strict=True)]
            found: list[tuple[dict[str, Any], ConversationSummary]] = []
            async for doc in self._query(
                self._container("conversations"),
                op,
                sql,
                bound,
                partition_key=partition,
                page_size=page_size + 1,
            ):
                # A document that cannot be read is skipped (and logged): a cursor always names
                # a readable one.
                clean = _clean(doc)
                summary = readable_summary(clean, _conversation_of(clean))
                if summary is None or not matches(summary, query):
                    continue
                found.append((doc, summary))
                if len(found) > page_size:
                    break
            return found

        async with self._guard(op):
            if query.user_ids is None:
                found = await scan(None, [], None)
            else:
                # One user: a single-partition query. Several (one person's ids): a
                # cross-partition query, as the list without a user filter is.
                ids = query.user_ids
                partition = ids[0] if len(ids) == 1 else None
                found = await scan("c.userId", ids, partition)
                if query.with_shared:
                    # And the conversations someone else owns that hold their messages: their
                    # ids from the messages (as `delete_user` finds them), then their summaries
                    # in slices, each query newest first; the slices' pages are merged.
                    shared = await self._shared_conversations(
                        ids, op, remembered=continuation is not None
                    )
                    for start in range(0, len(shared), _SHARED_IN_SLICE):
                        part = shared[start : start + _SHARED_IN_SLICE]
                        found += await scan("c.conversationId", part, None)
                    found.sort(
                        key=lambda pair: (str(pair[0]["lastActivityAt"]), str(pair[0]["id"])),
                        reverse=True,
                    )
        items = [summary for _, summary in found[:page_size]]
        token = None
        if len(found) > page_size:
            last = found[page_size - 1][0]
            token = encode_cursor(str(last["lastActivityAt"]), str(last["id"]))
        return Page(items=items, continuation=token)

    async def _shared_conversations(
        self, user_ids: Sequence[str], op: str, *, remembered: bool
    ) -> list[str]:
        """The conversations someone else owns (shared ones) that hold a message under one of
        `user_ids` (one person's): one cross-partition query on the messages per id, paged by
        the SDK's continuation tokens, and one partition query of their summaries; remembered
        remembered for _SHARED_REMEMBERED_SECONDS, and used for a next page (`remembered`): a
        first page reads them afresh."""
        key = tuple(user_ids)
        found = self._shared_found.get(key)
        if (
            remembered
            and found is not None
            and time.monotonic() - found[0] < _SHARED_REMEMBERED_SECONDS
        ):
            return found[1]
        written: set[str] = set()
        owned: set[str] = set()
        for user_id in user_ids:
            written |= await self._conversations_where("c.userId", user_id, op)
            owned |= await self._owned_conversations(user_id, op)
        shared = sorted(written - owned)
        self._shared_found[key] = (time.monotonic(), shared)
        self._shared_found.move_to_end(key)
        while len(self._shared_found) > _SHARED_REMEMBERED_PEOPLE:
            self._shared_found.popitem(last=False)
        return shared

    # --- counters (quotas and rate limits)

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
        """One conditional patch: `incr` applies only while the filter predicate holds, and the
        service evaluates both atomically, so concurrent app instances never pass the limit.
        (Filter predicates take no parameters; the numbers are ints we format ourselves.) The
        patch records the update's id (`write_id`, or one of this call), and a 412 whose read
        finds it there is this update, applied already: by this call, its answer lost and sent
        again by the SDK, or by a call that failed that the caller retries (`_APPLIED_KEPT`); a
        `resend` applies only where the document proves it did not land (`_InDoubt`)."""
        op = "add_to_counter"
        item_id = safe_id(f"{scope}|{window}")
        ttl = max(1, int(ttl_seconds))
        amount, limit = int(amount), int(limit)
        guarded = amount > 0 and limit > 0
        kept = write_id is not None  # the caller resends it when it fails
        update = self._update(item_id, write_id, resend)
        write_id = update.write_id
        ring = True  # what a document this version created has (`_has_ring`)
        async with self._guard(op), self._updating(item_id, update, kept, ttl):
            container = self._container("usage")
            for _ in range(_MAX_RACES):
                patch, recorded = update.record(ring)
                patch += [
                    {"op": "incr", "path": "/total", "value": amount},
                    {"op": "set", "path": "/ttl", "value": ttl},
                ]
                predicate = f"FROM c WHERE {recorded}"
                if guarded:
                    predicate += f" AND c.total + {amount} <= {limit}"
                try:
                    doc = await container.patch_item(
                        item_id,
                        scope,
                        patch,
                        filter_predicate=predicate,
                        response_hook=self._hook(op),
                    )
                    self._seen_updates(item_id, doc)
                    return CounterResult(value=int(doc["total"]), allowed=True)
                except CosmosHttpResponseError as exc:
                    status = await _race_status(exc)
                    if status not in (404, 412):
                        raise
                    self._record(op, exc.headers)
                if status == 412:
                    stored = await self._read_or_none(container, item_id, scope, op)
                    if stored is None:
                        continue  # it expired meanwhile: start again
                    self._seen_updates(item_id, stored)
                    current = int(stored.get("total", 0))
                    if _recorded(stored, write_id):
                        return CounterResult(value=current, allowed=True)  # our own, resent
                    if guarded and current + amount > limit:
                        return CounterResult(value=current, allowed=False)
                    ring = _has_ring(stored)
                    update.refused_by(stored)
                    continue  # a document without the ring, or a lost race: again
                if guarded and amount > limit:
                    return CounterResult(value=0, allowed=False)
                update.sent(0)
                try:
                    await container.create_item(
                        {
                            "id": item_id,
                            "type": "counter",
                            "schemaVersion": 1,
                            "scope": scope,
                            "window": window,
                            "total": amount,
                            "ttl": ttl,
                            "applied": _new_ring(write_id),
                            "updates": 1,
                        },
                        response_hook=self._hook(op),
                    )
                    self._updates_seen[item_id] = 1
                    return CounterResult(value=amount, allowed=True)
                except CosmosHttpResponseError as exc:
                    if _status(exc) != 409:
                        raise
                    # Another instance created it, or this create landed and was sent again:
                    # the patch's 412 then finds this call's id.
                    self._record(op, exc.headers)
                    ring = True
            raise StoreError(f"counter update lost {_MAX_RACES} races in a row")

    async def _read_counter(
        self, container: ContainerProxy, item_id: str, scope: str, op: str
    ) -> int | None:
        doc = await self._read_or_none(container, item_id, scope, op)
        return int(doc.get("total", 0)) if doc is not None else None

    async def read_counter(self, scope: str, window: str) -> int:
        op = "read_counter"
        async with self._guard(op):
            value = await self._read_counter(
                self._container("usage"), safe_id(f"{scope}|{window}"), scope, op
            )
        return value or 0

    async def add_usage(
        self,
        scope: str,
        day: str,
        change: UsageChange,
        *,
        write_id: str | None = None,
        resend: bool = False,
    ) -> UsageResult:
        """One conditional patch in the usual case: its filter predicate carries the limits, and
        the service checks it and applies the operations atomically, so concurrent app instances
        never pass a limit (https://learn.microsoft.com/azure/cosmos-db/partial-document-update).

        A patch cannot pick its operations by the document's state, so a request in the minute
        the document counts (`incr`) and one in a later minute (`set` the minute, count from 1)
        are different patches. The one tried first is the one this instance's last look at the
        document points to; when that is the wrong one, the 412 costs one read, which decides.
        The first update of a day creates the document (404, then create).

        Every patch and create records the update's id (`write_id`, or one of this call) in the
        document, and the predicate refuses a document that holds it: a 412 whose read finds it
        is this update, applied already, though its answer was lost: the SDK sent it again, or
        the caller retries a call that failed (with the same id). It counts once
        (`_APPLIED_KEPT`): a request count or reservation twice would make a limit stricter, a
        settlement or give-back twice would leave the stored usage wrong either way. A `resend`
        applies only where the document proves it did not land (`_InDoubt`). SQLite needs no
        such record: a call that fails has rolled its transaction back."""
        op = "add_usage"
        item_id = safe_id(f"{scope}|usage|{day}")
        known = self._usage_minutes.get(item_id)
        same_minute = known is not None and known >= change.minute
        kept = write_id is not None  # the caller resends it when it fails
        update = self._update(item_id, write_id, resend)
        write_id = update.write_id
        ring = True  # what a document this version created has (`_has_ring`)
        ttl = max(1, int(change.ttl_seconds))
        async with self._guard(op), self._updating(item_id, update, kept, ttl):
            container = self._container("usage")
            if apply_usage(UsageCounts(), change).refused in ("requests", "tokens"):
                # More than a limit on its own: it cannot fit whatever is stored.
                return apply_usage(await self._usage_counts(container, item_id, scope, op), change)
            for _ in range(_MAX_RACES):
                operations, predicate = _usage_patch(change, same_minute, update.record(ring))
                try:
                    doc = await container.patch_item(
                        item_id,
                        scope,
                        operations,
                        filter_predicate=predicate,
                        response_hook=self._hook(op),
                    )
                    self._seen_updates(item_id, doc)
                    return UsageResult(allowed=True, counts=self._usage_seen(item_id, doc))
                except CosmosHttpResponseError as exc:
                    status = await _race_status(exc)
                    if status not in (404, 412):
                        raise
                    self._record(op, exc.headers)
                stored = None
                if status == 412:
                    stored = await self._read_or_none(container, item_id, scope, op)
                if stored is not None:
                    current = self._usage_seen(item_id, stored)
                    self._seen_updates(item_id, stored)
                    if _recorded(stored, write_id):
                        return UsageResult(allowed=True, counts=current)  # our own, resent
                    ring = _has_ring(stored)
                    update.refused_by(stored)
                    result = apply_usage(current, change)
                    if not result.allowed:
                        return result
                    if change.requests < 0:
                        # What the document still lets it give back (nothing: another minute).
                        given = result.counts.requests - current.requests
                        change = change.model_copy(update={"requests": given})
                        if not given and not change.tokens:
                            return result
                    # The other patch, or the same one after a lost race.
                    same_minute = current.minute >= change.minute
                    continue
                result = apply_usage(UsageCounts(), change)
                if not result.allowed or (change.requests <= 0 and change.tokens <= 0):
                    # A settlement of a day that is gone (expired, or its user's data erased):
                    # nothing to correct, and tokens given back are refused (`UsageChange`).
                    return result
                counts = result.counts
                update.sent(0)
                try:
                    await container.create_item(
                        {
                            "id": item_id,
                            "type": "usage",
                            "schemaVersion": 1,
                            "scope": scope,
                            "day": day,
                            "tokens": counts.tokens,
                            "minute": counts.minute,
                            "requests": counts.requests,
                            "ttl": max(1, int(change.ttl_seconds)),
                            "applied": _new_ring(write_id),
                            "updates": 1,
                        },
                        response_hook=self._hook(op),
                    )
                    self._updates_seen[item_id] = 1
                    self._usage_seen(item_id, counts.model_dump())
                    return result
                except CosmosHttpResponseError as exc:
                    if _status(exc) != 409:
                        raise
                    # Another instance created it, or this create landed and was sent again:
                    # the patch's 412 then finds this call's id.
                    self._record(op, exc.headers)
                    same_minute, ring = True, True
            raise StoreError(f"usage update lost {_MAX_RACES} races in a row")

    async def read_usage(self, scope: str, day: str) -> UsageCounts:
        op = "read_usage"
        async with self._guard(op):
            return await self._usage_counts(
                self._container("usage"), safe_id(f"{scope}|usage|{day}"), scope, op
            )

    async def _usage_counts(
        self, container: ContainerProxy, item_id: str, scope: str, op: str
    ) -> UsageCounts:
        doc = await self._read_or_none(container, item_id, scope, op)
        return self._usage_seen(item_id, doc) if doc is not None else UsageCounts()

    async def scope_documents(self, scopes: Sequence[str]) -> list[dict[str, Any]]:
        """One single-partition query per scope (the container is keyed by scope)."""
        op = "scope_documents"
        usage: list[dict[str, Any]] = []
        counters: list[dict[str, Any]] = []
        async with self._guard(op):
            for scope in sorted(set(scopes)):
                async for doc in self._query(
                    self._container("usage"),
                    op,
                    "SELECT * FROM c WHERE c.scope = @scope",
                    [{"name": "@scope", "value": scope}],
                    partition_key=scope,
                ):
                    if "day" in doc:
                        counts = {k: int(doc.get(k, 0)) for k in ("tokens", "minute", "requests")}
                        usage.append({"type": "usage", "scope": scope, "day": doc["day"], **counts})
                    elif "window" in doc:
                        total = int(doc.get("total", 0))
                        window = doc["window"]
                        counters.append(
                            {"type": "counter", "scope": scope, "window": window, "total": total}
                        )
        # As on SQLite: by scope, each scope's usage by day, then its counters by window.
        return sorted(
            usage + counters,
            key=lambda d: (d["scope"], d["type"] != "usage", str(d.get("day", d.get("window")))),
        )

    async def delete_scopes(self, scopes: Sequence[str]) -> int:
        op = "delete_scopes"
        container = self._container("usage")
        delete = self._deleter(op)
        async with self._guard(op):
            found = [
                (str(item_id), scope)
                for scope in sorted(set(scopes))
                async for item_id in self._query(
                    container,
                    op,
                    "SELECT VALUE c.id FROM c WHERE c.scope = @scope",
                    [{"name": "@scope", "value": scope}],
                    partition_key=scope,
                )
            ]
            deleted = await asyncio.gather(*(delete(container, i, s) for i, s in found))
        return sum(deleted)

    def _usage_seen(self, item_id: str, doc: Mapping[str, Any]) -> UsageCounts:
        """The counts of a usage document, remembering its minute for the next patch's choice
        (a hint only: a wrong one costs a read, never a wrong count)."""
        counts = UsageCounts(
            tokens=int(doc.get("tokens", 0)),
            minute=int(doc.get("minute", 0)),
            requests=int(doc.get("requests", 0)),
        )
        if len(self._usage_minutes) >= _USAGE_MINUTES_KEPT:
            self._usage_minutes.clear()
        self._usage_minutes[item_id] = counts.minute
        return counts

    def _seen_updates(self, item_id: str, doc: Mapping[str, Any]) -> None:
        """Remember how many updates a usage or counter document counts: the bound the next
        update's sends carry (`_InDoubt`; a bound too high, as of a document deleted since,
        costs a 412 and a read, never a wrong count)."""
        if len(self._updates_seen) >= _USAGE_MINUTES_KEPT:
            self._updates_seen.clear()
        self._updates_seen[item_id] = _updates(doc)

    def _update(self, item_id: str, write_id: str | None, resend: bool) -> _Update:
        """The update a call makes: a new one, or the same (`write_id`) as an earlier call's
        that failed, which a `resend` applies only on the proof `_InDoubt` describes."""
        write_id = _update_id(write_id)
        key = (item_id, write_id)
        self._forget_old(time.monotonic())
        doubt = self._in_doubt.pop(key, None)
        after = self._updates_seen.get(item_id, 0)
        if resend and key in self._forgotten:
            raise UpdateOutcomeUnknown("this instance no longer keeps a record of its earlier send")
        if doubt is None or doubt.after is None:
            return _Update(write_id, after, False)  # no send of it went out
        if not resend:
            return _Update(write_id, after, False, doubt.after)
        return _Update(write_id, doubt.after, True, doubt.after)

    @asynccontextmanager
    async def _updating(
        self, item_id: str, update: _Update, kept: bool, ttl_seconds: int
    ) -> AsyncIterator[None]:
        """A call of `update` that fails keeps what a `resend` of it needs (`_InDoubt`), when
        its caller resends it (`kept`: given a `write_id`)."""
        try:
            yield
        except UpdateOutcomeUnknown:
            raise
        except BaseException:
            if kept:
                key = (item_id, update.write_id)
                self._in_doubt.pop(key, None)  # at the end: oldest failure first
                self._in_doubt[key] = _InDoubt(update.in_doubt, time.monotonic(), ttl_seconds)
            raise

    def _forget_old(self, now: float) -> None:
        """Forget the records of failed updates not resent within `IN_DOUBT_KEPT_SECONDS`,
        keeping their keys while their documents may live (`ttl_seconds` from then; dropped
        oldest first, so a key of a shorter-lived document may stay a little longer)."""
        while self._in_doubt:
            key, doubt = next(iter(self._in_doubt.items()))
            if now - doubt.failed_at < IN_DOUBT_KEPT_SECONDS:
                break
            del self._in_doubt[key]
            self._forgotten[key] = now + doubt.ttl_seconds
        while self._forgotten:
            key, until = next(iter(self._forgotten.items()))
            if until > now:
                break
            del self._forgotten[key]

    # --- audit

    async def append_audit(self, record: AuditRecord) -> None:
        op = "append_audit"
        doc = _with_id(record.to_doc(), record.id)
        doc["at"] = _stamp(record.at)
        async with self._guard(op):
            created, stored = await self._create(self._container("audit"), doc, doc["day"], op)
        # Every record's id is new (a time and a random part): a conflict is the SDK's resend of
        # this create after its answer was lost, unless the stored record says something else.
        # A record that must precede its action is then there.
        if not created and (stored is None or _clean(stored) != _clean(doc)):
            raise StoreError(f"Cosmos DB {op} found another record under the same id")

    async def list_audit(
        self, limit: int, continuation: str | None = None, query: AuditQuery | None = None
    ) -> tuple[list[AuditRecord], str | None]:
        op = "list_audit"  # admin only
        query = query or AuditQuery()
        conditions, params = _audit_conditions(query)
        cursor_day = None
        if continuation:
            at, item_id = decode_keyset(continuation)
            conditions.append("(c.at < @at OR (c.at = @at AND c.id < @id))")
            params += [{"name": "@at", "value": at}, {"name": "@id", "value": item_id}]
            cursor_day = at[:10]
        docs: list[dict[str, Any]] = []
        async with self._guard(op):
            # Newest day first: one partition after another holds the records in time order.
            for day in _audit_days(query, cursor_day):
                where, args = list(conditions), list(params)
                if day is not None:
                    where.append("c.day = @day")
                    args.append({"name": "@day", "value": day})
                sql = "SELECT * FROM c"
                if where:
                    sql += " WHERE " + " AND ".join(where)
                sql += " ORDER BY c.at DESC, c.id DESC"
                async for doc in self._query(
                    self._container("audit"), op, sql, args, day, page_size=limit + 1
                ):
                    docs.append(doc)
                    if len(docs) > limit:
                        break
                if len(docs) > limit:
                    break
        # A record that cannot be read is skipped (and logged by its id), so a page may hold
        # fewer than `limit`. The cursor is the last item read, readable or not: the next page
        # starts right after it, repeating and losing nothing.
        found = (readable_audit_record(_clean(doc), str(doc["id"])) for doc in docs[:limit])
        records = [record for record in found if record is not None]
        token = None
        if len(docs) > limit:
            last = docs[limit - 1]
            token = encode_cursor(str(last["at"]), str(last["id"]))
        return records, token

    def audit_records_about(
        self, targets: Sequence[str], page_size: int
    ) -> AsyncGenerator[list[AuditRecord], None]:
        records = self._audit_records_about(list(dict.fromkeys(targets)), page_size)
        return in_pages(records, page_size)

    async def _audit_records_about(
        self, targets: list[str], page_size: int
    ) -> AsyncGenerator[AuditRecord, None]:
        """One query across the `/day` partitions (a data export's, not the hot path), in the
        audit page's order (its composite index); the SDK fetches a page at a time."""
        op = "export_user"
        if not targets:
            return
        conditions, params = _audit_conditions(AuditQuery(targets=targets))
        async with self._guard(op):
            async for doc in self._query(
                self._container("audit"),
                op,
                f"SELECT * FROM c WHERE {' AND '.join(conditions)}"  # noqa: S608
                " ORDER BY c.at DESC, c.id DESC",
                params,
                page_size=page_size,
            ):
                record = readable_audit_record(_clean(doc), str(doc["id"]))
                if record is not None:
                    yield record

    # --- bot state

    async def read_state(self, keys: list[str]) -> dict[str, tuple[dict[str, Any], str]]:
        op = "read_state"
        container = self._container("botstate")

        async def read(key: str) -> tuple[str, dict[str, Any]] | None:
            item_id = cosmos_id(key)
            doc = await self._read_or_none(container, item_id, item_id, op)
            return (key, doc) if doc is not None else None

        async with self._guard(op):
            found = await asyncio.gather(*(read(key) for key in dict.fromkeys(keys)))
        return {
            key: (dict(doc.get("document") or {}), str(doc["_etag"]))
            for key, doc in (entry for entry in found if entry is not None)
        }

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
        op = "write_state"
        container = self._container("botstate")
        doc = _with_id({"type": "state", "schemaVersion": 1, "document": document}, key)
        if owner:
            doc["owner"] = owner
        if conversation:
            doc["conversation"] = conversation
        ttl = self._ttl() if expires else None
        if ttl is not None and expires_from is not None:
            # An item's ttl counts from its last write: what is left of the period since then.
            elapsed = (datetime.now(UTC) - as_utc(expires_from)).total_seconds()
            ttl = max(1, min(ttl, int(ttl - elapsed)))
        if ttl is not None:
            doc["ttl"] = ttl  # the container has TTL on (-1): items without one never expire
        async with self._guard(op):
            if create_only:
                try:
                    written = await container.create_item(doc, response_hook=self._hook(op))
                except CosmosHttpResponseError as exc:
                    if _status(exc) != 409:
                        raise
                    # Another instance's first write of this document came first.
                    self._record(op, exc.headers)
                    raise ETagMismatch(f"state key {key!r} was created meanwhile") from None
            elif etag in (None, "*"):
                written = await container.upsert_item(doc, response_hook=self._hook(op))
            else:
                try:
                    written = await container.replace_item(
                        doc["id"],
                        doc,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                        response_hook=self._hook(op),
                    )
                except CosmosHttpResponseError as exc:
                    if await _race_status(exc) not in (404, 412):
                        raise
                    self._record(op, exc.headers)
                    raise ETagMismatch(f"ETag mismatch for state key {key!r}") from None
        return str(written["_etag"])

    async def delete_state(self, keys: list[str]) -> None:
        op = "delete_state"
        container = self._container("botstate")

        async def delete(key: str) -> None:
            item_id = cosmos_id(key)
            try:
                await container.delete_item(item_id, item_id, response_hook=self._hook(op))
            except CosmosHttpResponseError as exc:
                if _status(exc) != 404:
                    raise
                self._record(op, exc.headers)

        async with self._guard(op):
            await asyncio.gather(*(delete(key) for key in dict.fromkeys(keys)))

    # --- user data lifecycle (admin: export and erasure)

    async def _user_conversations(self, user_id: str, op: str) -> list[dict[str, Any]]:
        return [
            doc
            async for doc in self._query(
                self._container("conversations"),
                op,
                "SELECT * FROM c WHERE c.userId = @uid",
                [{"name": "@uid", "value": user_id}],
                partition_key=user_id,
            )
        ]

    async def _user_messages(
        self, user_id: str, conversation_ids: list[str], op: str
    ) -> list[dict[str, Any]]:
        """Messages of the user's conversations (one partition each) plus the user's messages
        anywhere else (group chats owned by someone else; one cross-partition query)."""
        container = self._container("messages")
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for conversation_id in conversation_ids:
            async for doc in self._query(
                container,
                op,
                "SELECT * FROM c WHERE c.conversationId = @cid",
                [{"name": "@cid", "value": conversation_id}],
                partition_key=conversation_id,
            ):
                seen[(_message_conversation(doc), doc["id"])] = doc
        # By the document's userId field, which may be readable when the rest is not.
        async for doc in self._query(
            container,
            op,
            "SELECT * FROM c WHERE c.userId = @uid",
            [{"name": "@uid", "value": user_id}],
        ):
            seen.setdefault((_message_conversation(doc), doc["id"]), doc)
        return sorted(seen.values(), key=_message_order)

    async def _unattributed_messages(self, conversation_ids: Iterable[str], op: str) -> list[str]:
        """The messages of these conversations (shared ones a user being erased wrote in) that
        cannot be read and whose owner (userId: missing, empty or not a string) cannot be read
        either, by their conversation; each is logged. They are left where they are
        (`storage.summaries.UNATTRIBUTED_UNREADABLE_MESSAGE`). One partition query each."""
        container = self._container("messages")
        found: list[str] = []
        for conversation_id in conversation_ids:
            async for doc in self._query(
                container,
                op,
                "SELECT * FROM c WHERE c.conversationId = @cid"
                ' AND (NOT IS_STRING(c.userId) OR c.userId = "")',
                [{"name": "@cid", "value": conversation_id}],
                partition_key=conversation_id,
            ):
                message = readable_message(
                    _clean(doc), conversation_id, UNATTRIBUTED_UNREADABLE_MESSAGE
                )
                if message is None:
                    found.append(conversation_id)
        return found

    async def _user_states(
        self, user_id: str, op: str, page_size: int | None = None
    ) -> list[dict[str, Any]]:
        """The state documents the user owns (one cross-partition query: keyed by id)."""
        found = [
            doc
            async for doc in self._query(
                self._container("botstate"),
                op,
                "SELECT * FROM c WHERE c.owner = @uid",
                [{"name": "@uid", "value": user_id}],
                page_size=page_size,
            )
        ]
        return sorted(found, key=lambda doc: str(doc["id"]))

    def user_documents(
        self, user_id: str, kind: UserDataKind, page_size: int
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        if kind == "conversations":
            documents = self._exported_summaries(user_id, page_size)
        elif kind == "messages":
            documents = self._exported_messages(user_id, page_size)
        elif kind == "feedback":
            documents = self._exported_feedback(user_id, page_size)
        else:
            documents = self._exported_states(user_id, page_size)
        return in_pages(documents, page_size)

    async def _exported_summaries(
        self, user_id: str, page_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Newest activity first, sorted by the service (one partition; the SDK fetches a page at
        a time). A summary that cannot be read is left out (and logged); its messages are
        exported. Stored times are fixed-width strings (`_stamp`), so their order is time order;
        a hand-edited time that is not a string, or none, sorts after them (Cosmos DB orders by
        type, a missing value lowest)."""
        op = "export_user"
        async with self._guard(op):
            async for doc in self._query(
                self._container("conversations"),
                op,
                # Ties in time by id, newest first, as SQLite (the admin list's composite index).
                "SELECT * FROM c WHERE c.userId = @uid ORDER BY c.lastActivityAt DESC, c.id DESC",
                [{"name": "@uid", "value": user_id}],
                partition_key=user_id,
                page_size=page_size,
            ):
                summary = readable_summary(_clean(doc), _conversation_of(doc), EXPORTED_UNREADABLE)
                if summary is not None:
                    yield summary.to_doc()

    async def _exported_messages(
        self, user_id: str, page_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """What `delete_user` deletes: every message of the user's conversations, and the user's
        messages in conversations someone else owns; by conversation, then seq. Only the
        conversations' ids are held: each conversation is then read in seq order, one partition
        and one page at a time. A message whose seq is not a number (a hand edit; "3" can still be
        read) comes last in its conversation, as `_message_order` puts it, wherever Cosmos DB's
        order by type puts it; only such messages are held to the end of their conversation. A
        message that cannot be read is left out (and logged), as on SQLite."""
        op = "export_user"
        messages = self._container("messages")
        async with self._guard(op):
            owned = await self._owned_conversations(user_id, op)
            # By the document's userId field, which may be readable when the rest is not.
            written = await self._conversations_where("c.userId", user_id, op)
            for conversation_id in sorted(owned | written):
                query = "SELECT * FROM c WHERE c.conversationId = @cid"
                parameters = [{"name": "@cid", "value": conversation_id}]
                if conversation_id not in owned:  # only the user's own messages in it
                    query += " AND c.userId = @uid"
                    parameters.append({"name": "@uid", "value": user_id})
                unordered: list[dict[str, Any]] = []
                async for doc in self._query(
                    messages,
                    op,
                    query + " ORDER BY c.seq ASC",
                    parameters,
                    partition_key=conversation_id,
                    page_size=page_size,
                ):
                    if _seq_of(doc) is None:
                        unordered.append(doc)  # held for the end of its conversation
                        continue
                    message = readable_message(
                        _clean(doc), conversation_id, EXPORTED_UNREADABLE_MESSAGE
                    )
                    if message is not None:
                        # Without feedback someone else gave on it: that is theirs.
                        yield exported_message(message.to_doc(), user_id)
                for doc in unordered:
                    message = readable_message(
                        _clean(doc), conversation_id, EXPORTED_UNREADABLE_MESSAGE
                    )
                    if message is not None:
                        yield exported_message(message.to_doc(), user_id)

    async def _owned_conversations(self, user_id: str, op: str) -> set[str]:
        """The ids of the conversations whose summaries the user owns (one partition)."""
        return {
            _conversation_of(doc)
            async for doc in self._query(
                self._container("conversations"),
                op,
                "SELECT c.id, c.rawId FROM c WHERE c.userId = @uid",
                [{"name": "@uid", "value": user_id}],
                partition_key=user_id,
            )
        }

    async def _conversations_where(self, field: str, user_id: str, op: str) -> set[str]:
        """The conversations holding a message whose `field` is `user_id` (one cross-partition
        query on the messages container)."""
        return set(await self._messages_where(field, user_id, op))

    async def _messages_where(self, field: str, user_id: str, op: str) -> Counter[str]:
        """How many messages whose `field` is `user_id` each conversation holds (one
        cross-partition query on the messages container, its id alone read of each message;
        the SDK follows the continuation tokens)."""
        found: Counter[str] = Counter()
        async for conversation_id in self._query(
            self._container("messages"),
            op,
            f"SELECT VALUE c.conversationId FROM c WHERE {field} = @uid",  # noqa: S608
            [{"name": "@uid", "value": user_id}],
        ):
            found[str(conversation_id)] += 1
        return found

    async def _exported_feedback(
        self, user_id: str, page_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The feedback the user gave on messages `_exported_messages` does not export (another
        person's, in a conversation the user does not own); by conversation, then seq. One
        cross-partition query finds the conversations (as for the user's messages), then each is
        read in one partition. Without the message: that is the other person's."""
        op = "export_user"
        messages = self._container("messages")
        async with self._guard(op):
            owned = await self._owned_conversations(user_id, op)
            rated = await self._conversations_where("c.feedback.userId", user_id, op)
            for conversation_id in sorted(rated - owned):
                async for doc in self._query(
                    messages,
                    op,
                    "SELECT * FROM c WHERE c.conversationId = @cid AND c.feedback.userId = @uid"
                    " AND c.userId != @uid ORDER BY c.seq ASC",
                    [
                        {"name": "@cid", "value": conversation_id},
                        {"name": "@uid", "value": user_id},
                    ],
                    partition_key=conversation_id,
                    page_size=page_size,
                ):
                    document = _clean(doc)
                    if readable_message(document, conversation_id, EXPORTED_UNREADABLE_MESSAGE):
                        yield given_feedback(document)

    async def _exported_states(
        self, user_id: str, page_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The state documents the user owns, by key as SQLite (one cross-partition query: the
        container is keyed by id). The stored id of an unsafe key sorts elsewhere, so they are
        sorted here: a person owns a few (their dialog state, a waiting message, markers)."""
        op = "export_user"
        async with self._guard(op):
            found = await self._user_states(user_id, op, page_size)
        for doc in sorted(found, key=lambda doc: str(doc.get("rawId") or doc["id"])):
            yield dict(doc.get("document") or {})

    async def count_user_conversations(self, user_id: str) -> ConversationCount:
        op = "count_user_conversations"
        async with self._guard(op):
            # The items `delete_user` deletes, read as it reads them (one partition).
            summaries = await self._user_conversations(user_id, op)
            # Their messages in conversations someone else owns, found by the messages' userId
            # as `delete_user` finds them.
            written = await self._messages_where("c.userId", user_id, op)
        unreadable = sum(
            1
            for doc in summaries
            if readable_summary(_clean(doc), _conversation_of(doc), COUNTED_UNREADABLE) is None
        )
        owned = {_conversation_of(doc) for doc in summaries}
        shared = {cid: count for cid, count in written.items() if cid not in owned}
        return ConversationCount(
            total=len(summaries),
            unreadable=unreadable,
            shared_messages=sum(shared.values()),
            shared_conversations=len(shared),
        )

    async def _shared_summary(
        self, conversation_id: str, user_id: str | None, op: str
    ) -> dict[str, Any] | None:
        """The stored summary of a conversation owned by someone other than `user_id` (a shared
        one; None: whoever owns it), found across the /userId partitions."""
        query, params = (
            "SELECT * FROM c WHERE c.conversationId = @cid",
            [{"name": "@cid", "value": conversation_id}],
        )
        if user_id is not None:
            query += " AND c.userId != @uid"
            params.append({"name": "@uid", "value": user_id})
        async for doc in self._query(self._container("conversations"), op, query, params):
            return doc
        return None

    async def _rewrite_shared_summary(
        self,
        conversation_id: str,
        user_id: str | None,
        op: str,
        decide: Callable[[dict[str, Any]], Awaitable[_SummaryRewrite]],
        doing: str,
    ) -> str | None:
        """Rewrites the summary of a conversation owned by someone other than `user_id` (a
        shared one) as `decide` says for the stored document: delete it, replace it with a new
        document, or leave it (None). The write is conditional on the ETag read: a summary
        changed meanwhile (a turn wrote, or healed it) is read again and decided again. What was
        done ("delete", "replace"), or None."""
        container = self._container("conversations")
        # Found across partitions once; a lost race re-reads it with a point read.
        current = await self._shared_summary(conversation_id, user_id, op)
        for _ in range(_MAX_RACES):
            if current is None:
                return None
            rewrite = await decide(current)
            if rewrite is None:
                return None
            try:
                if rewrite == "delete":
                    await container.delete_item(
                        current["id"],
                        current["userId"],
                        etag=current["_etag"],
                        match_condition=MatchConditions.IfNotModified,
                        response_hook=self._hook(op),
                    )
                    return "delete"
                await container.replace_item(
                    current["id"],
                    rewrite,
                    etag=current["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                    response_hook=self._hook(op),
                )
                return "replace"
            except CosmosHttpResponseError as exc:
                if await _race_status(exc) not in (404, 412):
                    raise
                self._record(op, exc.headers)
            current = await self._read_or_none(container, current["id"], current["userId"], op)
        raise ETagMismatch(f"{doing} lost {_MAX_RACES} races in a row")

    async def _lower_shared_summaries(self, user_id: str, gone: dict[str, Erased], op: str) -> None:
        """After a user's erasure deleted `gone` from conversations whose summaries are someone
        else's (shared ones): each summary without them, or deleted when no message of its
        conversation is left (its transcript is empty; a later turn starts a new one)
        (`_lower_summary`). Runs after the deletes: a retry after a failure before it finds
        none of the user's messages there, so the counts stay too high rather than being
        lowered twice."""
        for conversation_id in sorted(gone):
            await self._lower_summary(
                conversation_id,
                user_id,
                op,
                functools.partial(without_erased, gone=gone[conversation_id]),
                "lowering a summary",
            )

    async def _lower_summary(
        self,
        conversation_id: str,
        not_owned_by: str | None,
        op: str,
        lower: Callable[[ConversationSummary], ConversationSummary | None],
        doing: str,
    ) -> str | None:
        """After an erasure deleted messages of a conversation: its summary (owned by someone
        other than `not_owned_by`, when given) is deleted when no message of the conversation
        is left, or else replaced by what `lower` makes of it (None: left as it is, as is one
        that cannot be read). A lost race reads the summary and the messages again
        (`_rewrite_shared_summary`), as SQLite does it in one transaction: a turn that wrote
        meanwhile is kept, and one that adds a message after the summary went starts a new
        summary. What was done ("delete", "replace"), or None."""
        messages = self._container("messages")

        async def decide(current: dict[str, Any]) -> _SummaryRewrite:
            left = [
                doc
                async for doc in self._query(
                    messages,
                    op,
                    "SELECT TOP 1 c.id FROM c WHERE c.conversationId = @cid",
                    [{"name": "@cid", "value": conversation_id}],
                    partition_key=conversation_id,
                    page_size=1,
                )
            ]
            if not left:
                return "delete"
            summary = readable_summary(_clean(current), conversation_id, UNLOWERED_UNREADABLE)
            lowered = None if summary is None else lower(summary)
            return None if lowered is None else self._summary_doc(lowered, _applied_deltas(current))

        return await self._rewrite_shared_summary(conversation_id, not_owned_by, op, decide, doing)

    async def _clear_titles_from(
        self, user_id: str, prompts: dict[str, list[str]], unchecked: set[str], op: str
    ) -> int:
        """Clears the title of each conversation owned by someone else (a shared one) whose title
        is the start of one of the user's prompts there, or where words that may be theirs could
        not be read (`unchecked`; `storage.summaries.title_to_clear`). A summary that cannot be
        read, so cannot be checked, is deleted instead; how many were is returned."""

        async def cleared(current: dict[str, Any], conversation_id: str) -> _SummaryRewrite:
            summary = readable_summary(_clean(current), conversation_id, ERASED_UNREADABLE)
            if summary is None:
                return "delete"
            texts = prompts.get(conversation_id, [])
            if not title_to_clear(summary, texts, conversation_id in unchecked):
                return None
            return self._summary_doc(
                summary.model_copy(update={"title": ""}), _applied_deltas(current)
            )

        deleted = 0
        for conversation_id in sorted(prompts.keys() | unchecked):
            done = await self._rewrite_shared_summary(
                conversation_id,
                user_id,
                op,
                functools.partial(cleared, conversation_id=conversation_id),
                "clearing a title",
            )
            if done == "delete":
                deleted += 1
        return deleted

    async def _clear_feedback_given(self, user_id: str, op: str) -> int:
        """In a user's erasure, after their messages went: the feedback they gave on the
        messages that stay (other people's answers in shared conversations; one cross-partition
        query) is removed from each (a patch on the ETag read, so a rating someone gave
        meanwhile is read again and kept), and each dislike among it taken off its
        conversation's summary, as taking it back would. How many were cleared."""
        return await self._clear_feedback(
            "c.feedback.userId = @value",
            user_id,
            op,
            lambda doc: rater_of(doc) == user_id,
            not_owned_by=user_id,
        )

    async def _clear_feedback(
        self,
        where: str,
        value: str,
        op: str,
        clears: Callable[[dict[str, Any]], bool],
        *,
        partition_key: str | None = None,
        not_owned_by: str | None = None,
    ) -> int:
        """The feedback on the messages that `where` (a condition on `@value`) finds, one query
        (in `partition_key` when given), and whose document `clears` says so of, is removed
        from each (a patch on the ETag read: a rating given meanwhile is read again, and kept
        unless `clears` says so of it too), and each dislike among it taken off its
        conversation's summary (one owned by someone other than `not_owned_by`, when given), as
        taking it back would. How many were cleared."""
        container = self._container("messages")
        # Not the messages' text: it may be other people's, and is not needed here. Their expiry
        # is (`_renewed`).
        fields = "c.id, c.conversationId, c.feedback, c._etag, c.ttl, c.retention"
        query = f"SELECT {fields} FROM c WHERE {where}"  # noqa: S608 - this module's `where`
        found = [
            doc
            async for doc in self._query(
                container,
                op,
                query,
                [{"name": "@value", "value": value}],
                partition_key=partition_key,
            )
        ]
        cleared = 0
        dislikes: dict[str, int] = {}
        for doc in found:
            conversation_id = _message_conversation(doc)
            current: dict[str, Any] | None = doc
            for _ in range(_MAX_RACES):
                if current is None or not clears(current):
                    break  # gone, or rated again meanwhile (by someone else, or afresh)
                try:
                    await container.patch_item(
                        current["id"],
                        conversation_id,
                        [
                            {"op": "remove", "path": "/feedback"},
                            *self._renewed("messages", current),
                        ],
                        etag=current["_etag"],
                        match_condition=MatchConditions.IfNotModified,
                        response_hook=self._hook(op),
                    )
                except CosmosHttpResponseError as exc:
                    if await _race_status(exc) not in (404, 412):
                        raise
                    self._record(op, exc.headers)
                    current = await self._read_or_none(
                        container, current["id"], conversation_id, op
                    )
                    continue
                cleared += 1
                if current["feedback"].get("reaction") == "dislike":
                    dislikes[conversation_id] = dislikes.get(conversation_id, 0) + 1
                break
            else:
                raise ETagMismatch(f"clearing feedback lost {_MAX_RACES} races in a row")

        async def lowered(current: dict[str, Any], conversation_id: str) -> _SummaryRewrite:
            summary = readable_summary(_clean(current), conversation_id, UNLOWERED_UNREADABLE)
            if summary is None:
                return None
            gone = Erased(dislikes=dislikes[conversation_id])
            return self._summary_doc(without_erased(summary, gone), _applied_deltas(current))

        for conversation_id in sorted(dislikes):
            await self._rewrite_shared_summary(
                conversation_id,
                not_owned_by,
                op,
                functools.partial(lowered, conversation_id=conversation_id),
                "taking dislikes off a summary",
            )
        return cleared

    def _deleter(self, op: str) -> Callable[[ContainerProxy, str, str], Awaitable[int]]:
        """A point delete for an erasure: 1 when it deleted the item, 0 when it was gone
        already (404, another attempt's); at most `_DELETE_CONCURRENCY` at once."""
        gate = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def delete(container: ContainerProxy, item_id: str, partition: str) -> int:
            async with gate:
                try:
                    await container.delete_item(item_id, partition, response_hook=self._hook(op))
                except CosmosHttpResponseError as exc:
                    if _status(exc) != 404:
                        raise
                    self._record(op, exc.headers)
                    return 0
                return 1

        return delete

    async def delete_user(self, user_id: str) -> dict[str, int]:
        """Messages first, summaries last: if this fails halfway, the summaries are still there
        to find the rest on the next attempt."""
        op = "delete_user"
        delete = self._deleter(op)
        self._shared_found.clear()

        async with self._guard(op):
            state_container = self._container("botstate")
            deleted_states = await asyncio.gather(
                *(
                    delete(state_container, d["id"], d["id"])
                    for d in await self._user_states(user_id, op)
                )
            )
            summaries = await self._user_conversations(user_id, op)
            owned_ids = [_conversation_of(doc) for doc in summaries]
            messages = await self._user_messages(user_id, owned_ids, op)
            # Before the messages go: they are how a retry finds these conversations again.
            # In shared ones (owned by someone else) only the user's messages were found, by
            # their userId; one that cannot be read is still theirs and is deleted with the
            # rest, but its words cannot be checked against the title, so that is cleared.
            owned = set(owned_ids)
            shared: set[str] = set()
            unchecked: set[str] = set()
            written: list[Message] = []
            # The user's messages in shared conversations as read (None: unreadable), by their
            # place in `messages`: their summaries count them no longer once they are deleted.
            theirs: dict[int, Message | None] = {}
            for index, doc in enumerate(messages):
                conversation_id = _message_conversation(doc)
                if doc.get("userId") != user_id or conversation_id in owned:
                    continue
                shared.add(conversation_id)
                message = readable_message(_clean(doc), conversation_id, ERASED_UNREADABLE_MESSAGE)
                theirs[index] = message
                if message is None:
                    unchecked.add(conversation_id)
                else:
                    written.append(message)
            unchecked |= answers_without_prompt(written)
            # Messages there whose owner cannot be read either may be someone else's: left,
            # and counted for review.
            unattributed = await self._unattributed_messages(sorted(shared), op)
            unchecked.update(unattributed)
            unreadable = await self._clear_titles_from(
                user_id, prompts_by_conversation(written), unchecked, op
            )
            message_container = self._container("messages")
            deleted_messages = await asyncio.gather(
                *(delete(message_container, d["id"], d["conversationId"]) for d in messages)
            )
            # Only what this attempt deleted: a message already gone (404) was deleted by
            # another attempt, which lowered the counts for it or failed before it could.
            in_shared: dict[str, list[Message | None]] = {}
            for index, message in theirs.items():
                if deleted_messages[index]:
                    conversation_id = _message_conversation(messages[index])
                    in_shared.setdefault(conversation_id, []).append(message)
            await self._lower_shared_summaries(
                user_id, {cid: erased(found) for cid, found in in_shared.items()}, op
            )
            feedback = await self._clear_feedback_given(user_id, op)
            summary_container = self._container("conversations")
            deleted_summaries = await asyncio.gather(
                *(delete(summary_container, d["id"], user_id) for d in summaries)
            )
        counts = {
            "conversations": sum(deleted_summaries),
            "messages": sum(deleted_messages),
            "states": sum(deleted_states),
        }
        if unreadable:
            counts[UNREADABLE_SHARED_SUMMARIES] = unreadable
        if unattributed:
            counts[UNATTRIBUTED_SHARED_MESSAGES] = len(unattributed)
        if feedback:
            counts[FEEDBACK_CLEARED] = feedback
        return counts

    async def delete_late_writes_of_user(self, user_id: str, before: datetime) -> dict[str, int]:
        """The same reads as `delete_user`: the summaries the user owns (one partition), every
        message of those conversations and the user's messages anywhere else (one
        cross-partition query), the state documents they own, and the messages that hold
        feedback they gave (one cross-partition query)."""
        op = "delete_late_writes_of_user"
        delete = self._deleter(op)
        async with self._guard(op):
            states = await self._delete_late_states(
                await self._user_states(user_id, op), before, delete
            )
            owned = {_conversation_of(doc) for doc in await self._user_conversations(user_id, op)}
            found: dict[str, list[dict[str, Any]]] = {}
            for doc in await self._user_messages(user_id, sorted(owned), op):
                conversation_id = _message_conversation(doc)
                # In someone else's (shared) conversation, only the user's messages are theirs.
                if conversation_id in owned or doc.get("userId") == user_id:
                    found.setdefault(conversation_id, []).append(doc)
            messages = conversations = 0
            for conversation_id in sorted(owned | found.keys()):
                deleted, summary = await self._delete_late_in(
                    conversation_id, found.get(conversation_id, []), before, op, delete
                )
                messages += deleted
                if summary == "delete" and conversation_id in owned:
                    conversations += 1
            # What they rated before the first pass, stored after it on messages that stay.
            feedback = await self._clear_feedback(
                "c.feedback.userId = @value",
                user_id,
                op,
                lambda doc: (
                    rater_of(doc) == user_id and feedback_from_before(doc.get("feedback"), before)
                ),
            )
        counts = {"conversations": conversations, "messages": messages, "states": states}
        if feedback:
            counts[FEEDBACK_CLEARED] = feedback
        return counts

    async def delete_late_writes_of_conversation(
        self, conversation_id: str, before: datetime
    ) -> dict[str, int]:
        """Its messages (one partition), its state documents (by their `conversation`, across
        partitions) and its summary (across the /userId partitions)."""
        op = "delete_late_writes_of_conversation"
        delete = self._deleter(op)
        async with self._guard(op):
            documents = [
                doc
                async for doc in self._query(
                    self._container("messages"),
                    op,
                    "SELECT * FROM c WHERE c.conversationId = @cid",
                    [{"name": "@cid", "value": conversation_id}],
                    partition_key=conversation_id,
                )
            ]
            messages, summary = await self._delete_late_in(
                conversation_id, documents, before, op, delete
            )
            found_states = [
                doc
                async for doc in self._query(
                    self._container("botstate"),
                    op,
                    "SELECT * FROM c WHERE c.conversation = @cid",
                    [{"name": "@cid", "value": conversation_id}],
                )
            ]
            states = await self._delete_late_states(found_states, before, delete)
            # Ratings from before the first pass, stored after it on its messages that stay.
            feedback = await self._clear_feedback(
                "c.conversationId = @value AND IS_DEFINED(c.feedback)",
                conversation_id,
                op,
                lambda doc: feedback_from_before(doc.get("feedback"), before),
                partition_key=conversation_id,
            )
        counts = {
            "conversations": int(summary == "delete"),
            "messages": messages,
            "states": states,
        }
        if feedback:
            counts[FEEDBACK_CLEARED] = feedback
        return counts

    async def _delete_late_in(
        self,
        conversation_id: str,
        documents: list[dict[str, Any]],
        before: datetime,
        op: str,
        delete: Callable[[ContainerProxy, str, str], Awaitable[int]],
    ) -> tuple[int, str | None]:
        """An erasure's second pass in one conversation (`storage.late`): of `documents` (its
        messages that are the erased user's or conversation's, which hold the prompts of their
        answers), those from turns that began before `before` are deleted; then its summary is
        deleted when no message of it is left, or else lowered by what this call deleted (a
        lost race decides again, as `_rewrite_shared_summary` does). How many messages were
        deleted, and what was done to the summary."""
        read = [
            (doc, readable_message(_clean(doc), conversation_id, LATE_UNREADABLE_MESSAGE))
            for doc in documents
        ]
        prompts = {m.id: m for _, m in read if m is not None}
        late = [(doc, m) for doc, m in read if stems_from_before(m, prompts, before)]
        container = self._container("messages")
        deleted = await asyncio.gather(
            *(delete(container, doc["id"], doc["conversationId"]) for doc, _ in late)
        )
        gone = [m for (_, m), done in zip(late, deleted, strict=True) if done]
        done = await self._lower_summary(
            conversation_id,
            None,
            op,
            lambda summary: summary_after(summary, gone, prompts),
            "an erasure's second pass",
        )
        return sum(deleted), done

    async def _delete_late_states(
        self,
        documents: list[dict[str, Any]],
        before: datetime,
        delete: Callable[[ContainerProxy, str, str], Awaitable[int]],
    ) -> int:
        """An erasure's second pass: the state documents among these that hold what a turn from
        before `before` stored (`storage.late.state_from_before`)."""
        container = self._container("botstate")
        late = [
            doc["id"]
            for doc in documents
            if isinstance(doc.get("document"), dict) and state_from_before(doc["document"], before)
        ]
        return sum(await asyncio.gather(*(delete(container, key, key) for key in late)))

    async def delete_conversation(self, conversation_id: str) -> dict[str, int]:
        """Its messages first (one partition), then its state documents, the summary last: if
        this fails part-way, the summary is still there to find the conversation again. The
        summary is found across the /userId partitions by its id, which is written whatever
        else of it may be unreadable; the state documents by their `conversation`, or (written
        by an earlier release without one) by their key (cross-partition queries: the container
        is keyed by id). Deletes run `_DELETE_CONCURRENCY` at a time; one already gone (404)
        counts 0."""
        op = "delete_conversation"
        delete = self._deleter(op)

        async def ids(container: str, query: str, value: str, partition: str | None) -> list[str]:
            return [
                str(item_id)
                async for item_id in self._query(
                    self._container(container),
                    op,
                    query,
                    [{"name": "@value", "value": value}],
                    partition_key=partition,
                )
            ]

        async with self._guard(op):
            messages = self._container("messages")
            found = await ids(
                "messages",
                "SELECT VALUE c.id FROM c WHERE c.conversationId = @value",
                conversation_id,
                conversation_id,
            )
            deleted_messages = await asyncio.gather(
                *(delete(messages, item_id, conversation_id) for item_id in found)
            )
            states = set(
                await ids(
                    "botstate",
                    "SELECT VALUE c.id FROM c WHERE c.conversation = @value",
                    conversation_id,
                    None,
                )
            )
            prefix = conversation_state_prefix(conversation_id)
            if prefix is not None:
                earlier = await ids(
                    "botstate",
                    "SELECT VALUE c.id FROM c WHERE STARTSWITH(c.id, @value)"
                    " AND NOT IS_DEFINED(c.conversation)",
                    prefix,
                    None,
                )
                states.update(key for key in earlier if names_conversation(key, conversation_id))
            state_container = self._container("botstate")
            deleted_states = await asyncio.gather(
                *(delete(state_container, item_id, item_id) for item_id in sorted(states))
            )
            summaries = [
                doc
                async for doc in self._query(
                    self._container("conversations"),
                    op,
                    "SELECT c.id, c.userId FROM c WHERE c.id = @id",
                    [{"name": "@id", "value": cosmos_id(conversation_id)}],
                )
            ]
            summary_container = self._container("conversations")
            deleted_summaries = await asyncio.gather(
                *(delete(summary_container, doc["id"], doc["userId"]) for doc in summaries)
            )
        return {
            "conversations": sum(deleted_summaries),
            "messages": sum(deleted_messages),
            "states": sum(deleted_states),
        }


if TYPE_CHECKING:
    # mypy proves the class satisfies every store interface.
    _IS_A_STORE: type[Store] = CosmosStore
