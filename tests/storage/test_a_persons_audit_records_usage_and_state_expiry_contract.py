"""What a person's data export and erasure reach beyond their conversations, on both stores: the
audit records about them (found by the targets the caller names: their pseudonyms), their quota
usage documents (by the scopes the caller names), and state whose retention counts from a time the
caller gives (a message waiting for consent, from when it was asked), however often it is written
again."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.base import Store
from storage.cosmos import CosmosStore
from storage.models import AuditRecord, UsageChange
from storage.sqlite import SqliteStore
from tests.storage.support import T0, MakeStore

DAY = 86400
RETENTION_DAYS = 30


def _record(number: int, target: str, minutes: int) -> AuditRecord:
    at = T0 + timedelta(minutes=minutes)
    return AuditRecord(
        id=f"audit-{number:02d}",
        day=at.date().isoformat(),
        at=at,
        actor="admin@contoso.com",
        action="export_user",
        target=target,
        detail={"reason": "DSAR-1"},
        client_ip="10.0.0.1",
    )


def _turn(requests: int = 1, tokens: int = 700) -> UsageChange:
    return UsageChange(minute=29_000_000, ttl_seconds=2 * DAY, requests=requests, tokens=tokens)


async def _expiry(store: Store, tmp_path: Path, key: str) -> float:
    """When the store lets a state document expire (seconds since the epoch): SQLite's
    `expires_at`; a Cosmos DB item's last write (`_ts`) plus its `ttl`."""
    if isinstance(store, CosmosStore):
        item = await store._container("botstate").read_item(key, key)
        return float(item["_ts"] + item["ttl"])
    with sqlite3.connect(tmp_path / "chat.db") as db:
        row = db.execute("SELECT expires_at FROM botstate WHERE key = ?", (key,)).fetchone()
    return float(row[0])


async def test_the_audit_records_about_a_person_are_found_by_their_targets_newest_first_in_pages(
    store: Store,
) -> None:
    # Alice under her two ids' pseudonyms, across three days; Bob, and a conversation.
    records = [
        _record(1, "p-alice", 60 * 30),
        _record(2, "p-bob", 5),
        _record(3, "p-alice-dl", 10),
        _record(4, "p-alice", 60 * 24 * 2),
        _record(5, "conv-1", 20),
        _record(6, "p-alice", 10),  # the same time as 3: the id breaks the tie
        _record(7, "p-alice-dl", 1),
    ]
    for record in records:
        await store.append_audit(record)

    pages = [page async for page in store.audit_records_about(["p-alice", "p-alice-dl"], 2)]

    assert [len(page) for page in pages] == [2, 2, 1]
    found = [record for page in pages for record in page]
    assert [r.id for r in found] == ["audit-04", "audit-01", "audit-06", "audit-03", "audit-07"]
    assert found[-1] == records[6]  # as appended
    assert [p async for p in store.audit_records_about(["p-nobody"], 2)] == []
    assert [p async for p in store.audit_records_about([], 2)] == []


async def test_a_persons_usage_is_read_and_deleted_by_the_scopes_named_and_no_other(
    store: Store,
) -> None:
    await store.add_usage("user:alice", "d:2025-03-01", _turn())
    await store.add_usage("user:alice", "d:2025-03-02", _turn(tokens=300))
    await store.add_usage("user:dl_alice", "d:2025-03-02", _turn(requests=2))
    await store.add_to_counter("user:alice", "m:2025-03-02T10:05", 1, 0, 300)
    await store.add_usage("user:bob", "d:2025-03-02", _turn())
    await store.add_to_counter("tenant:contoso", "d:2025-03-02", 700, 0, 2 * DAY)
    alice = ["user:dl_alice", "user:alice"]

    found = await store.scope_documents(alice)

    usage = {"minute": 29_000_000}
    assert found == [
        {"type": "usage", "scope": "user:alice", "day": "d:2025-03-01", "tokens": 700}
        | usage
        | {"requests": 1},
        {"type": "usage", "scope": "user:alice", "day": "d:2025-03-02", "tokens": 300}
        | usage
        | {"requests": 1},
        {"type": "counter", "scope": "user:alice", "window": "m:2025-03-02T10:05", "total": 1},
        {"type": "usage", "scope": "user:dl_alice", "day": "d:2025-03-02", "tokens": 700}
        | usage
        | {"requests": 2},
    ]
    assert await store.delete_scopes(alice) == 4
    assert await store.scope_documents(alice) == []
    assert await store.delete_scopes(alice) == 0
    # Others' usage stays.
    assert (await store.read_usage("user:bob", "d:2025-03-02")).tokens == 700
    assert await store.read_counter("tenant:contoso", "d:2025-03-02") == 700
    assert await store.scope_documents([]) == []


async def test_state_expires_counted_from_the_time_given_however_often_it_is_written(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = await make_store(retention_days=RETENTION_DAYS)
    asked = datetime.now(UTC) - timedelta(days=10)

    await store.write_state("waiting", {"v": 1}, None, owner="alice", expires=True)
    written = await _expiry(store, tmp_path, "waiting")
    await store.write_state(
        "waiting", {"v": 2}, None, owner="alice", expires=True, expires_from=asked
    )
    rewritten = await _expiry(store, tmp_path, "waiting")
    await store.write_state(
        "waiting", {"v": 3}, None, owner="alice", expires=True, expires_from=asked
    )
    again = await _expiry(store, tmp_path, "waiting")

    # Without a time, from the write; with one, from that time, every write alike.
    assert abs(written - (time.time() + RETENTION_DAYS * DAY)) < 5
    expected = asked.timestamp() + RETENTION_DAYS * DAY
    assert abs(rewritten - expected) < 3
    assert abs(again - expected) < 3
    # Never later than the write would make it (a time in the future gains nothing).
    await store.write_state(
        "waiting", {"v": 4}, None, expires=True, expires_from=datetime.now(UTC) + timedelta(days=9)
    )
    assert await _expiry(store, tmp_path, "waiting") < time.time() + RETENTION_DAYS * DAY + 3


async def test_sqlite_finds_the_audit_records_an_earlier_release_appended(tmp_path: Path) -> None:
    """Appended before records kept their target in a column: given it at the next open."""
    earlier = _record(1, "p-alice", 5)
    with sqlite3.connect(tmp_path / "chat.db") as db:
        db.execute("CREATE TABLE audit (id TEXT PRIMARY KEY, at TEXT NOT NULL, doc TEXT NOT NULL)")
        db.execute(
            "INSERT INTO audit VALUES (?, ?, ?)",
            (earlier.id, earlier.at.isoformat(), json.dumps(earlier.to_doc())),
        )
        db.execute("INSERT INTO audit VALUES ('broken', '2025-03-01', 'not json')")
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    try:
        await store.append_audit(_record(2, "p-alice", 10))
        pages = [page async for page in store.audit_records_about(["p-alice"], 10)]
        assert [[r.id for r in page] for page in pages] == [["audit-02", "audit-01"]]
    finally:
        await store.close()


async def test_state_past_its_expiry_is_not_read_and_its_key_can_be_created_again(
    make_store: MakeStore, tmp_path: Path
) -> None:
    """A message that waited for consent longer than the retention is gone at once, not only at
    the next purge: Cosmos DB stops returning an item whose ttl has passed (the store gives such
    an item the shortest ttl, one second; the local protocol server does not expire items, so
    Cosmos is checked by that ttl) and SQLite reads and writes as if its row were gone."""
    store = await make_store(retention_days=1)
    asked = datetime.now(UTC) - timedelta(days=3)
    await store.write_state(
        "waiting", {"waiting": "words"}, None, owner="alice", expires=True, expires_from=asked
    )
    await store.write_state("kept", {"v": 1}, None, owner="alice", expires=True)
    if isinstance(store, CosmosStore):
        item = await store._container("botstate").read_item("waiting", "waiting")
        assert item["ttl"] == 1
        return

    assert set(await store.read_state(["waiting", "kept"])) == {"kept"}
    await store.write_state("waiting", {"waiting": "again"}, None, expires=True, create_only=True)
    [(document, _)] = (await store.read_state(["waiting"])).values()
    assert document == {"waiting": "again"}
