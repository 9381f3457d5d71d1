"""The prompt of an answer the content filter blocked is not sent to the model again; the prompt of
an answer withheld because the filter could not run is (like any prompt that got no answer, it is
what "try again" refers to). The simulator's reply says how many earlier messages it was sent.
Real HTTP, both stores, the store wrapped to count its calls: the window is still one query and a
normal turn writes no more than before."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import FaultyAppFactory
from tests.faults import FaultyStore
from tests.support import RecordingConnector, message_activity, settle

CHAT_OPERATIONS = ("add_message", "replace_message", "recent_messages", "apply_summary_delta")


async def earlier_messages_seen(
    client: TestClient[Any, Any], connector: RecordingConnector, store: FaultyStore, text: str
) -> tuple[int | None, Counter[str]]:
    """Sends one message; the number of earlier messages the model was sent (None: no model
    answer) and the store calls the turn made."""
    before = Counter({op: store.calls[op] for op in CHAT_OPERATIONS})
    replies = len(connector.messages())
    response = await client.post("/api/messages", json=message_activity(connector.url, text))
    assert response.status == 202
    reply = (await connector.wait_for_messages(replies + 1))[-1]
    await settle(client)
    calls = Counter({op: store.calls[op] - before[op] for op in CHAT_OPERATIONS})
    found = re.search(r"the (\d+) earlier messages", reply["text"])
    return (int(found.group(1)) if found else None), +calls


NORMAL_TURN = Counter({"add_message": 2, "recent_messages": 1, "apply_summary_delta": 1})


async def test_the_prompt_of_a_blocked_answer_is_not_resent_on_later_turns(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector
) -> None:
    client, store = await make_faulty_app()

    blocked, _ = await earlier_messages_seen(client, connector, store, "story [cf:output:sexual]")
    first, first_calls = await earlier_messages_seen(client, connector, store, "next 1")
    second, second_calls = await earlier_messages_seen(client, connector, store, "next 2")

    assert blocked is None, "the answer was withheld"
    assert (first, second) == (0, 2)
    assert first_calls == NORMAL_TURN and second_calls == NORMAL_TURN


async def test_the_prompt_of_an_answer_withheld_on_a_filter_error_stays_for_a_retry(
    make_faulty_app: FaultyAppFactory, connector: RecordingConnector
) -> None:
    client, store = await make_faulty_app(FILTER_ERROR_POLICY="withhold")

    withheld, _ = await earlier_messages_seen(
        client, connector, store, "hello [cf:output-filter-error]"
    )
    retry, calls = await earlier_messages_seen(client, connector, store, "try again")

    assert withheld is None, "the answer was withheld"
    assert retry == 1, "the unanswered prompt, not the withheld answer"
    assert calls == NORMAL_TURN
