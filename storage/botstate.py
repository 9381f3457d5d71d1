"""botbuilder's `Storage` interface over our `StateStore`, for dialog, user and conversation state.

One of the three places (with `bot/` and `dialogs/`) allowed to import botbuilder.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from botbuilder.core import Storage, StoreItem

from storage.base import StateStore
from storage.ids import safe_id

log = logging.getLogger(__name__)
_ETAG = "e_tag"
# The state property that names the user whose data a document holds (the `userId` of their
# messages): such a document is exported and deleted with that user (storage.base.StateStore).
OWNER_PROPERTY = "owner"
# The state property that names the conversation whose state a document is (a dialog stack): it
# is deleted with that conversation (storage.base.UserDataStore.delete_conversation).
CONVERSATION_PROPERTY = "conversation"
# The state property that holds when (ISO 8601) the retention of an expiring document counts from,
# when not from its last write: a message waiting for consent expires counted from when it was
# asked, not from the latest message that found the question still open
# (storage.base.StateStore.write_state's `expires_from`).
EXPIRES_FROM_PROPERTY = "expires_from"
# The state property that holds when (ISO 8601) the message arrived whose turn last changed the
# document (`dialogs.state.DialogStates.save_changes`): an erasure's second pass deletes what
# turns of messages that arrived before its first pass stored after it (storage.late), such as a
# consent acceptance, and keeps what the user did after it.
TURN_ARRIVED_PROPERTY = "turn_arrived"
# The `e_tag` of a document its caller read as absent: written, it is created only if still
# absent, and one stored meanwhile (another instance's or worker's first write) fails the write
# as a stale ETag does (ETagMismatch). botbuilder itself never writes it: its documents read as
# absent have no `e_tag`, and without one (or with "*") a write overwrites, as its contract says.
ABSENT_ETAG = "absent"


class BotStateStorage(Storage):  # type: ignore[misc]
    """With `expires`, every document written expires with the retention period, as messages
    do: for state that can hold a user's words."""

    def __init__(self, store: StateStore, *, expires: bool = False) -> None:
        super().__init__()
        self._store = store
        self._expires = expires

    async def read(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            raise ValueError("keys are required")
        found = await self._store.read_state([safe_id(key) for key in keys])
        result: dict[str, Any] = {}
        for key in keys:
            entry = found.get(safe_id(key))
            if entry is None:
                continue
            document, etag = entry
            document = dict(document)
            document[_ETAG] = etag
            result[key] = document
        return result

    async def write(self, changes: dict[str, Any]) -> None:
        if changes is None:
            raise ValueError("changes are required")
        for key, change in changes.items():
            if isinstance(change, StoreItem):
                document = {k: v for k, v in vars(change).items() if k != _ETAG}
                etag = getattr(change, _ETAG, None)
            else:
                document = {k: v for k, v in dict(change).items() if k != _ETAG}
                etag = change.get(_ETAG) if isinstance(change, dict) else None
            owner = document.get(OWNER_PROPERTY)
            conversation = document.get(CONVERSATION_PROPERTY)
            expires_from = _time_or_none(document.get(EXPIRES_FROM_PROPERTY))
            create_only = etag == ABSENT_ETAG
            await self._store.write_state(
                safe_id(key),
                document,
                None if create_only else etag or None,
                owner=owner if isinstance(owner, str) and owner else None,
                conversation=(
                    conversation if isinstance(conversation, str) and conversation else None
                ),
                expires=self._expires,
                expires_from=expires_from,
                create_only=create_only,
            )

    async def delete(self, keys: list[str]) -> None:
        await self._store.delete_state([safe_id(key) for key in keys])


def _time_or_none(value: Any) -> datetime | None:
    """A stamp `datetime.isoformat` wrote; None for anything else (then the write counts)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# --- owners of state stored before owners were recorded
#
# Releases before owners were recorded wrote the same documents without one, so deleting or
# exporting a user missed them. Such a document holds no id of its user (the consent record is
# a version and a time; a waiting message its text), so its owner can only come from its key
# and what else is stored. The stores ask `legacy_owners` when they open, for the documents
# without an owner; one it cannot attribute gains its owner at its user's next message
# (dialogs.state.DialogStates.save_changes).

# `safe_id` of a key that had to be made safe: a readable part (every character outside its
# set made "_", cut at 80 characters) and a hash of the whole key. botbuilder's keys always
# contain "/", so they are always made safe.
_MADE_SAFE = re.compile(r"(?P<readable>.*)~[0-9a-f]{40}")
# The channels whose clients (browsers) write `from` themselves: there the owner the turn
# stamps is `from.id` (bot.handler.user_key, identity_is_vouched), which the key holds.
# Through the built-in Direct Line it is the Entra object id, and `from.id` its `dl_` form,
# under which the admin page deletes and exports that user too (admin.queries.stored_ids_of).
_FROM_ID_IS_OWNER = frozenset({"directline", "webchat"})
# Channel ids as botbuilder's channels name them ("msteams", "directline", ...).
_CHANNEL = re.compile(r"[A-Za-z0-9.\-]+")
# More stored conversations than this starting the same way: whose the key is cannot be told.
OWNER_CANDIDATES = 20
# Conversations looked up at once (a start-up after an upgrade may have thousands).
_LOOKUPS_AT_ONCE = 16
# The state key whose document says the owners were searched for, with the counts: later opens
# skip the search (what a user writes from then on is stamped by the turn). Safe as it is, so no
# botbuilder key (always made safe, with "~") can be it.
LEGACY_OWNERS_SEARCHED = "owners-of-earlier-state-searched"


@dataclass(frozen=True)
class LegacyStateKey:
    """What a key botbuilder wrote says of whose state it is: user state is under
    `{channel}/users/{from.id}`, a dialog stack under
    `{channel}/conversations/{conversation id}/users/{from.id}/`. `conversation` and `user` are
    set when the key's hash confirms them; otherwise `readable` (cut at 80 characters) is all
    there is to compare with the conversations stored."""

    key: str
    readable: str
    channel: str
    in_conversation: bool
    conversation: str | None = None
    user: str | None = None

    def lookup(self) -> tuple[str | None, str]:
        """What identifies this dialog stack's conversation in the store: its id when the key
        confirms it, and how the id starts (`conversation_start`)."""
        exact = safe_id(f"{self.channel}:{self.conversation}") if self.conversation else None
        return exact, self.conversation_start()

    def conversation_start(self) -> str:
        """How the store's id of the conversation starts (the `safe_id` of
        `{channel}:{conversation id}`, bot.handler.conversation_key), as far as the key tells: up
        to its user part, or where it is cut."""
        rest = self.readable[len(self.channel) + len("_conversations_") :]
        end = rest.find("_users_")
        return f"{self.channel}:{rest if end < 0 else rest[:end]}"

    def may_be_in(self, conversation_id: str) -> bool:
        """Whether this dialog stack's key fits a stored conversation id."""
        if self.conversation is not None:
            return conversation_id == safe_id(f"{self.channel}:{self.conversation}")
        prefix = f"{self.channel}:"
        if not conversation_id.startswith(prefix) or conversation_id != safe_id(conversation_id):
            return False  # another channel, or an id made safe, whose conversation is not known
        conversation = conversation_id[len(prefix) :]
        written = _readable(f"{self.channel}/conversations/{conversation}/users/")
        return self.readable.startswith(written)

    def of_account(self, accounts: Sequence[str]) -> LegacyStateKey:
        """This dialog stack's key with its conversation and `from.id` confirmed, when the key,
        cut within its `from.id`, begins one of `accounts` (sorted) and the hash agrees."""
        if self.user is not None:
            return self
        rest = self.readable[len(self.channel) + len("_conversations_") :]
        for split in _users_parts(rest):
            conversation, start = rest[:split], rest[split + len("_users_") :]
            at = bisect.bisect_left(accounts, start)
            for account in accounts[at : at + OWNER_CANDIDATES] if start else ():
                if not account.startswith(start):
                    break
                raw = f"{self.channel}/conversations/{conversation}/users/{account}/"
                if safe_id(raw) == self.key:
                    return dataclasses.replace(self, conversation=conversation, user=account)
        return self


def _users_parts(rest: str) -> Iterator[int]:
    """Where a user part may start after the conversation id (which the key does not mark)."""
    return (match.start() for match in re.finditer("(?=_users_)", rest))


def _readable(raw: str) -> str:
    match = _MADE_SAFE.fullmatch(safe_id(raw))
    assert match is not None, "a key with '/' is always made safe"
    return match["readable"]


def legacy_state_key(key: str) -> LegacyStateKey | None:
    """The user or dialog state key `key` was made from; None for any other key (a welcome
    marker)."""
    match = _MADE_SAFE.fullmatch(key)
    if match is None:
        return None
    readable = match["readable"]
    users, conversations = readable.find("_users_"), readable.find("_conversations_")
    if conversations > 0 and not 0 <= users < conversations:
        channel = readable[:conversations]
        if not _CHANNEL.fullmatch(channel):
            return None
        rest = readable[conversations + len("_conversations_") :]
        # Where the conversation id ends is not marked: each "_users_" is tried on the hash.
        for split in _users_parts(rest):
            conversation, user = rest[:split], rest[split + len("_users_") :].removesuffix("_")
            if safe_id(f"{channel}/conversations/{conversation}/users/{user}/") == key:
                return LegacyStateKey(key, readable, channel, True, conversation, user)
        return LegacyStateKey(key, readable, channel, True)
    if users > 0 and _CHANNEL.fullmatch(readable[:users]):
        channel, user = readable[:users], readable[users + len("_users_") :]
        confirmed = user if safe_id(f"{channel}/users/{user}") == key else None
        return LegacyStateKey(key, readable, channel, False, user=confirmed)
    return None


def conversation_state_prefix(conversation_id: str) -> str | None:
    """How the key of every dialog stack of a conversation starts, when the key names the
    conversation whole; None when it cannot (the store's id of the conversation was made safe,
    so its channel's id is not known, or the conversation id is too long to fit whole in a key's
    readable part: a Teams one-to-one chat or channel thread). For the documents an earlier
    release wrote without their `conversation` (`names_conversation` decides)."""
    if _MADE_SAFE.fullmatch(conversation_id):
        return None
    channel, colon, conversation = conversation_id.partition(":")
    if not colon or not conversation or not _CHANNEL.fullmatch(channel):
        return None
    written = safe_id(f"{channel}/conversations/{conversation}/users/")
    match = _MADE_SAFE.fullmatch(written)
    assert match is not None, "a key with '/' is always made safe"
    # Cut at 80 characters: a key that long may be another conversation's starting the same way.
    return match["readable"] if len(match["readable"]) < 80 else None


def names_conversation(key: str, conversation_id: str) -> bool:
    """Whether a state key is a dialog stack's in this conversation (keys of user state and
    anything else never are): it starts as `conversation_state_prefix` says, and the key's hash
    does not tie it to another conversation that starts the same way (an id holding `_users_`)."""
    prefix = conversation_state_prefix(conversation_id)
    if prefix is None or not key.startswith(prefix):
        return False
    parsed = legacy_state_key(key)
    if parsed is None or not parsed.in_conversation:
        return False
    return parsed.conversation is None or parsed.lookup()[0] == conversation_id


class OwnerEvidence(Protocol):
    """What a store answers about its conversations to attribute state documents."""

    async def conversation_owners(self, exact: str | None, start: str) -> list[tuple[str, str]]:
        """(conversation id, summary owner) of the stored summaries whose conversation id is
        `exact`, or (None) starts with `start`; at most `OWNER_CANDIDATES` + 1 of them."""
        ...

    async def wrote_alone(self, conversation_id: str, user_id: str) -> bool:
        """Whether the conversation holds a message of `user_id` and none of anyone else."""
        ...


async def legacy_owners(
    documents: Iterable[tuple[str, Mapping[str, Any]]], evidence: OwnerEvidence
) -> tuple[dict[str, str], int]:
    """The owners that can be told of state documents stored without one, by key, and how many
    documents that hold anything were left without. An owner is the id the turn stamps (the
    `userId` of the user's messages):
    - a dialog stack in a conversation that holds messages of one user only, and whose summary
      that user owns (a one-to-one chat; a shared conversation's summary is owned by the
      conversation), is that user's;
    - a document keyed by the same `from.id` in the same channel as such a dialog stack (a
      consent record) is that user's too;
    - in a channel whose clients write `from` (Direct Line, Web Chat) it is `from.id`.
    A key cut within its conversation id fits each stored conversation that begins the same way
    (as far as the key goes: about 58 characters of a Teams chat id, which are random); one that
    fits two, or a conversation no stored message tells the owner of, is left."""
    parsed = [(key, doc) for raw, doc in documents if (key := legacy_state_key(raw)) is not None]
    # The accounts whose user state is stored, even empty (a first message writes it): a dialog
    # key cut within its `from.id` is tried on them.
    accounts: dict[str, list[str]] = {}
    for key, _ in parsed:
        if not key.in_conversation and key.user is not None:
            accounts.setdefault(key.channel, []).append(key.user)
    for ids in accounts.values():
        ids.sort()
    # Only what holds something, as `DialogStates.save_changes` stamps.
    keys = [
        key.of_account(accounts.get(key.channel, ())) if key.in_conversation else key
        for key, document in parsed
        if set(document) - {OWNER_PROPERTY, _ETAG}
    ]
    # One lookup per conversation, whichever of its dialog stacks asks.
    asking = {key.lookup(): key for key in keys if key.in_conversation}
    gate = asyncio.Semaphore(_LOOKUPS_AT_ONCE)

    async def look(key: LegacyStateKey) -> str | None:
        async with gate:
            return await _conversation_owner(key, evidence)

    found = dict(zip(asking, await asyncio.gather(*map(look, asking.values())), strict=True))
    owners = {
        key.key: owner
        for key in keys
        if key.in_conversation and (owner := found[key.lookup()]) is not None
    }
    # Botbuilder keys a user by `from.id`; the owner follows from it and does not change.
    by_account: dict[tuple[str, str], set[str]] = {}
    for key in keys:
        if key.user is not None and key.key in owners:
            by_account.setdefault((key.channel, key.user), set()).add(owners[key.key])
    for key in keys:
        if key.key in owners or key.user is None:
            continue
        known = by_account.get((key.channel, key.user), set())
        if len(known) == 1:
            owners[key.key] = next(iter(known))
        elif not known and key.channel in _FROM_ID_IS_OWNER:
            owners[key.key] = key.user
    return owners, len(keys) - len(owners)


async def _conversation_owner(key: LegacyStateKey, evidence: OwnerEvidence) -> str | None:
    found = await evidence.conversation_owners(*key.lookup())
    if len(found) > OWNER_CANDIDATES:
        return None
    fitting = {(cid, owner) for cid, owner in found if key.may_be_in(cid)}
    if len(fitting) != 1:
        return None
    ((conversation_id, owner),) = fitting
    return owner if owner and await evidence.wrote_alone(conversation_id, owner) else None


def report_legacy_owners(named: int, unattributed: int) -> None:
    """Said once per store open, in counts only (keys name users and conversations)."""
    if named:
        log.info(
            "bot state stored before owners were recorded: %d document(s) now name their user",
            named,
        )
    if unattributed:
        log.warning(
            "%d bot-state document(s) stored before owners were recorded (consent records, "
            "messages waiting for consent) cannot be attributed to a user: deleting or exporting "
            "a user misses them until that user writes again (README: Usage policy and consent)",
            unattributed,
        )
