"""A message the retention purge gave a shortened ttl (what was left of RETENTION_DAYS since its
last write) and that is written again by a patch: an edited prompt's answer marked, a rating
erased with its rater. The patch renews the item's `_ts`, so it must expire RETENTION_DAYS after
the patch: the shortened ttl and the purge's record go with it (or the ttl becomes the setting's,
where the container's defaultTtl is not it), or the item would expire early and the next purge,
finding the record of the setting of the day, would leave it so. The reviewer's steps: 30 days
changed to 60 on day 10 (the purge gives 50), the prompt edited on day 20: it must expire on day
80, not 70.

The protocol server never expires an item and stamps `_ts` itself: the tests read what the
items carry (tests/storage/test_cosmos_retention_follows_a_changed_setting.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from storage.cosmos import CosmosStore
from storage.models import Feedback, Role
from tests.storage.support import message
from tests.storage.test_cosmos_retention_follows_a_changed_setting import (
    DAY,
    Deployment,
    deployment,  # noqa: F401
    raw_client,  # noqa: F401
)
from tests.storage.test_cosmos_retention_wins_over_a_default_ttl_the_app_cannot_change import (
    start_with_entra_id,
)
from tests.storage.test_message_revisions_contract import asked, revision

pytestmark = pytest.mark.cosmos


async def shortened_by_the_purge(deployment: Deployment) -> None:  # noqa: F811
    """Every message and summary as the purge leaves it on day 10 of 60: 50 days left."""
    for name, key in (("messages", "conversationId"), ("conversations", "userId")):
        for item in await deployment.items(name):
            record = {"lastWrite": time.time() - 10 * DAY, "days": 60, "at": time.time()}
            await deployment.container(name).patch_item(
                item["id"],
                item[key],
                [
                    {"op": "set", "path": "/ttl", "value": 50 * DAY},
                    {"op": "set", "path": "/retention", "value": record},
                ],
            )


async def item(deployment: Deployment, conversation_id: str, item_id: str) -> dict[str, Any]:  # noqa: F811
    (found,) = [
        i
        for i in await deployment.items("messages")
        if (i["conversationId"], i["id"]) == (conversation_id, item_id)
    ]
    return found


@pytest.mark.parametrize("containers", ["matching", "not_matching"])
async def test_a_patched_message_expires_retention_days_after_the_patch(
    deployment: Deployment,  # noqa: F811
    containers: str,
) -> None:
    """`matching`: the containers' defaultTtl is the setting (60 days), so the patched item
    carries no ttl of its own; `not_matching`: provisioned with 90 days, which Entra ID cannot
    change, so it carries the setting's 60 days itself."""
    provisioned = await deployment.start(60 if containers == "matching" else 90)
    await provisioned.close()
    store: CosmosStore
    if containers == "matching":
        store = await deployment.start(60)
    else:
        store = await start_with_entra_id(deployment, 60)
    expected = None if containers == "matching" else 60 * DAY
    try:
        await asked(store, "edited")
        await store.add_message(message("rated", 1))
        await store.add_message(message("rated", 2, role=Role.ASSISTANT))
        await store.set_feedback(
            "rated", "assistant-2", Feedback(reaction="dislike", user_id="user-2")
        )
        await shortened_by_the_purge(deployment)

        # Day 20: the prompt edited (its answer marked), the rater erased (the rating removed).
        edited = revision("edited", text="fix this script", tokens=4, title="fix this script")
        assert await store.revise_message(edited) == "edited"
        await store.delete_user("user-2")

        for conversation_id, item_id in (
            ("edited", "assistant-2"),
            ("edited", "user-1"),
            ("rated", "assistant-2"),
        ):
            patched = await item(deployment, conversation_id, item_id)
            assert patched.get("ttl") == expected, (conversation_id, item_id, patched.get("ttl"))
            assert "retention" not in patched, (conversation_id, item_id)
        assert (await item(deployment, "rated", "assistant-2")).get("feedback") is None
        assert (await item(deployment, "edited", "assistant-2"))["promptChanged"] is True

        # The next purge leaves them so; the ones nothing wrote keep what the purge gave.
        assert await store.purge_expired() == 0
        assert (await item(deployment, "edited", "assistant-2")).get("ttl") == expected
        assert (await item(deployment, "rated", "user-1"))["ttl"] == 50 * DAY
    finally:
        await store.close()
