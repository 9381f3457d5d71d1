"""A stored audit record that cannot be read (a corrupted row, a hand edit), written past the
store: the audit list skips it and logs it by its record id, never its contents, and paging goes
on past it, each readable record once, on both stores."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import cast

import pytest
from azure.cosmos.aio import CosmosClient

from storage.base import Store
from storage.cosmos import CosmosStore
from tests.cosmos_server import CosmosServer
from tests.storage.test_audit_contract import record

WORDS = "what the admin read"
SKIPPED = "an unreadable stored audit record was skipped"


async def spoil_audit(request: pytest.FixtureRequest, where: Path | str, record_id: str) -> None:
    """Makes a stored audit record unreadable behind the store's back, with `WORDS` in it: in
    the SQLite file `where` the row's text is no longer JSON; in the Cosmos DB database named
    `where` (on the test's protocol server; an item is always a JSON object) its detail is text
    and its actor a number."""
    if isinstance(where, Path):
        with sqlite3.connect(where) as db:
            changed = db.execute(
                "UPDATE audit SET doc = ? WHERE id = ?",
                ('{"target": "' + WORDS + '", "detail": ', record_id),
            ).rowcount
        assert changed == 1
        return
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    async with CosmosClient(server.endpoint, server.key, connection_verify=False) as client:
        container = client.get_database_client(where).get_container_client("audit")
        [item] = [
            doc
            async for doc in container.query_items(
                "SELECT * FROM c WHERE c.id = @id",
                parameters=[{"name": "@id", "value": record_id}],
            )
        ]
        await container.replace_item(record_id, {**item, "detail": WORDS, "actor": 42})


async def _pages(store: Store, limit: int) -> list[list[str]]:
    """The record ids of every page, following the continuation tokens."""
    pages: list[list[str]] = []
    continuation: str | None = None
    while True:
        records, continuation = await store.list_audit(limit, continuation)
        pages.append([r.id for r in records])
        if continuation is None or len(pages) > 10:
            return pages


@pytest.fixture
async def spoiled(
    request: pytest.FixtureRequest, backend: str, store: Store, tmp_path: Path
) -> Store:
    """audit-05 (newest) .. audit-01, audit-04 and audit-02 unreadable; audit-03 and audit-02
    share a time, so the id breaks the tie."""
    for i, minutes in ((1, 1), (2, 3), (3, 3), (4, 4), (5, 5)):
        await store.append_audit(record(i, minutes))
    where = (
        tmp_path / "chat.db" if backend == "sqlite" else cast(CosmosStore, store)._config.database
    )
    await spoil_audit(request, where, "audit-04")
    await spoil_audit(request, where, "audit-02")
    return store


async def test_unreadable_audit_records_are_skipped_and_paging_lists_every_readable_one_once(
    spoiled: Store,
) -> None:
    assert await _pages(spoiled, 100) == [["audit-05", "audit-03", "audit-01"]]
    # A page may hold fewer records than asked for; the cursor is the last record read, so a
    # page of only unreadable ones still leads on.
    assert await _pages(spoiled, 2) == [["audit-05"], ["audit-03"], ["audit-01"]]
    assert await _pages(spoiled, 1) == [["audit-05"], [], ["audit-03"], [], ["audit-01"]]
    assert await _pages(spoiled, 3) == [["audit-05", "audit-03"], ["audit-01"]]


async def test_an_unreadable_audit_record_is_logged_by_its_id_not_its_contents(
    spoiled: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="storage"):
        records, _ = await spoiled.list_audit(100)

    assert [r.id for r in records] == ["audit-05", "audit-03", "audit-01"]
    skipped = [r for r in caplog.records if r.getMessage() == SKIPPED]
    assert [vars(r)["record"] for r in skipped] == ["audit-04", "audit-02"]
    assert all(r.levelno == logging.ERROR for r in skipped)
    assert all(vars(r)["errors"] >= 1 for r in skipped)
    for logged in caplog.records:
        text = json.dumps(vars(logged), default=str)
        assert WORDS not in text
        assert "admin@contoso.com" not in text and "conv-4" not in text
