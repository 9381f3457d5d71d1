"""A user's erasure deletes their usage documents (admin: delete a user's data). A give-back (what
a reservation did not use) still pending then, on this instance or another, belongs to the day's
document that is gone, and the next turn counts on a new one that never held that reservation.
Given back there, it would take the new count below the real usage, even below zero (looser): it
is refused where the stored count does not hold it, and dropped with a `quota_settlement_dropped`
line (stricter); the turn that carries it is counted all the same.

The real `Quotas` on both real stores (SQLite and the Cosmos DB protocol server)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from controls.audit import RefusalLog
from controls.quotas import QuotaLimits, Quotas, TokenReservation, user_scope
from controls.windows import day_window
from storage.base import Store
from storage.models import UsageCounts
from tests.controls.support import OpenStore

UPFRONT = 7000
USER = user_scope("u")
NOW = datetime(2026, 11, 21, 10, 5, 10, tzinfo=UTC)
DAY = day_window(NOW).key
MINUTE = int(NOW.timestamp()) // 60


def make_quotas(store: Store, **options: Any) -> Quotas:
    limits = QuotaLimits(user_requests_per_minute=30, user_tokens_per_day=1_000_000)
    return Quotas(
        store,
        RefusalLog(store, lambda: NOW),
        limits,
        None,
        lambda: NOW,
        upfront_tokens=UPFRONT,
        settle_after_seconds=3600,  # only the test's flush() writes, when the test says
        **options,
    )


async def two_turns_at_once(quotas: Quotas) -> None:
    """Two turns counted before either settles, each using 400: -13200 pending."""
    reservations = []
    for turn in ("turn-1", "turn-2"):
        assert await quotas.count_request("u", "", turn) is None
        reservation = await quotas.reserve_tokens("u", "", 1500, turn)
        assert isinstance(reservation, TokenReservation)
        reservations.append(reservation)
    for reservation in reservations:
        await quotas.settle(reservation, 400)


def dropped(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "quota_settlement_dropped"]


async def test_a_give_back_pending_at_the_erasure_never_takes_the_new_days_count_below_zero(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store()
    quotas = make_quotas(store)
    try:
        await two_turns_at_once(quotas)
        await store.delete_scopes([USER])  # the user's erasure
        # Their next turn, on another instance: a new document holding its reservation only.
        other = make_quotas(await open_store())
        assert await other.count_request("u", "", "turn-3") is None

        with caplog.at_level(logging.WARNING, logger="controls.quotas"):
            assert await quotas.flush() == 0

        assert await store.read_usage(USER, DAY) == UsageCounts(
            tokens=UPFRONT, minute=MINUTE, requests=1
        )
        [line] = dropped(caplog)
        assert line.tokens == 2 * (400 - UPFRONT)  # type: ignore[attr-defined]
        assert line.scope_kind == "user"  # type: ignore[attr-defined]
        assert "erased" in line.reason  # type: ignore[attr-defined]
        await other.close()
    finally:
        await quotas.close()


async def test_the_next_turn_after_the_erasure_is_counted_without_the_pending_give_back(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """On the same instance the next turn's request count carries the pending give-back: more
    than that turn adds, it is dropped, and the turn is counted (not refused)."""
    store = await open_store()
    quotas = make_quotas(store)
    try:
        await two_turns_at_once(quotas)
        await store.delete_scopes([USER])

        with caplog.at_level(logging.WARNING, logger="controls.quotas"):
            assert await quotas.count_request("u", "", "turn-3") is None
            assert await quotas.flush() == 0

        assert await store.read_usage(USER, DAY) == UsageCounts(
            tokens=UPFRONT, minute=MINUTE, requests=1
        )
        [line] = dropped(caplog)
        assert line.tokens == 2 * (400 - UPFRONT)  # type: ignore[attr-defined]
    finally:
        await quotas.close()


async def test_a_give_back_smaller_than_the_next_turns_reservation_is_dropped_all_the_same(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Folded into the next turn's count, a give-back less than that count adds would leave a
    positive change: it must still be held by the stored count on its own, or that turn would
    be counted with less than its reservation (the day's limit looser by as much)."""
    store = await open_store()
    quotas = make_quotas(store)
    try:
        assert await quotas.count_request("u", "", "turn-1") is None
        reservation = await quotas.reserve_tokens("u", "", 5200, "turn-1")
        assert isinstance(reservation, TokenReservation)
        await quotas.settle(reservation, 5000)  # 2000 of the 7000 to give back, pending
        await store.delete_scopes([USER])

        with caplog.at_level(logging.WARNING, logger="controls.quotas"):
            assert await quotas.count_request("u", "", "turn-2") is None

        assert await store.read_usage(USER, DAY) == UsageCounts(
            tokens=UPFRONT, minute=MINUTE, requests=1
        )
        [line] = dropped(caplog)
        assert line.tokens == 5000 - UPFRONT  # type: ignore[attr-defined]
    finally:
        await quotas.close()
