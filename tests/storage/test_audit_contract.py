"""AuditStore contract: append-only, listed newest first, paged."""

from __future__ import annotations

from datetime import timedelta

from storage.base import Store
from storage.models import AuditRecord
from tests.storage.support import T0


def record(i: int, minutes: int) -> AuditRecord:
    at = T0 + timedelta(minutes=minutes)
    return AuditRecord(
        id=f"audit-{i:02d}",
        day=at.date().isoformat(),
        at=at,
        actor="admin@contoso.com",
        action="conversation.read",
        target=f"conv-{i}",
        detail={"reason": "review"},
        client_ip="10.0.0.1",
    )


async def test_append_and_list_newest_first(store: Store) -> None:
    records = [record(1, 5), record(2, 60 * 30), record(3, 1)]  # spans two days
    for r in records:
        await store.append_audit(r)
    listed, token = await store.list_audit(10)
    assert token is None
    assert [r.id for r in listed] == ["audit-02", "audit-01", "audit-03"]
    assert listed[0] == records[1]


async def test_list_is_empty_without_records(store: Store) -> None:
    assert await store.list_audit(10) == ([], None)


async def test_paging_returns_every_record_once_in_order(store: Store) -> None:
    # Several records share a timestamp: the id breaks the tie.
    for i in range(11):
        await store.append_audit(record(i, (i // 3) * 60 * 9))
    seen: list[AuditRecord] = []
    token: str | None = None
    for _ in range(20):
        page, token = await store.list_audit(3, token)
        assert len(page) <= 3
        seen.extend(page)
        if token is None:
            break
    assert sorted(r.id for r in seen) == [f"audit-{i:02d}" for i in range(11)]
    assert len(seen) == 11
    keys = [(r.at, r.id) for r in seen]
    assert keys == sorted(keys, reverse=True)
