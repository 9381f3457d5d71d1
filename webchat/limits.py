"""How often one user may ask for a web chat token (`POST /api/directline/token`), and how many
bytes of the built-in Direct Line's posts are read at once (`PostBodies`).

Each answer opens a conversation (built-in Direct Line) or asks Azure's Direct Line for a token
with the app's secret, so one user asking without end would take from everyone: a token bucket
per user, in memory, per process. A page asks once per load, so people never meet it; a script
does, and gets a 429 with the seconds to wait.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# A burst of this many, then one more every REFILL_SECONDS.
TOKEN_BURST = 20
REFILL_SECONDS = 3.0
# WEBCHAT_AUTH_MODE=local: everyone who reaches the app is the one local developer.
LOCAL_SHARE = 10
# Users remembered at once (a minute of requests from that many people).
MAX_TRACKED = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenRate:
    def __init__(
        self,
        burst: int = TOKEN_BURST,
        refill_seconds: float = REFILL_SECONDS,
    ) -> None:
        self._burst = burst
        self._refill = refill_seconds
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    @classmethod
    def for_mode(cls, local: bool) -> TokenRate:
        if local:
            return cls(TOKEN_BURST * LOCAL_SHARE, REFILL_SECONDS / LOCAL_SHARE)
        return cls()

    def take(self, user: tuple[str, str]) -> int:
        """Take one for this user (tenant, user id): 0 when allowed, else the whole seconds to
        wait before the next one is."""
        now = time.monotonic()
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = _Bucket(float(self._burst), now)
            self._prune()
        else:
            self._buckets.move_to_end(user)
            self._fill(bucket, now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) * self._refill))

    def _fill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) / self._refill)
        bucket.updated = now

    def _prune(self) -> None:
        # The least recently seen first: after REFILL_SECONDS * burst its bucket is full again
        # anyway, which is what a user not remembered gets.
        while len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)


class OncePerMinute:
    """Whether an event anyone can cause as often as they like is logged now: the first, then at
    most one a minute, each with the count of those not logged since."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next_at = 0.0
        self._untold = 0

    def due(self) -> int | None:
        """None: not now (counted); else how many went unlogged before this one."""
        now = self._clock()
        if now < self._next_at:
            self._untold += 1
            return None
        self._next_at = now + 60.0
        untold, self._untold = self._untold, 0
        return untold


class TooMuchBeingRead(Exception):
    """A post that would take the bytes being read past a budget; `everyone` when it is the
    process's budget (others are sending), else the sender's own."""

    def __init__(self, everyone: bool) -> None:
        super().__init__("too much is being read at once")
        self.everyone = everyone


class PostBodies:
    """The bytes of large Direct Line posts being read, parsed and handed to the bot at once, per
    user and in all, each post counted by its Content-Length before a byte of it is read. A post
    may be large (a pasted book gets the "too long" answer rather than a refusal), so without
    this one signed-in person sending many at once would make the process hold all of them.
    Posts of at most `small` bytes (every ordinary message) are not counted: however many large
    ones are being read, they go through."""

    def __init__(self, per_user: int, in_all: int, small: int = 0) -> None:
        self._per_user = per_user
        self._in_all = in_all
        self._small = small
        self._by_user: dict[str, int] = {}
        self._total = 0

    @property
    def being_read(self) -> int:
        return self._total

    @contextmanager
    def reading(self, user: str, size: int) -> Iterator[None]:
        """Holds `size` bytes for `user` while the post is handled; raises TooMuchBeingRead when
        that would pass either budget (one post alone is always let through, as the budgets
        hold at least the largest)."""
        if size <= self._small:
            yield
            return
        held = self._by_user.get(user, 0)
        if held and held + size > self._per_user:
            raise TooMuchBeingRead(everyone=False)
        if self._total and self._total + size > self._in_all:
            raise TooMuchBeingRead(everyone=True)
        self._by_user[user] = held + size
        self._total += size
        try:
            yield
        finally:
            self._total -= size
            left = self._by_user.pop(user) - size
            if left:
                self._by_user[user] = left
