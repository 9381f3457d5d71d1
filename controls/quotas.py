"""Per-user request rate and daily tokens, per-tenant daily tokens, on the store's atomic
counters: several app instances over one store share them.

Tokens are reserved before the model call (prompt estimate + max output tokens) and settled
after it with the real usage, so concurrent turns cannot overshoot a limit by more than one
turn's estimate and the day's total ends up exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from controls.audit import RefusalLog
from controls.clock import Clock, utc_now
from controls.policy import TenantPolicies, normalize_tenant
from controls.windows import Window, day_window, minute_window
from storage.base import CounterStore
from storage.ids import safe_id


class LimitKind(StrEnum):
    USER_REQUESTS_PER_MINUTE = "user_requests_per_minute"
    USER_TOKENS_PER_DAY = "user_tokens_per_day"
    TENANT_TOKENS_PER_DAY = "tenant_tokens_per_day"


@dataclass(frozen=True)
class QuotaLimits:
    """0 = unlimited (still counted, for `/usage`)."""

    user_requests_per_minute: int = 0
    user_tokens_per_day: int = 0
    tenant_tokens_per_day: int = 0


@dataclass(frozen=True)
class QuotaExceeded:
    kind: LimitKind
    scope: str
    limit: int
    used: int
    resets_at: datetime
    seconds_left: int


@dataclass(frozen=True)
class TokenReservation:
    user_scope: str
    tenant_scope: str | None
    window: Window
    amount: int


@dataclass(frozen=True)
class UsageReport:
    limits: QuotaLimits
    requests_this_minute: int
    minute_resets_at: datetime
    tokens_today: int
    day_resets_at: datetime
    tenant_tokens_today: int | None


def user_scope(user_id: str) -> str:
    return safe_id(f"user:{user_id or 'unknown'}")


def tenant_scope(tenant_id: str) -> str | None:
    return safe_id(f"tenant:{normalize_tenant(tenant_id)}") if tenant_id.strip() else None


class Quotas:
    def __init__(
        self,
        counters: CounterStore,
        refusals: RefusalLog,
        defaults: QuotaLimits,
        tenants: TenantPolicies | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._counters = counters
        self._refusals = refusals
        self._defaults = defaults
        self._tenants = tenants or TenantPolicies()
        self._clock = clock

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

    async def count_request(self, user_id: str, tenant_id: str) -> QuotaExceeded | None:
        """One more request in this minute, unless that goes over the limit (then not counted)."""
        now = self._clock()
        window = minute_window(now)
        limit = self.limits_for(tenant_id).user_requests_per_minute
        scope = user_scope(user_id)
        result = await self._counters.add_to_counter(
            scope, window.key, 1, limit, window.ttl_seconds
        )
        if result.allowed:
            return None
        return await self._exceeded(
            LimitKind.USER_REQUESTS_PER_MINUTE, scope, limit, result.value, window, now
        )

    async def reserve_tokens(
        self, user_id: str, tenant_id: str, amount: int
    ) -> TokenReservation | QuotaExceeded:
        now = self._clock()
        window = day_window(now)
        limits = self.limits_for(tenant_id)
        amount = max(0, amount)
        user = user_scope(user_id)
        mine = await self._counters.add_to_counter(
            user, window.key, amount, limits.user_tokens_per_day, window.ttl_seconds
        )
        if not mine.allowed:
            return await self._exceeded(
                LimitKind.USER_TOKENS_PER_DAY,
                user,
                limits.user_tokens_per_day,
                mine.value,
                window,
                now,
            )
        # An unlimited tenant is not counted: nothing reads that total, and it would cost two
        # more store writes per turn (reserve and settle).
        tenant = tenant_scope(tenant_id) if limits.tenant_tokens_per_day else None
        if tenant is not None:
            theirs = await self._counters.add_to_counter(
                tenant, window.key, amount, limits.tenant_tokens_per_day, window.ttl_seconds
            )
            if not theirs.allowed:
                # Give the user's share back: nothing was spent.
                await self._counters.add_to_counter(
                    user, window.key, -amount, 0, window.ttl_seconds
                )
                return await self._exceeded(
                    LimitKind.TENANT_TOKENS_PER_DAY,
                    tenant,
                    limits.tenant_tokens_per_day,
                    theirs.value,
                    window,
                    now,
                )
        return TokenReservation(user, tenant, window, amount)

    async def settle(self, reservation: TokenReservation, used_tokens: int) -> None:
        """Replace the estimate by the real usage, in the window it was reserved in (a turn
        that crosses midnight counts for the day it started). Always applies (limit 0)."""
        delta = max(0, used_tokens) - reservation.amount
        if delta == 0:
            return
        window = reservation.window
        await self._counters.add_to_counter(
            reservation.user_scope, window.key, delta, 0, window.ttl_seconds
        )
        if reservation.tenant_scope is not None:
            await self._counters.add_to_counter(
                reservation.tenant_scope, window.key, delta, 0, window.ttl_seconds
            )

    async def usage(
        self, user_id: str, tenant_id: str, *, with_tenant: bool = False
    ) -> UsageReport:
        now = self._clock()
        minute, day = minute_window(now), day_window(now)
        scope = user_scope(user_id)
        tenant = tenant_scope(tenant_id)
        tenant_tokens = None
        if with_tenant and tenant is not None:
            tenant_tokens = await self._counters.read_counter(tenant, day.key)
        return UsageReport(
            limits=self.limits_for(tenant_id),
            requests_this_minute=await self._counters.read_counter(scope, minute.key),
            minute_resets_at=minute.resets_at,
            tokens_today=await self._counters.read_counter(scope, day.key),
            day_resets_at=day.resets_at,
            tenant_tokens_today=tenant_tokens,
        )

    async def _exceeded(
        self, kind: LimitKind, scope: str, limit: int, used: int, window: Window, now: datetime
    ) -> QuotaExceeded:
        await self._refusals.record(
            "quota_exceeded", scope, limit=kind.value, window=window.key, value=used
        )
        return QuotaExceeded(kind, scope, limit, used, window.resets_at, window.seconds_left(now))


def _pick(override: int | None, default: int) -> int:
    return default if override is None else override
