"""botbuilder's `Storage` interface over our `StateStore`, for dialog, user and conversation state.

One of the three places (with `bot/` and `dialogs/`) allowed to import botbuilder.
"""

from __future__ import annotations

from typing import Any

from botbuilder.core import Storage, StoreItem

from storage.base import StateStore
from storage.ids import safe_id

_ETAG = "e_tag"


class BotStateStorage(Storage):  # type: ignore[misc]
    def __init__(self, store: StateStore) -> None:
        super().__init__()
        self._store = store

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
            await self._store.write_state(safe_id(key), document, etag or None)

    async def delete(self, keys: list[str]) -> None:
        await self._store.delete_state([safe_id(key) for key in keys])
