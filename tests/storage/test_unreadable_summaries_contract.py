"""A stored conversation summary that cannot be read (a hand edit, a corrupted row, a document of
an incompatible version), written past the store: the admin list skips it and logs it by the
conversation's reference, as unreadable messages are skipped, on both stores."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from azure.cosmos.aio import CosmosClient

from storage.base import Store
from storage.cosmos import CosmosStore
from storage.models import SummaryQuery, conversation_ref
from tests.cosmos_server import CosmosServer
from tests.storage.support import T0, delta

WORDS = "words of the user"
SKIPPED = "an unreadable stored conversation summary was skipped"


async def _seed(store: Store) -> None:
    """c1 (oldest) .. c5 (newest), c2 and c4 owned by user-2."""
    for n in range(1, 6):
        user = "user-2" if n % 2 == 0 else "user-1"
        await store.apply_summary_delta(
            delta(f"c{n}", user, title=f"title {n}", at=T0 + timedelta(minutes=n), messages=2)
        )


async def _spoil(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    conversation_id: str,
    user_id: str,
    changes: dict[str, Any] | str,
) -> None:
    """Changes the stored summary behind the store's back: `changes` are fields to set (in the
    stored camelCase) or, on SQLite, the whole stored text."""
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "chat.db") as db:
            if isinstance(changes, str):
                doc = changes
            else:
                [(stored,)] = db.execute(
                    "SELECT doc FROM conversations WHERE conversation_id = ?", (conversation_id,)
                )
                doc = json.dumps({**json.loads(stored), **changes})
            db.execute(
                "UPDATE conversations SET doc = ? WHERE conversation_id = ?",
                (doc, conversation_id),
            )
        return
    assert isinstance(changes, dict), "a Cosmos DB item is always a JSON object"
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    database = cast(CosmosStore, store)._config.database
    async with CosmosClient(server.endpoint, server.key, connection_verify=False) as client:
        container = client.get_database_client(database).get_container_client("conversations")
        item = await container.read_item(conversation_id, partition_key=user_id)
        await container.replace_item(conversation_id, {**item, **changes})


async def _ids(store: Store, query: SummaryQuery, page_size: int) -> list[list[str]]:
    """The conversation ids of every page, following the continuation tokens."""
    pages: list[list[str]] = []
    continuation: str | None = None
    while True:
        page = await store.list_summaries(query, page_size, continuation)
        pages.append([s.conversation_id for s in page.items])
        continuation = page.continuation
        if continuation is None:
            return pages


@pytest.fixture
async def spoiled(
    request: pytest.FixtureRequest, backend: str, store: Store, tmp_path: Path
) -> Store:
    """The seeded store with c4 and c2 unreadable: on SQLite c4 is not even JSON."""
    await _seed(store)
    c4: dict[str, Any] | str = {"flagReasons": WORDS, "title": WORDS}
    if backend == "sqlite":
        c4 = '{"title": "' + WORDS + '", "messageCount": '
    await _spoil(request, backend, store, tmp_path, "c4", "user-2", c4)
    await _spoil(
        request, backend, store, tmp_path, "c2", "user-2", {"messageCount": WORDS, "title": WORDS}
    )
    return store


async def test_unreadable_summaries_are_skipped_and_every_readable_one_is_listed_once(
    spoiled: Store,
) -> None:
    assert await _ids(spoiled, SummaryQuery(), 100) == [["c5", "c3", "c1"]]
    # The cursor is a readable summary's, whichever rows around it cannot be read.
    assert await _ids(spoiled, SummaryQuery(), 2) == [["c5", "c3"], ["c1"]]
    assert await _ids(spoiled, SummaryQuery(), 1) == [["c5"], ["c3"], ["c1"]]
    assert await _ids(spoiled, SummaryQuery(user_ids=["user-2"]), 1) == [[]]
    assert await _ids(spoiled, SummaryQuery(since=T0 + timedelta(minutes=2)), 1) == [
        ["c5"],
        ["c3"],
    ]


async def test_an_unreadable_summary_is_logged_by_its_conversation_reference_not_its_contents(
    spoiled: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="storage.models"):
        await spoiled.list_summaries(SummaryQuery(), 100)
    skipped = [r for r in caplog.records if r.getMessage() == SKIPPED]
    assert [vars(r)["conversation"] for r in skipped] == [
        conversation_ref("c4"),
        conversation_ref("c2"),
    ]
    assert all(r.levelno == logging.ERROR for r in skipped)
    assert "messageCount: int_parsing" in vars(skipped[1])["problems"]
    for record in caplog.records:
        text = str(vars(record))
        assert WORDS not in text and "user-2" not in text
