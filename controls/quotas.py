"""Per-user request rate and daily tokens, per-tenant daily tokens, on the store's atomic
counters: several app instances over one store share them.

What a chat turn costs with user limits on (the default): ONE store write.

- The gate counts the request (`count_request`): +1 in this UTC minute (limit R) and an upfront
  token reservation (+U today, limit T), together or not at all, in one atomic update of the
  user's usage document for the day. U is an upper bound of any turn's estimate (prompt budget
  + max output tokens), so a refused message is refused before it is stored, and the turn's
  exact estimate (`reserve_tokens`, once the prompt is built) fits inside U: no second write.
- Settlement is deferred. The difference between the reservation and the real usage is kept in
  memory per (scope, day) and folded into that scope's next counter update; a background
  flusher writes what is still pending once no turn of that scope has carried it for a while,
  and everything on shutdown (`close`). How long depends on how near the user is to the day's
  token limit at the turn's count: with room for at least `ROOM_TURNS` more upfront
  reservations (or no token limit), two minutes (`SETTLE_WITH_ROOM_AFTER_SECONDS`), so that
  at a person's pace the next message's count carries it and a turn costs one write; nearer
  the limit, a few seconds (`SETTLE_AFTER_SECONDS`), so that what is given back is soon
  visible to every instance where it decides a refusal. A failed write keeps the amount and
  retries: what a write that failed outright carried is retried alone, under that write's id
  (`_Pending`), a negative amount only where the store can tell that write was not applied
  (`_Sent`).

Why no limit is passed, across instances: every admission is one conditional update of the
stored counts. A reservation over-estimates (U, or the estimate with max output tokens), so a
pending settlement is negative: until it is written the stored total is higher than the real
one, which makes a limit stricter for a moment (two minutes at most, or a few seconds near the
limit; on this instance not even that: its pending settlement rides on its next update), never
looser. The rare positive settlement (a turn that used more than it reserved) is written at
once, not deferred. A write whose answers were all lost (the store applied it, the client saw an
error) is not applied again by the retry: the retry names the same update (`CounterStore`'s
`write_id`), which the store recognizes as applied already while the document remembers it. A
negative amount is retried only on the store's proof that the failed write was not applied
(`CounterStore`'s `resend`); without one it is dropped and logged (`quota_settlement_dropped`):
the stored total keeps the reservation until the day ends, stricter, never looser. A positive
amount is retried all the same: should it count twice, the limit is only stricter. Tokens given
back never take a stored count below zero: where it does not hold them (the day's usage erased
since, with the user's data, and counted anew) the store refuses them, and they are dropped and
logged the same way; a turn's update that carried them is made again without them.

Near a limit (less than U left today) the upfront reservation does not fit: the gate counts the
request with only the smallest turn reserved (S: max output tokens, which every estimate adds to
a non-empty prompt), and the rest of the exact estimate is reserved before the model call (two
writes; the last few thousand tokens of a day). With less than S left no turn can fit, so the
gate refuses: the message is neither stored nor counted.

A redelivery (the channel sends a message again under the same activity id, e.g. to another
instance or after a restart, when the turn queue's in-memory dedupe does not know it) is
counted like any message, because telling it apart costs a store read. What it took goes back
once the chat service finds the message already stored (`give_back`: one write, on that path
only). When the gate would refuse it, `count_request` asks first whether the message is
already stored: if so it was handled, and it is dropped without a refusal or its record.

Every refused message gets its notice (a reply to the user's own conversation; a loop of
replies is stopped at the edge: bot.routes, bot.connector). Its audit record and
`quota_exceeded` log line are written once per user, limit and UTC minute (the organization's
limit: once per tenant and minute, as its record names the tenant, not the user): a flood of
refused messages, or a loop of them, costs one of each per user and minute. The count of the
others is logged once that minute is over, in one `quota_exceeded_untold` line (so named when
they were not told either: they are told now, only not recorded).

A user with both user limits at 0 is not counted at all (no write; `/usage` says no limit
applies); with one of them set, both are counted in the same write. A tenant without a limit
is not counted; with one, its counter costs one more write per turn (the exact estimate),
settled the same deferred way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal, TypeVar

from controls.audit import RefusalLog
from controls.clock import Clock, utc_now
from controls.policy import TenantPolicies, normalize_tenant
from controls.windows import Window, day_window, minute_number, minute_window
from storage.base import CounterStore, StoreError, UpdateOutcomeUnknown
from storage.ids import person_ids, safe_id
from storage.models import CounterResult, UsageChange, UsageResult, new_write_id

log = logging.getLogger(__name__)

# What a counter update answers (the user's usage document, or a tenant's counter).
_Counted = TypeVar("_Counted", UsageResult, CounterResult)

# What `count_request` answers for a message already handled (neither counted nor refused).
REDELIVERED: Final = "redelivered"

# A scope's pending settlement is written after this long without a new one, when the user's
# count left less than ROOM_TURNS upfront reservations before the day's token limit...
SETTLE_AFTER_SECONDS = 3.0
# ... and after this long with more room than that (or no token limit): the user's next message
# at a person's pace carries it, in the update that counts the message.
SETTLE_WITH_ROOM_AFTER_SECONDS = 120.0
ROOM_TURNS = 10
# An upfront reservation no turn claimed by then goes back (the turn ended before its model
# call, e.g. a store failure; a duplicate gives it back at once, see `give_back`).
UPFRONT_CLAIM_SECONDS = 60.0
_FLUSH_EVERY_SECONDS = 1.0
_RETRY_AT_MOST_SECONDS = 30.0
_FLUSH_CONCURRENCY = 16
# Why tokens given back were refused (`storage.models.UsageChange`), in `quota_settlement_dropped`.
_NOT_HELD = (
    "the stored count holds fewer tokens than were given back: the day's usage was erased (or "
    "has expired) since they were reserved"
)


class LimitKind(StrEnum):
    USER_REQUESTS_PER_MINUTE = "user_requests_per_minute"
    USER_TOKENS_PER_DAY = "user_tokens_per_day"
    TENANT_TOKENS_PER_DAY = "tenant_tokens_per_day"


@dataclass(frozen=True)
class QuotaLimits:
    """0 = unlimited. A user is counted when either user limit is set (both, in one write)."""

    user_requests_per_minute: int = 0
    user_tokens_per_day: int = 0
    tenant_tokens_per_day: int = 0

    @property
    def counts_user(self) -> bool:
        return bool(self.user_requests_per_minute or self.user_tokens_per_day)


@dataclass(frozen=True)
class QuotaExceeded:
    kind: LimitKind
    scope: str
    limit: int
    used: int
    resets_at: datetime
    seconds_left: int
    # The turn's estimate that did not fit (0: the refusal does not depend on this message).
    requested: int = 0


@dataclass(frozen=True)
class TokenReservation:
    user_scope: str | None  # None: the user is not counted
    tenant_scope: str | None  # None: the tenant is not counted
    window: Window
    amount: int  # the turn's estimate (what the tenant's counter holds)
    user_amount: int = 0  # what the user's counter holds for the turn (the upfront U, or more)
    # The user's count left room for ROOM_TURNS more turns today: the settlement may wait long.
    user_has_room: bool = False


@dataclass(frozen=True)
class UsageReport:
    limits: QuotaLimits
    counted: bool  # False: no user limit applies, and nothing is counted
    requests_this_minute: int
    minute_resets_at: datetime
    tokens_today: int
    day_resets_at: datetime
    tenant_tokens_today: int | None


def user_scope(user_id: str) -> str:
    """The counter of a person's limits: one for both ids they chat under (Teams and the built-in
    web chat store the Entra object id, Azure's Direct Line `dl_<object id>`), so the chat they
    pick never gives them a second day's allowance."""
    return safe_id(f"user:{person_ids(user_id)[0] or 'unknown'}")


def tenant_scope(tenant_id: str) -> str | None:
    return safe_id(f"tenant:{normalize_tenant(tenant_id)}") if tenant_id.strip() else None


# (is a tenant counter, scope, day window key)
_Key = tuple[bool, str, str]


@dataclass
class _Sent:
    """Tokens a counter update carried that failed outright, under that update's id.

    Retried, a negative amount is a `resend` (`CounterStore`): applied twice it would make the
    limit looser, so the store applies it only when it can tell the failed write was not
    applied, and when it cannot (the write may have landed and the document no longer
    remembers it: a tenant's busy counter within a second), it is dropped: the stored total
    keeps the reservation until the day ends (stricter). A positive amount is written again in
    any case: twice, it only makes the limit stricter."""

    write_id: str
    amount: int
    # A write under this id went out (and failed): the next one may repeat it.
    tried: bool = True


@dataclass
class _Pending:
    """Tokens to add to a counter later (negative: what a reservation did not use).

    `amount` was never sent (or its update was refused, so not applied): it is folded into the
    scope's next counter update, or the flusher writes it, each time under the id of that write.
    `sent` is what writes that failed outright carried: the store may have applied them all the
    same (every answer lost), so each is retried alone, under its write's id, which the store
    recognizes when that write was applied (`CounterStore`; a negative amount is applied only on
    the store's proof that it was not, `_Sent`). Never folded: under a new id it would count
    twice had it landed, and whatever joined it under its old id would be lost."""

    tenant: bool
    scope: str
    window: Window
    amount: int = 0
    sent: list[_Sent] = field(default_factory=list)
    touched: float = 0.0  # monotonic time of the latest amount
    # Written after this long without a new amount (set by the latest: the freshest view of
    # how near the limit the scope is).
    settle_after: float = SETTLE_AFTER_SECONDS

    @property
    def total(self) -> int:
        return self.amount + sum(sent.amount for sent in self.sent)


@dataclass(frozen=True)
class _Upfront:
    """What `count_request` took for a turn: its request in `minute`, and `amount` tokens."""

    scope: str
    window: Window
    amount: int
    at: float  # monotonic
    minute: int = 0
    has_room: bool = False  # ROOM_TURNS more upfront reservations fit today (`TokenReservation`)


class Quotas:
    def __init__(
        self,
        counters: CounterStore,
        refusals: RefusalLog,
        defaults: QuotaLimits,
        tenants: TenantPolicies | None = None,
        clock: Clock = utc_now,
        *,
        upfront_tokens: int = 0,
        smallest_turn_tokens: int = 0,
        settle_after_seconds: float = SETTLE_AFTER_SECONDS,
        settle_with_room_after_seconds: float = SETTLE_WITH_ROOM_AFTER_SECONDS,
        upfront_claim_seconds: float = UPFRONT_CLAIM_SECONDS,
    ) -> None:
        self._counters = counters
        self._refusals = refusals
        self._defaults = defaults
        self._tenants = tenants or TenantPolicies()
        self._clock = clock
        self._upfront_tokens = max(0, upfront_tokens)
        self._smallest_turn = min(self._upfront_tokens, max(0, smallest_turn_tokens))
        self._settle_after = settle_after_seconds
        self._settle_with_room_after = max(settle_with_room_after_seconds, settle_after_seconds)
        self._room_tokens = ROOM_TURNS * self._upfront_tokens
        self._claim_within = upfront_claim_seconds
        self._pending: dict[_Key, _Pending] = {}
        self._held: dict[Hashable, list[_Upfront]] = {}
        # Organizations this instance saw within a turn of their daily limit: tenant scope ->
        # the day's key (`_note_tenant_use`); one entry per such organization, for a day.
        self._tenants_near_limit: dict[str, str] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()  # set by close(): nothing is deferred any more

    def limits_for(self, tenant_id: str) -> QuotaLimits:
        policy = self._tenants.for_tenant(tenant_id)
        if policy is None:
            return self._defaults
        d = self._defaults
        return QuotaLimits(
            user_requests_per_minute=_pick(
                policy.user_requests_per_minute, d.user_requests_per_minute
            ),
            user_tokens_per_day=_pick(policy.user_tokens_per_day, d.user_tokens_per_day),
            tenant_tokens_per_day=_pick(policy.tokens_per_day, d.tenant_tokens_per_day),
        )

    # --- the turn: count, reserve, settle

    async def count_request(
        self,
        user_id: str,
        tenant_id: str,
        turn: Hashable,
        *,
        handled_already: Callable[[], Awaitable[bool]] | None = None,
    ) -> QuotaExceeded | Literal["redelivered"] | None:
        """One more request in this minute, unless that goes over the limit (then not counted).
        The same write reserves the upfront tokens `reserve_tokens` claims for `turn`.

        `handled_already` is asked only when the request would be refused: True (the message
        is a redelivery of one already handled) answers REDELIVERED, with no refusal recorded.
        A refusal is recorded once per user, limit and minute (see the module docstring)."""
        limits = self.limits_for(tenant_id)
        now = self._clock()
        minute, day = minute_window(now), day_window(now)
        spent = await self._tenant_spent(tenant_id, limits, day, now)
        if spent is not None:
            if handled_already is not None and await handled_already():
                return REDELIVERED
            return spent
        if not limits.counts_user:
            return None
        scope = user_scope(user_id)
        upfront, smallest = self._upfront_tokens, self._smallest_turn
        if limits.user_tokens_per_day and upfront > limits.user_tokens_per_day:
            upfront = smallest  # it could never fit: the rest of the estimate comes later
        change = UsageChange(
            minute=minute_number(minute),
            ttl_seconds=day.ttl_seconds,
            requests=1,
            request_limit=limits.user_requests_per_minute,
            tokens=upfront,
            token_limit=limits.user_tokens_per_day,
        )
        result = await self._update_user(scope, day, change)
        if not result.allowed and result.refused == "tokens" and upfront > smallest:
            # Less than the upfront reservation is left today: count the request with the
            # smallest turn reserved (refused if even that does not fit, before the message is
            # stored); the rest of the exact estimate is reserved once the prompt is known.
            upfront = smallest
            change = change.model_copy(update={"tokens": smallest})
            result = await self._update_user(scope, day, change)
        if result.allowed:
            limit = limits.user_tokens_per_day
            has_room = not limit or limit - result.counts.tokens >= self._room_tokens
            # Held even with no tokens: `give_back` may return the request.
            self._held.setdefault(turn, []).append(
                _Upfront(scope, day, upfront, time.monotonic(), change.minute, has_room)
            )
            self._ensure_flusher()
            return None
        if handled_already is not None and await handled_already():
            return REDELIVERED
        kind, window = (
            (LimitKind.USER_TOKENS_PER_DAY, day)
            if result.refused == "tokens"
            else (LimitKind.USER_REQUESTS_PER_MINUTE, minute)
        )
        record = self._first_this_minute(scope, user_id, kind, window)
        if result.refused == "tokens":
            # Less than the smallest turn is left today (counting any settlement carried
            # along): no message of this user can be answered before the day resets. What it
            # says was used counts that settlement too, as /usage does.
            return await self._exceeded(
                LimitKind.USER_TOKENS_PER_DAY,
                scope,
                limits.user_tokens_per_day,
                max(0, result.counts.tokens + self._peek((False, scope, day.key))),
                day,
                now,
                user_id=user_id,
                record=record,
            )
        return await self._exceeded(
            LimitKind.USER_REQUESTS_PER_MINUTE,
            scope,
            limits.user_requests_per_minute,
            result.counts.requests_in(change.minute),
            minute,
            now,
            user_id=user_id,
            record=record,
        )

    async def _tenant_spent(
        self, tenant_id: str, limits: QuotaLimits, day: Window, now: datetime
    ) -> QuotaExceeded | None:
        """The organization's daily limit, refused at the gate (before the message is stored or
        uses one of the user's requests) once this instance has seen it within a turn of its
        end: the stored count is read again then, so settlements that made room since count.
        One read per message only near the end; nowhere else a store operation."""
        tenant = tenant_scope(tenant_id) if limits.tenant_tokens_per_day else None
        if tenant is None or self._tenants_near_limit.get(tenant) != day.key:
            return None
        try:
            stored = await self._counters.read_counter(tenant, day.key)
        except StoreError:
            log.warning("the organization's usage could not be read; reserve_tokens checks it")
            return None
        used = max(0, stored + self._peek((True, tenant, day.key)))
        self._note_tenant_use(tenant, day, used, limits.tenant_tokens_per_day)
        if limits.tenant_tokens_per_day - used >= self._smallest_turn:
            return None
        kind = LimitKind.TENANT_TOKENS_PER_DAY
        return await self._exceeded(
            kind,
            tenant,
            limits.tenant_tokens_per_day,
            used,
            day,
            now,
            record=self._first_this_minute(tenant, "", kind, day),
        )

    def _note_tenant_use(self, tenant: str, day: Window, used: int, limit: int) -> None:
        """Remembers an organization that has less than one turn's upfront reservation left
        today, for the gate (`_tenant_spent`); forgets it once it has more."""
        if limit - used < max(self._upfront_tokens, self._smallest_turn, 1):
            self._tenants_near_limit[tenant] = day.key
        else:
            self._tenants_near_limit.pop(tenant, None)

    def _first_this_minute(self, scope: str, user_id: str, kind: LimitKind, window: Window) -> bool:
        """Whether a refusal of `kind` for the user (`user_id`; "" for the organization's
        limit, then once per tenant `scope`) is the first in this minute, to be recorded; if
        not, it is counted, to be logged with the others (`RefusalLog.first_this_minute`)."""
        return self._refusals.first_this_minute(
            (user_id or scope, kind),
            "quota_exceeded",
            scope,
            user_id=user_id,
            limit=kind.value,
            window=window.key,
        )

    async def give_back(self, turn: Hashable) -> None:
        """`turn` was counted, then found to be a redelivery of a message already handled: its
        request goes back (while the stored count is still of the minute it was counted in) and
        so does its upfront reservation, in one write. Nothing when `count_request` did not
        count it, or its reservation was claimed or has expired (the request then stays: a
        limit stricter for what is left of that minute, never looser)."""
        held = self._claim(turn)
        if held is None:
            return
        change = UsageChange(
            minute=held.minute,
            ttl_seconds=held.window.ttl_seconds,
            requests=-1,
            tokens=-held.amount,
        )
        try:
            result = await self._update_user(
                held.scope, held.window, change, kept_on_failure=-held.amount
            )
        except StoreError:
            # The tokens go back with the deferred settlements, under this write's id (it may
            # have been applied); the request is not retried: only tokens are kept for later.
            log.warning("a redelivery's request could not be given back")
            return
        if result.refused == "below_zero":
            self._dropped(False, held.scope, held.window, -held.amount, _NOT_HELD)

    def admits_any_estimate(self, turn: Hashable, tenant_id: str) -> bool:
        """Whether `reserve_tokens` cannot refuse `turn`, counted by `count_request`: the user's
        tokens are not limited or its upfront reservation is whole (it holds any estimate, so
        nothing is written), and the organization has no daily limit (its counter is written,
        and may refuse, on every turn). The gate promises an answer only then."""
        limits = self.limits_for(tenant_id)
        if limits.tenant_tokens_per_day:
            return False
        if not limits.user_tokens_per_day:
            return True
        held = self._held.get(turn) or []
        return bool(held) and 0 < self._upfront_tokens <= held[0].amount

    async def reserve_tokens(
        self, user_id: str, tenant_id: str, amount: int, turn: Hashable | None = None
    ) -> TokenReservation | QuotaExceeded:
        """Reserve the turn's estimate: inside the upfront reservation `count_request` made
        for `turn` (no write), or on the counter when there is none or it is too small."""
        now = self._clock()
        limits = self.limits_for(tenant_id)
        amount = max(0, amount)
        held = self._claim(turn)
        # A turn that crosses midnight counts for the day its reservation was made.
        window = held.window if held is not None else day_window(now)
        user: str | None = None
        user_amount = 0
        has_room = held is not None and held.has_room
        if held is not None or limits.counts_user:
            user = held.scope if held is not None else user_scope(user_id)
            user_amount = held.amount if held is not None else 0
        try:
            if user is not None and amount > user_amount:
                change = UsageChange(
                    minute=minute_number(minute_window(now)),
                    ttl_seconds=window.ttl_seconds,
                    tokens=amount - user_amount,
                    token_limit=limits.user_tokens_per_day,
                )
                mine = await self._update_user(user, window, change)
                if not mine.allowed:
                    self._defer(False, user, window, -user_amount)
                    kind = LimitKind.USER_TOKENS_PER_DAY
                    # The stored count holds this turn's share, which goes back unspent: the
                    # user is told what they used (a limit is "reached" only when it is).
                    return await self._exceeded(
                        kind,
                        user,
                        limits.user_tokens_per_day,
                        max(0, mine.counts.tokens - user_amount),
                        window,
                        now,
                        user_id=user_id,
                        requested=amount,
                        record=self._first_this_minute(user, user_id, kind, window),
                    )
                user_amount = amount
                has_room = False  # the upfront reservation did not fit: near the limit
            tenant = tenant_scope(tenant_id) if limits.tenant_tokens_per_day else None
            if tenant is not None:
                theirs = await self._update_tenant(
                    tenant, window, amount, limits.tenant_tokens_per_day
                )
                self._note_tenant_use(tenant, window, theirs.value, limits.tenant_tokens_per_day)
                if not theirs.allowed:
                    # Give the user's share back: nothing was spent.
                    if user is not None:
                        self._defer(False, user, window, -user_amount)
                    kind = LimitKind.TENANT_TOKENS_PER_DAY
                    return await self._exceeded(
                        kind,
                        tenant,
                        limits.tenant_tokens_per_day,
                        theirs.value,
                        window,
                        now,
                        requested=amount,
                        record=self._first_this_minute(tenant, "", kind, window),
                    )
        except StoreError:
            # The turn goes ahead uncounted (the caller decides): give back what it holds.
            if user is not None:
                self._defer(False, user, window, -user_amount)
            raise
        return TokenReservation(user, tenant, window, amount, user_amount, has_room)

    async def settle(self, reservation: TokenReservation, used_tokens: int) -> None:
        """Replace the reservation by the real usage, in the window it was reserved in. What a
        reservation did not use is written later (see the module docstring); more than it
        reserved is written now."""
        used = max(0, used_tokens)
        window = reservation.window
        if reservation.user_scope is not None:
            delta = used - reservation.user_amount
            await self._settle(
                False, reservation.user_scope, window, delta, has_room=reservation.user_has_room
            )
        if reservation.tenant_scope is not None:
            await self._settle(True, reservation.tenant_scope, window, used - reservation.amount)

    async def usage(
        self, user_id: str, tenant_id: str, *, with_tenant: bool = False
    ) -> UsageReport:
        """What `/usage` shows: the stored counts with this instance's pending settlements."""
        now = self._clock()
        minute, day = minute_window(now), day_window(now)
        limits = self.limits_for(tenant_id)
        tenant = tenant_scope(tenant_id)
        tenant_tokens = None
        if with_tenant and tenant is not None:
            stored = await self._counters.read_counter(tenant, day.key)
            tenant_tokens = max(0, stored + self._peek((True, tenant, day.key)))
        requests = tokens = 0
        if limits.counts_user:
            scope = user_scope(user_id)
            counts = await self._counters.read_usage(scope, day.key)
            requests = counts.requests_in(minute_number(minute))
            tokens = max(0, counts.tokens + self._peek((False, scope, day.key)))
        return UsageReport(
            limits=limits,
            counted=limits.counts_user,
            requests_this_minute=requests,
            minute_resets_at=minute.resets_at,
            tokens_today=tokens,
            day_resets_at=day.resets_at,
            tenant_tokens_today=tenant_tokens,
        )

    # --- deferred settlement

    async def flush(self) -> int:
        """Write every pending settlement now; how many could not be written (kept)."""
        return await self._flush(everything=True)

    async def close(self, at_most_seconds: float | None = None) -> None:
        """Shutdown, once the turns have drained: upfront reservations no turn claimed go back
        and everything pending is written. Later settlements are written at once. What is not
        written within `at_most_seconds` (a store that does not answer: each try could take the
        store's own timeouts and retries, minutes in all) is given up and logged. The refusal
        log's counts of refusals not recorded are logged now, the gate's (tenant and channel)
        too: it shares the log, and nothing is refused once the turns have drained."""
        self._stopping.set()
        timed_out = False
        try:
            async with asyncio.timeout(at_most_seconds):
                if self._flusher is not None:
                    await asyncio.gather(self._flusher, return_exceptions=True)
                self._refusals.close()
                self._expire_held(math.inf)
                for attempt in range(3):
                    if not await self.flush():
                        return
                    await asyncio.sleep(0.2 * (attempt + 1))
        except TimeoutError:
            timed_out = True
            # Cut wherever it was: what is told and held still counts in what is given up.
            self._refusals.close()
            self._expire_held(math.inf)
        # The stored totals keep what is given up (stricter, never looser) until the day ends.
        log.error(
            "quota settlements could not be written at shutdown",
            extra={
                "event": "quota_settlement_lost",
                "scopes": len(self._pending),
                "tokens": sum(p.total for p in self._pending.values()),
                "timed_out": timed_out,
            },
        )

    async def _settle(
        self, tenant: bool, scope: str, window: Window, delta: int, *, has_room: bool = False
    ) -> None:
        if delta == 0:
            return
        if delta < 0 and not self._stopping.is_set():
            self._defer(tenant, scope, window, delta, has_room=has_room)
            return
        # More than was reserved: written now, so no other instance admits a turn past the
        # limit meanwhile. (Or the app is shutting down and nothing would flush it.)
        write_id = new_write_id()
        try:
            applied = await self._write(tenant, scope, window, delta, write_id)
        except StoreError:
            log.warning("a quota settlement could not be written; kept for a retry")
            self._defer(tenant, scope, window, delta, sent_as=write_id)
            return
        if not applied:
            self._dropped(tenant, scope, window, delta, _NOT_HELD)

    async def _update_user(
        self, scope: str, window: Window, change: UsageChange, *, kept_on_failure: int = 0
    ) -> UsageResult:
        async def update(settled: int, write_id: str | None) -> UsageResult:
            folded = change.model_copy(
                update={
                    "tokens": change.tokens + settled,
                    "given_back": change.given_back + min(0, settled),
                }
            )
            return await self._counters.add_usage(scope, window.key, folded, write_id=write_id)

        return await self._folded(False, scope, window, update, kept_on_failure)

    async def _update_tenant(
        self, scope: str, window: Window, amount: int, limit: int
    ) -> CounterResult:
        async def update(settled: int, write_id: str | None) -> CounterResult:
            return await self._counters.add_to_counter(
                scope, window.key, amount + settled, limit, window.ttl_seconds, write_id=write_id
            )

        return await self._folded(True, scope, window, update)

    async def _folded(
        self,
        tenant: bool,
        scope: str,
        window: Window,
        update: Callable[[int, str | None], Awaitable[_Counted]],
        kept_on_failure: int = 0,
    ) -> _Counted:
        """One counter update with the scope's pending settlement folded in (no write of its
        own), under a new id; the settlement stays pending when the update fails or is refused.
        `kept_on_failure`: tokens of the update itself to retry, with the settlement, when it
        fails. A settlement giving back more than the stored count holds (its document erased
        since: `UsageChange`) is dropped, and the update made again without it."""
        key = (tenant, scope, window.key)
        while True:
            settled = self._take(key)
            # The store keeps what a resend needs only for an update named by its caller
            # (`CounterStore`): one that carries something to retry when it fails.
            write_id = new_write_id() if settled or kept_on_failure else None
            try:
                result = await update(settled, write_id)
            except BaseException as exc:
                # It may have been applied all the same: kept under its id, retried alone
                # (`_Pending`). After a cancellation only a positive settlement is kept:
                # SQLite, which keeps no ids, may still commit the cancelled update, and a
                # negative one applied twice would make the limit looser (a positive one only
                # stricter).
                if isinstance(exc, Exception):
                    self._defer(tenant, scope, window, settled + kept_on_failure, sent_as=write_id)
                elif settled > 0:
                    self._defer(tenant, scope, window, settled, sent_as=write_id)
                raise
            if result.allowed:
                return result
            if settled < 0 and isinstance(result, UsageResult) and result.refused == "below_zero":
                self._dropped(tenant, scope, window, settled, _NOT_HELD)
                continue
            self._defer(tenant, scope, window, settled)  # refused: nothing was applied
            return result

    async def _write(
        self,
        tenant: bool,
        scope: str,
        window: Window,
        amount: int,
        write_id: str,
        *,
        resend: bool = False,
    ) -> bool:
        """Whether it was applied: tokens given back that the stored count does not hold are
        refused (`UsageChange`)."""
        if tenant:
            counted = await self._counters.add_to_counter(
                scope, window.key, amount, 0, window.ttl_seconds, write_id=write_id, resend=resend
            )
            return counted.allowed
        change = UsageChange(minute=0, ttl_seconds=window.ttl_seconds, tokens=amount)
        used = await self._counters.add_usage(
            scope, window.key, change, write_id=write_id, resend=resend
        )
        return used.allowed

    def _take(self, key: _Key) -> int:
        """The scope's pending amount never sent, to fold into an update (`_Pending`)."""
        pending = self._pending.get(key)
        if pending is None:
            return 0
        amount, pending.amount = pending.amount, 0
        if not pending.sent:
            del self._pending[key]
        return amount

    def _peek(self, key: _Key) -> int:
        pending = self._pending.get(key)
        return pending.total if pending is not None else 0

    def _defer(
        self,
        tenant: bool,
        scope: str,
        window: Window,
        amount: int,
        sent_as: str | None = None,
        *,
        has_room: bool = False,
    ) -> None:
        """Keep `amount` for later: never sent, or (`sent_as`) carried by that failed write.
        `has_room`: the scope is far from its limit, so it may wait for the next update long."""
        if amount == 0:
            return
        key = (tenant, scope, window.key)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(tenant, scope, window)
        if sent_as is None:
            pending.amount += amount
        else:
            pending.sent.append(_Sent(sent_as, amount))
        pending.touched = time.monotonic()
        pending.settle_after = self._settle_with_room_after if has_room else self._settle_after
        if not pending.amount and not pending.sent:
            del self._pending[key]
        self._ensure_flusher()

    def _claim(self, turn: Hashable | None) -> _Upfront | None:
        if turn is None:
            return None
        held = self._held.get(turn)
        if not held:
            return None
        upfront = held.pop(0)
        if not held:
            del self._held[turn]
        return upfront

    def _expire_held(self, now: float) -> None:
        for turn, held in list(self._held.items()):
            kept: list[_Upfront] = []
            for upfront in held:
                if now - upfront.at >= self._claim_within:
                    self._defer(False, upfront.scope, upfront.window, -upfront.amount)
                else:
                    kept.append(upfront)
            if kept:
                self._held[turn] = kept
            else:
                del self._held[turn]

    def _ensure_flusher(self) -> None:
        if self._stopping.is_set() or (self._flusher is not None and not self._flusher.done()):
            return
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush_periodically(), name="quota-settlements"
        )

    async def _flush_periodically(self) -> None:
        """Runs while something is pending or held; a failed write is retried, backing off."""
        wait = _FLUSH_EVERY_SECONDS
        while (self._pending or self._held) and not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)
                return  # close() takes over
            except TimeoutError:
                pass
            self._expire_held(time.monotonic())
            failed = await self._flush(everything=False)
            wait = min(wait * 2, _RETRY_AT_MOST_SECONDS) if failed else _FLUSH_EVERY_SECONDS

    async def _flush(self, everything: bool) -> int:
        """Write what is pending: everything, or what has waited its `settle_after`."""
        now = time.monotonic()
        due = [
            self._pending.pop(key)
            for key, pending in list(self._pending.items())
            if everything or now - pending.touched >= pending.settle_after
        ]
        if not due:
            return 0
        limit = asyncio.Semaphore(_FLUSH_CONCURRENCY)

        async def write(pending: _Pending) -> bool:
            async with limit:
                if pending.amount:
                    # From now on it is this write's, under its id, until it is written.
                    pending.sent.append(_Sent(new_write_id(), pending.amount, tried=False))
                    pending.amount = 0
                try:
                    while pending.sent:
                        await self._write_sent(pending, pending.sent[0])
                        pending.sent.pop(0)
                    return True
                except BaseException as exc:
                    # Kept (merged with anything deferred meanwhile) for the next round. Only
                    # `close` cancels a flush (its time is up): nothing is retried after that,
                    # so what is restored then only counts in what the shutdown gave up.
                    self._restore(pending)
                    if not isinstance(exc, Exception):
                        raise
                    return False

        written = await asyncio.gather(*(write(p) for p in due))
        failed = written.count(False)
        if failed:
            log.warning(
                "quota settlements could not be written; kept for a retry",
                extra={"event": "quota_settlement_retry", "failed": failed},
            )
        return failed

    async def _write_sent(self, pending: _Pending, sent: _Sent) -> None:
        """Write `sent` under its id (`_Sent`): written, found written, or dropped and logged."""
        resend = sent.tried and sent.amount < 0
        sent.tried = True
        where = (pending.tenant, pending.scope, pending.window)
        try:
            applied = await self._write(*where, sent.amount, sent.write_id, resend=resend)
        except UpdateOutcomeUnknown as exc:
            self._dropped(*where, sent.amount, exc.reason)
            return
        if not applied:
            self._dropped(*where, sent.amount, _NOT_HELD)

    def _dropped(self, tenant: bool, scope: str, window: Window, tokens: int, reason: str) -> None:
        """Tokens given back that are not written: the stored total keeps them until the day
        ends (stricter, never looser)."""
        log.warning(
            "a quota settlement was dropped",
            extra={
                "event": "quota_settlement_dropped",
                "scope_kind": "tenant" if tenant else "user",
                # A tenant is named as its refusals are; a user's scope holds the user id.
                **({"scope": scope} if tenant else {}),
                "window": window.key,
                "tokens": tokens,
                "reason": reason,
            },
        )

    def _restore(self, pending: _Pending) -> None:
        key = (pending.tenant, pending.scope, pending.window.key)
        current = self._pending.get(key)
        if current is None:
            self._pending[key] = pending
            return
        current.amount += pending.amount
        current.sent[:0] = pending.sent
        if not current.amount and not current.sent:
            del self._pending[key]

    async def _exceeded(
        self,
        kind: LimitKind,
        scope: str,
        limit: int,
        used: int,
        window: Window,
        now: datetime,
        *,
        user_id: str = "",
        requested: int = 0,
        record: bool = True,
    ) -> QuotaExceeded:
        """`user_id` for a user's limit: the audit record names the user (RefusalLog).
        `record` False: the refusal is not audited nor logged (counted by `_first_this_minute`)."""
        if record:
            await self._refusals.record(
                "quota_exceeded",
                scope,
                user_id=user_id,
                limit=kind.value,
                window=window.key,
                value=used,
            )
        return QuotaExceeded(
            kind, scope, limit, used, window.resets_at, window.seconds_left(now), requested
        )


def _pick(override: int | None, default: int) -> int:
    return default if override is None else override
