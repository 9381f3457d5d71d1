"""A stored MESSAGE that cannot be read, looked up by its id (the redelivery check before a turn,
a rating of it), on both stores: taken as missing, never an error whose text would quote the
document (pydantic's errors quote the values they refused: the user's words). Logged at ERROR by
the conversation's reference, never the words or a user id."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from storage.base import Store
from storage.models import Feedback, Role, conversation_ref
from tests.storage.support import message
from tests.storage.test_unreadable_messages_in_user_data_contract import _spoil_message
from tests.storage.test_unreadable_summaries_beyond_the_list_contract import (
    ALICE,
    _logged,
    _nothing_private_logged,
)

TAKEN = "an unreadable stored message was taken as missing"


@pytest.mark.parametrize("not_json", [True, False])
async def test_an_unreadable_message_looked_up_by_its_id_is_taken_as_missing(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    not_json: bool,
) -> None:
    await store.add_message(message("conv-a", 1, user_id=ALICE))
    await _spoil_message(request, backend, store, tmp_path, "conv-a", "user-1", not_json=not_json)
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="storage"):
        assert await store.get_message("conv-a", "user-1") is None

    [logged] = _logged(caplog, TAKEN)
    assert logged.levelno == logging.ERROR
    assert logged.conversation == conversation_ref("conv-a")  # type: ignore[attr-defined]
    _nothing_private_logged(caplog, ALICE, "conv-a")


async def test_a_rating_of_an_unreadable_message_is_not_stored_and_raises_nothing(
    request: pytest.FixtureRequest,
    backend: str,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await store.add_message(message("conv-a", 2, role=Role.ASSISTANT, user_id=ALICE))
    await _spoil_message(request, backend, store, tmp_path, "conv-a", "assistant-2", not_json=False)
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="storage"):
        changed = await store.set_feedback(
            "conv-a", "assistant-2", Feedback(reaction="dislike", user_id=ALICE)
        )

    assert changed is None
    assert _logged(caplog, TAKEN)
    _nothing_private_logged(caplog, ALICE, "conv-a")
