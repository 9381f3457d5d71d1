"""Sign-outs of admin sessions, kept in the store: every instance and every restart refuses a
signed-out session cookie until the cookie would have expired anyway.

The session cookie is signed and carries everything (admin/auth.py, `Sessions`), so nothing but
a record of the sign-out can end it early. A process's memory would not do: the Azure templates
run two instances, App Service recycles them, and `ADMIN_SESSION_SECRET` keeps cookies valid
across both, so a copied cookie would work again after any restart.

Each sign-out is a counter (`CounterStore`: the `usage` container on Cosmos DB, keyed by
`/scope`; the `counters` table on SQLite) of its own scope, `admin-signout:<session id>`. That
is what the record needs: one small document read by its key (a point read: one partition, one
id), written once, with a TTL of its own, here when the session would have expired, so the store
removes it then (Cosmos DB's per-item `ttl`; SQLite's purge). `botstate` would not fit: its
documents expire only with the retention period, and are user data (exported and deleted with
their owner). A container of its own would need the infrastructure to create it too.

Checking costs one point read per admin request that carries a session cookie (bearer tokens
and App Service's principal have no sign-out of ours). Only the answer "signed out" is kept in
memory, as it never changes; "not signed out" is never cached, so a sign-out on one instance
is refused on every other at its next request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from storage.base import CounterStore

SCOPE_PREFIX = "admin-signout:"
WINDOW = "session"
# The record outlives the cookie by this much: the clocks of two instances may differ a little,
# and a record gone a second early would let the cookie back in for that second.
MARGIN_SECONDS = 300


class SignOuts:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Sign-outs this process has seen (stored or read), by session id: until when.
        self._known: dict[str, float] = {}

    async def record(self, store: CounterStore, session_id: str, expires_at: float) -> None:
        """Store the sign-out of a session that expires at `expires_at` (epoch seconds). Raises
        StoreError when it could not be stored: the session then stays valid, and the caller
        must say so. Storing it again (a retry after a lost answer) changes nothing."""
        ttl = max(1, int(expires_at - self._clock()) + MARGIN_SECONDS)
        await store.add_to_counter(SCOPE_PREFIX + session_id, WINDOW, 1, 0, ttl)
        self._remember(session_id, expires_at)

    async def is_signed_out(self, store: CounterStore, session_id: str, expires_at: float) -> bool:
        """Whether the session was signed out, here or on any instance sharing the store. Raises
        StoreError when the store cannot say: the caller refuses the request (fail closed)."""
        if session_id in self._known:
            return True
        if await store.read_counter(SCOPE_PREFIX + session_id, WINDOW) > 0:
            self._remember(session_id, expires_at)
            return True
        return False

    def _remember(self, session_id: str, expires_at: float) -> None:
        now = self._clock()
        # Drop what has expired: a few ids and times per sign-out, never more than a session
        # lifetime's worth.
        self._known = {s: t for s, t in self._known.items() if t > now}
        self._known[session_id] = expires_at
