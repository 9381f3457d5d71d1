"""The users and conversations this process erased lately, for the turns it runs: no store
read per turn.

An erasure deletes what is stored, but a turn already under way (a long answer streaming, or a
message waiting its turn) would store its answer and summary afterwards and bring the
conversation back. So an erasure is recorded here before anything is deleted, and a turn asks
`erased_since` (dictionary look-ups) before each of its writes: once its user or its conversation
was erased after its message arrived, nothing more of it is stored. Turns on other processes over
the same store cannot see this; the erasure's second pass (admin/erasures.py) deletes what they
stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

# How long an erasure is remembered: longer than a message waits for its turn and the turn runs
# (TURN_DEADLINE_SECONDS, minutes). A few ids and times: the memory is nothing.
REMEMBERED_SECONDS = 3600.0


class RecentErasures:
    def __init__(
        self,
        remembered_seconds: float = REMEMBERED_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._remembered = remembered_seconds
        self._clock = clock
        self._erased_at: dict[tuple[str, str], float] = {}

    def now(self) -> float:
        """The time `erased_since` compares with (monotonic): when a message arrived."""
        return self._clock()

    def record(self, user_ids: Iterable[str] = (), conversation_ids: Iterable[str] = ()) -> None:
        """These users (one person's ids) or conversations (stored ids) are being erased now."""
        now = self._clock()
        for key, at in list(self._erased_at.items()):
            if now - at > self._remembered:
                del self._erased_at[key]
        for kind, ids in (("user", user_ids), ("conversation", conversation_ids)):
            for erased in ids:
                if erased:
                    self._erased_at[kind, erased] = now

    def erased_since(self, since: float, user_id: str = "", conversation_id: str = "") -> bool:
        """Whether the user or the conversation (its stored id) was erased at or after `since`
        (when a message of theirs arrived)."""
        return any(
            at is not None and at >= since
            for at in (
                self._erased_at.get(("user", user_id)),
                self._erased_at.get(("conversation", conversation_id)),
            )
        )
