"""Bot state for dialogs: user state (consent) and per-user conversation state (dialog stacks).

botbuilder keeps live objects in state (`DialogState`, prompt options with activities) and
expects the storage to serialize them, as its own Blob and Cosmos storages do with jsonpickle.
`storage.botstate.BotStateStorage` stores plain JSON documents, so this wrapper flattens values
with jsonpickle on the way in and restores them on the way out, refusing any class outside
botbuilder (the documents come from our own store, but a restore must never import arbitrary
code).
"""

from __future__ import annotations

from typing import Any

from botbuilder.core import PrivateConversationState, Storage, TurnContext, UserState
from jsonpickle.pickler import Pickler  # type: ignore[import-untyped]
from jsonpickle.unpickler import Unpickler  # type: ignore[import-untyped]

from storage.base import StateStore
from storage.botstate import CONVERSATION_PROPERTY, OWNER_PROPERTY, BotStateStorage

_ETAG = "e_tag"
# What `DialogStates.save_changes` stamps on a document: alone, they are not worth a write.
_STAMPS = (OWNER_PROPERTY, CONVERSATION_PROPERTY)
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


class DialogStates:
    """The two state scopes the dialogs use, over the app's store."""

    def __init__(self, store: StateStore) -> None:
        # Consent is a person's decision: kept per user (and channel, botbuilder's user key).
        self.user = UserState(PickledStorage(BotStateStorage(store)))
        # Dialog stacks per user per conversation: in a group chat, one person's pending
        # consent question is not answered by another. The stack holds the message that waits
        # for consent, so it expires with the retention period like the stored messages.
        self.dialogs = PrivateConversationState(
            PickledStorage(BotStateStorage(store, expires=True))
        )

    async def save_changes(self, context: TurnContext, owner: str, conversation: str = "") -> None:
        """Writes the scopes that changed in this turn, each stamped with the user whose data it
        holds, so that it is exported and deleted with the user's messages; the dialog stack
        also with its `conversation` (the id its messages are stored under), so that it is
        deleted with that conversation. A document stored before these were recorded (or under
        other ones) is stamped and written once."""
        scopes = (
            (self.dialogs, {OWNER_PROPERTY: owner, CONVERSATION_PROPERTY: conversation}),
            (self.user, {OWNER_PROPERTY: owner}),
        )
        for state, stamps in scopes:
            cached = state.get_cached_state(context)
            if cached is not None and (cached.is_changed or set(cached.state) - {_ETAG, *_STAMPS}):
                for name, value in stamps.items():
                    if value and cached.state.get(name) != value:
                        cached.state[name] = value
            await state.save_changes(context)
