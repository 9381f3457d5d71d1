"""botbuilder's `Storage` interface over our `StateStore`, for dialog, user and conversation state.

One of the three places (with `bot/` and `dialogs/`) allowed to import botbuilder.
"""

from __future__ import annotations

from typing import Any

from botbuilder.core import Storage, StoreItem

from storage.base import StateStore
from storage.ids import safe_id

_ETAG = "e_tag"
# The state property that names the user whose data a document holds (the `userId` of their
# messages): such a document is exported and deleted with that user (storage.base.StateStore).
OWNER_PROPERTY = "owner"


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
            await self._store.write_state(
                safe_id(key),
                document,
                etag or None,
                owner=owner if isinstance(owner, str) and owner else None,
                expires=self._expires,
            )

    async def delete(self, keys: list[str]) -> None:
        await self._store.delete_state([safe_id(key) for key in keys])
