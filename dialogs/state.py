"""Bot state for dialogs: user state (consent) and per-user conversation state (dialog stacks).

botbuilder keeps live objects in state (`DialogState`, prompt options with activities) and
expects the storage to serialize them, as its own Blob and Cosmos storages do with jsonpickle.
`storage.botstate.BotStateStorage` stores plain JSON documents, so this wrapper flattens values
with jsonpickle on the way in and restores them on the way out, refusing any class outside
botbuilder (the documents come from our own store, but a restore must never import arbitrary
code).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botbuilder.core import BotState, PrivateConversationState, Storage, TurnContext, UserState
from jsonpickle.pickler import Pickler  # type: ignore[import-untyped]
from jsonpickle.unpickler import Unpickler  # type: ignore[import-untyped]

from storage.base import ETagMismatch, StateStore
from storage.botstate import (
    ABSENT_ETAG,
    CONVERSATION_PROPERTY,
    OWNER_PROPERTY,
    TURN_ARRIVED_PROPERTY,
    BotStateStorage,
)

log = logging.getLogger(__name__)
_ETAG = "e_tag"
# A write that lost the ETag race (another instance or worker wrote the document after this turn
# read it) is merged and written again, up to this many times in a row; then it is a failure.
_RACES = 4
# What `DialogStates.save_changes` stamps on a document: alone, they are not worth a write.
_STAMPS = (OWNER_PROPERTY, CONVERSATION_PROPERTY, TURN_ARRIVED_PROPERTY)
# Tags that name a class (checked against the allowed modules) and tags never allowed at all.
_CLASS_TAGS = ("py/object", "py/type")
_DENIED_TAGS = ("py/function", "py/repr", "py/mod", "py/module", "py/iterator")
_ALLOWED_MODULES = ("botbuilder.", "botframework.", "datetime.")


class UnsafeState(ValueError):
    """A stored state document names a class or construct that dialogs never store."""


def _check(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _DENIED_TAGS:
                raise UnsafeState(f"state holds a disallowed tag: {key}")
            if key in _CLASS_TAGS and not (
                isinstance(item, str) and item.startswith(_ALLOWED_MODULES)
            ):
                raise UnsafeState(f"state names a disallowed class: {item!r}")
            _check(item)
    elif isinstance(value, list):
        for item in value:
            _check(item)


class PickledStorage(Storage):  # type: ignore[misc]
    def __init__(self, inner: Storage) -> None:
        super().__init__()
        self._inner = inner

    async def read(self, keys: list[str]) -> dict[str, Any]:
        found = await self._inner.read(keys)
        restored: dict[str, Any] = {}
        for key, document in found.items():
            _check(document)
            restored[key] = {
                k: v if k == _ETAG else Unpickler().restore(v, reset=True)
                for k, v in document.items()
            }
        return restored

    async def write(self, changes: dict[str, Any]) -> None:
        flattened: dict[str, Any] = {}
        for key, change in changes.items():
            values = change if isinstance(change, dict) else vars(change)
            flattened[key] = {
                k: v if k == _ETAG else Pickler(unpicklable=True, make_refs=False).flatten(v)
                for k, v in values.items()
            }
        await self._inner.write(flattened)

    async def delete(self, keys: list[str]) -> None:
        await self._inner.delete(keys)


def _flat(value: Any) -> Any:
    return Pickler(unpicklable=True, make_refs=False).flatten(value)


def _flat_document(document: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _flat(value) for name, value in document.items() if name != _ETAG}


@dataclass(frozen=True)
class StateRace:
    """A state document this turn changed that another turn wrote after this turn read it: one
    on another instance or worker (turns of one conversation on one instance run in order), or
    the same user's turn in another conversation (user state). `read` is what this turn read
    (flattened), `ours` what it holds now, `theirs` what is stored now (empty: deleted)."""

    read: Mapping[str, Any]
    ours: Mapping[str, Any]
    theirs: Mapping[str, Any]

    def changed_by_us(self, name: str) -> bool:
        return _differs(self.read, self.ours, name)

    def changed_by_them(self, name: str) -> bool:
        return _differs(self.read, self.theirs, name)

    def merged(self, ours_wins: Callable[[str], bool] = lambda _: True) -> dict[str, Any]:
        """What is stored now with this turn's changes applied again: a property this turn
        changed takes its value, unless the other turn changed it too and `ours_wins` says no."""
        merged: dict[str, Any] = {}
        for name in dict.fromkeys([*self.theirs, *self.ours]):
            keep_ours = self.changed_by_us(name) and (
                not self.changed_by_them(name) or ours_wins(name)
            )
            side = self.ours if keep_ours else self.theirs
            if name in side:
                merged[name] = side[name]
        return merged


def _arrival(document: Mapping[str, Any]) -> datetime:
    """A document's `TURN_ARRIVED_PROPERTY` (the earliest time when it has none)."""
    try:
        at = datetime.fromisoformat(str(document.get(TURN_ARRIVED_PROPERTY)))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _differs(read: Mapping[str, Any], now: Mapping[str, Any], name: str) -> bool:
    if (name in read) != (name in now):
        return True
    return name in now and _flat(now[name]) != read[name]


StateMerge = Callable[[StateRace], dict[str, Any]]


def _ours_win(race: StateRace) -> dict[str, Any]:
    return race.merged()


def _read_key(state: BotState) -> str:
    return f"dialogs.state.read.{type(state).__name__}"


async def _load_recording(state: BotState, context: TurnContext, load: Awaitable[None]) -> None:
    """botbuilder's `load`, keeping what it read in the turn: what a lost race merges from. A
    document read as absent (botbuilder gives it no ETag) is written create-only
    (`ABSENT_ETAG`): another instance's first write of it meanwhile is a lost race, merged, not
    overwritten."""
    before = state.get_cached_state(context)
    await load
    cached = state.get_cached_state(context)
    if cached is not before:
        # The hash botbuilder took (of no document) stays: whether the turn writes is unchanged.
        cached.state.setdefault(_ETAG, ABSENT_ETAG)
        context.turn_state[_read_key(state)] = _flat_document(cached.state)


class _UserState(UserState):  # type: ignore[misc]
    def __init__(self, storage: Storage, merge: StateMerge) -> None:
        super().__init__(storage)
        self.pickled = storage
        self.merge_race = merge

    async def load(self, turn_context: TurnContext, force: bool = False) -> None:
        await _load_recording(self, turn_context, super().load(turn_context, force))


class _DialogStacks(PrivateConversationState):  # type: ignore[misc]
    def __init__(self, storage: Storage, merge: StateMerge) -> None:
        super().__init__(storage)
        self.pickled = storage
        self.merge_race = merge

    async def load(self, turn_context: TurnContext, force: bool = False) -> None:
        await _load_recording(self, turn_context, super().load(turn_context, force))


_Scope = _UserState | _DialogStacks


class DialogStates:
    """The two state scopes the dialogs use, over the app's store.

    botbuilder writes a scope with the ETag it read, so that a write over another turn's fails
    (ETagMismatch; the `Storage` contract, kept in storage/); a scope read as absent is created
    only if still absent, and fails the same way. Two instances (or APP_WORKERS processes) over
    one store do meet there: a user's "I accept" on one while another message of theirs is
    answered on the other, or a user's first two messages at once. That is no store failure:
    `save_changes` reads the document again, applies the turn's changes to it (`merge_user`,
    `merge_dialogs` decide where both turns changed the same property; by default this turn's
    value stands) and writes again, up to `_RACES` times."""

    def __init__(
        self,
        store: StateStore,
        *,
        merge_user: StateMerge = _ours_win,
        merge_dialogs: StateMerge = _ours_win,
    ) -> None:
        # Consent is a person's decision: kept per user (and channel, botbuilder's user key).
        self.user = _UserState(PickledStorage(BotStateStorage(store)), merge_user)
        # Dialog stacks per user per conversation: in a group chat, one person's pending
        # consent question is not answered by another. The stack holds the message that waits
        # for consent, so it expires with the retention period like the stored messages.
        self.dialogs = _DialogStacks(
            PickledStorage(BotStateStorage(store, expires=True)), merge_dialogs
        )

    async def save_changes(
        self,
        context: TurnContext,
        owner: str,
        conversation: str = "",
        *,
        arrived: datetime | None = None,
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        """Writes the scopes that changed in this turn, each stamped with the user whose data it
        holds, so that it is exported and deleted with the user's messages; the dialog stack
        also with its `conversation` (the id its messages are stored under), so that it is
        deleted with that conversation. A document stored before these were recorded (or under
        other ones) is stamped and written once. A lost race is merged and written again while
        `still_wanted()` (false: the user or conversation was erased meanwhile).

        A scope the turn changed is also stamped with `arrived`, when the turn's message
        arrived (`TURN_ARRIVED_PROPERTY`): an erasure's second pass deletes a document a turn
        of a message from before its first pass wrote after it (storage.late), such as a
        consent acceptance another instance stored late. Of two turns' writes merged, the
        later arrival stays (`_merge_stored`). No write of its own: only on a changed scope.

        The user state goes first: when the second write fails, an acceptance saved while its
        question stays open is taken again by the next "I accept", which answers the message
        that waits; a closed question saved without its acceptance would have dropped that
        message and asked again."""
        scopes: tuple[tuple[_Scope, dict[str, str]], ...] = (
            (self.user, {OWNER_PROPERTY: owner}),
            (self.dialogs, {OWNER_PROPERTY: owner, CONVERSATION_PROPERTY: conversation}),
        )
        for state, stamps in scopes:
            cached = state.get_cached_state(context)
            if cached is not None and (cached.is_changed or set(cached.state) - {_ETAG, *_STAMPS}):
                if arrived is not None and cached.is_changed:
                    cached.state[TURN_ARRIVED_PROPERTY] = arrived.isoformat()
                for name, value in stamps.items():
                    if value and cached.state.get(name) != value:
                        cached.state[name] = value
            await self._save(state, context, stamps, still_wanted)

    async def _save(
        self,
        state: _Scope,
        context: TurnContext,
        stamps: Mapping[str, str],
        still_wanted: Callable[[], bool],
    ) -> None:
        for race in range(1, _RACES + 2):
            try:
                await state.save_changes(context)
                return
            except ETagMismatch:
                if race > _RACES:
                    raise
            if not still_wanted():
                return
            log.info(
                "bot state was written by another turn since this turn read it; merged",
                extra={"event": "state_write_raced", "scope": type(state).__name__, "race": race},
            )
            await self._merge_stored(state, context, stamps)

    async def _merge_stored(
        self, state: _Scope, context: TurnContext, stamps: Mapping[str, str]
    ) -> None:
        """Makes the turn's cached state what is stored now with the turn's changes merged in,
        marked changed only when that differs from what is stored (else there is no write)."""
        cached = state.get_cached_state(context)
        key = state.get_storage_key(context)
        stored = (await state.pickled.read([key])).get(key)
        theirs = {name: value for name, value in (stored or {}).items() if name != _ETAG}
        race = StateRace(
            read=context.turn_state.get(_read_key(state), {}),
            ours={name: value for name, value in cached.state.items() if name != _ETAG},
            theirs=theirs,
        )
        merged = state.merge_race(race)
        # Whose data it is and which conversation's, also over a document deleted meanwhile
        # (erased, expired), which holds none: without them the turn's write would be found by
        # no export or erasure of its user or conversation.
        merged.update({name: value for name, value in stamps.items() if value})
        if _arrival(theirs) > _arrival(merged):
            # The other turn's message came later: what it stored is not older than this one.
            merged[TURN_ARRIVED_PROPERTY] = theirs[TURN_ARRIVED_PROPERTY]
        cached.state.clear()
        cached.state.update(merged)
        # Deleted meanwhile: created again, only if still absent.
        cached.state[_ETAG] = stored[_ETAG] if stored is not None else ABSENT_ETAG
        # A further race is merged from what was stored now.
        context.turn_state[_read_key(state)] = _flat_document(theirs)
        # Deleted meanwhile (expired, erased) and nothing of the turn's but the stamps: not
        # worth a write (as in `save_changes`).
        worth_it = stored is not None or set(merged) - set(_STAMPS)
        if worth_it and _flat_document(merged) != _flat_document(theirs):
            cached.hash = ""  # botbuilder's hash of the state never is: changed
        else:
            cached.hash = cached.compute_hash(cached.state)
