"""Cosmos DB: an erasure lowers a shared conversation's summary with a write conditional on the
ETag it read, so a turn that writes the summary between that read and the write is kept (SQLite
does both in one transaction, so no turn can come between)."""

from __future__ import annotations

from typing import Any

import pytest

from storage.cosmos import CosmosConfig, CosmosStore
from storage.models import Role, Usage
from tests.cosmos_server import CosmosServer
from tests.storage.support import T0, cosmos_config, delta, message

pytestmark = pytest.mark.cosmos

GROUP = "group-1"
OWNER = f"shared:{GROUP}"


async def _turn(store: CosmosStore, seq: int, user_id: str, tokens: int) -> None:
    await store.add_message(message(GROUP, seq, user_id=user_id))
    await store.add_message(
        message(GROUP, seq + 1, role=Role.ASSISTANT, user_id=user_id, usage=Usage(prompt=tokens))
    )
    await store.apply_summary_delta(delta(GROUP, OWNER, at=T0, messages=2, prompt_tokens=tokens))


class TurnDuringErasure(CosmosStore):
    """A store whose erasure, right after it read the shared summary it is about to lower, lets
    another app instance (`other`) run a turn in that conversation."""

    def __init__(self, config: CosmosConfig, other: CosmosStore) -> None:
        super().__init__(config)
        self._other = other
        self.reads = 0

    async def _shared_summary(
        self, conversation_id: str, user_id: str, op: str
    ) -> dict[str, Any] | None:
        found = await super()._shared_summary(conversation_id, user_id, op)
        self.reads += 1
        if self.reads == 2:  # the first read is for the title, the second for the counts
            await _turn(self._other, 9, "lin", 1000)
        return found


async def test_a_turn_written_while_an_erasure_lowers_the_summary_is_kept(
    cosmos_server: CosmosServer,
) -> None:
    config = cosmos_config(cosmos_server)
    other = CosmosStore(config)
    await other.open()
    store = TurnDuringErasure(config, other)
    await store.open()
    try:
        await _turn(other, 1, "grace", 100)
        await _turn(other, 3, "ada", 10)

        await store.delete_user("ada")

        summary = await store.get_summary(OWNER, GROUP)
        assert store.reads == 2
        assert summary is not None
        # Grace's turn and Lin's, without Ada's.
        assert (summary.message_count, summary.prompt_tokens) == (4, 1100)
    finally:
        await store.close()
        await other.close()
