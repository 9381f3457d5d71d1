"""The admin audit log names every person whose data an admin action touched (`subjects`, by
pseudonym), so the log filtered by that person, and their own data export, list the action:
- who rated an answer (a like/dislike and its comment are the rater's data, and in a Teams group
  chat anyone may rate any answer), as well as who wrote, when a transcript is viewed (page and
  API) or exported;
- everyone who wrote or rated in a conversation, when it is deleted (read before it is);
- the same people again on the records of how an export or a deletion ended (`interrupted`,
  `failed_part_way`, `deleted`, the second pass's `completed`).
Never a raw user id. Over real HTTP on both stores (tests/stores.py), the store behind the fault
wrapper (tests/faults.py), pages of PAGE_SIZE messages (the streamed exports' fixture)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import SECOND_PASSES, STORE
from storage.base import Store
from storage.models import Feedback, Role
from tests.admin.helpers import T0, _msg, add_group_chat
from tests.admin.test_admin_exports_streamed_on_both_stores import (  # noqa: F401 - fixtures
    PAGE_SIZE,
    _received_until_broken,
    admin,
    handler_cancellation,
    make_settings,
)
from tests.faults import FaultKind, FaultyStore
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

ALICE = "alice@contoso.com"
BOB = "bob@contoso.com"
CAROL = "carol@contoso.com"  # rates an answer of the first page, writes nothing
DAN = "dan@contoso.com"  # rates an answer of the third page, writes nothing
GROUP = "19:raters@thread.v2"
# Pages of PAGE_SIZE (2): Alice and Carol's rating; Alice; Bob and Dan's rating.
CHAT = [
    (Role.USER, ALICE, None),
    (Role.ASSISTANT, ALICE, Feedback(reaction="dislike", text="too slow", user_id=CAROL)),
    (Role.USER, ALICE, None),
    (Role.ASSISTANT, ALICE, None),
    (Role.USER, BOB, None),
    (Role.ASSISTANT, BOB, Feedback(reaction="like", user_id=DAN)),
]


@pytest.fixture
async def group(
    admin: tuple[TestClient[Any, Any], FaultyStore],  # noqa: F811
) -> tuple[TestClient[Any, Any], FaultyStore]:
    """The signed-in Admin of the streamed exports' tests, and a Teams group chat where two
    people who wrote nothing rated answers (its summary the conversation's, `shared:`)."""
    assert PAGE_SIZE == 2
    client, faulty_store = admin
    store: Store = client.server.app[STORE]
    messages = [
        _msg(role, f"group message {seq}", feedback=feedback, user_id=user)
        for seq, (role, user, feedback) in enumerate(CHAT, start=1)
    ]
    await add_group_chat(store, GROUP, messages, at=T0 + timedelta(days=6))
    return client, faulty_store


async def _people(client: TestClient[Any, Any]) -> list[str]:
    """The pseudonyms of Alice, Carol, Bob and Dan (in the order the chat names them), as the
    transcript shows them."""
    transcript = await (await client.get(f"/admin/api/conversations/{GROUP}")).json()
    messages = transcript["messages"]
    alice, carol = messages[1]["user"], messages[1]["feedback"]["rater"]
    bob, dan = messages[5]["user"], messages[5]["feedback"]["rater"]
    people = [alice, carol, bob, dan]
    assert all(p.startswith("p-") for p in people) and len(set(people)) == 4
    return people


async def _audit(client: TestClient[Any, Any], **params: str) -> list[dict[str, Any]]:
    """Audit records, newest first."""
    response = await client.get("/admin/api/audit", params=params)
    assert response.status == 200, await response.text()
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def _no_raw_user_ids(client: TestClient[Any, Any]) -> None:
    audit = await (await client.get("/admin/api/audit")).text()
    for user in (ALICE, BOB, CAROL, DAN):
        assert user not in audit


async def test_viewing_a_transcript_names_who_rated_its_answers_as_well_as_who_wrote_it(
    group: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, _ = group
    people = await _people(client)  # the API's view
    carol, dan = people[1], people[3]

    page = await client.get(f"/admin/conversations/{GROUP}")

    assert page.status == 200
    viewed = await _audit(client, target=GROUP, action="view_transcript")
    assert [r["subjects"] for r in viewed] == [people, people]
    assert [r["detail"].get("page") for r in viewed] == [True, None]
    # The log filtered by either rater lists both views; so does their own data export.
    for rater in (carol, dan):
        found = await _audit(client, user=rater, action="view_transcript")
        assert [r["target"] for r in found] == [GROUP, GROUP], rater
        mine = await client.post("/admin/api/users/export", json={"user": rater, "reason": "DSAR"})
        audit = json.loads(await mine.text())["audit"]
        assert [r["target"] for r in audit if r["action"] == "view_transcript"] == [GROUP, GROUP]
    await _no_raw_user_ids(client)


@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_exporting_a_conversation_names_its_raters_on_the_page_they_rated(
    group: tuple[TestClient[Any, Any], FaultyStore], fmt: str
) -> None:
    client, _ = group
    alice, carol, bob, dan = await _people(client)

    response = await client.get(f"/admin/api/export/conversations/{GROUP}", params={"format": fmt})

    assert response.status == 200, await response.text()
    assert "group message 6" in await response.text()
    further, requested = await _audit(client, target=GROUP, action="export_conversation")
    # Carol rated an answer of the first page; Dan one of the third, named before it went out.
    assert requested["subjects"] == [alice, carol]
    assert further["detail"]["outcome"] == "further_subjects"
    assert further["detail"]["sent"] == {"messages": 4}
    assert further["subjects"] == [bob, dan]
    found = await _audit(client, user=dan, action="export_conversation")
    assert [r["detail"].get("outcome") for r in found] == ["further_subjects"]
    await _no_raw_user_ids(client)


async def test_a_conversation_export_that_fails_part_way_names_everyone_named_before(
    group: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, store = group
    people = await _people(client)
    # The read after the third page fails: every message is out, the end of the file is not.
    store.fail(FaultKind.ERROR, "conversation_message_pages", count=1, when=lambda _, a: a[1] == 3)

    response = await client.get(f"/admin/api/export/conversations/{GROUP}?format=json")

    assert response.status == 200
    assert "group message 6" in await _received_until_broken(response)
    outcome, further, requested = await _audit(client, target=GROUP, action="export_conversation")
    assert outcome["detail"]["outcome"] == "failed_part_way"
    assert outcome["detail"]["sent"] == {"messages": 6}
    assert outcome["subjects"] == requested["subjects"] + further["subjects"] == people
    # The log filtered by Dan shows how the export he was named in ended.
    found = await _audit(client, user=people[3], action="export_conversation")
    assert [r["detail"]["outcome"] for r in found] == ["failed_part_way", "further_subjects"]
    await _no_raw_user_ids(client)


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_a_conversation_export_the_client_left_names_everyone_named_before(
    group: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    """Either way the server learns it: the next write fails, or the handler is cancelled;
    whether Bob's page was read (and he and Dan named) by then depends on which."""
    client, store = group
    alice, carol, _, _ = await _people(client)
    # Bob's page comes slowly: the client has the first pages, and leaves.
    store.fail(FaultKind.SLOW, "conversation_message_pages", delay=0.5, when=lambda _, a: a[1] == 2)

    response = await client.get(f"/admin/api/export/conversations/{GROUP}?format=json")
    assert response.status == 200
    assert "group message 1" in (await response.content.readany()).decode()
    response.close()

    for _ in range(50):
        records = await _audit(client, target=GROUP, action="export_conversation")
        if records[0]["detail"].get("outcome") == "interrupted":
            break
        await asyncio.sleep(0.1)
    outcome, *earlier = records
    assert outcome["detail"]["outcome"] == "interrupted"
    named = [subject for record in reversed(earlier) for subject in record["subjects"]]
    assert named[:2] == [alice, carol]
    assert outcome["subjects"] == named
    await _no_raw_user_ids(client)


async def _delete(client: TestClient[Any, Any]) -> Any:
    return await client.post(
        f"/admin/api/conversations/{GROUP}/delete",
        json={"confirm": GROUP, "reason": "password pasted"},
    )


async def test_deleting_a_group_chat_names_everyone_who_wrote_or_rated_in_it_on_each_record(
    group: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, _ = group
    people = await _people(client)
    bob = people[2]

    done = await _delete(client)
    assert done.status == 200, await done.text()
    # The shutdown runs the pending second pass early (admin/erasures.py).
    await client.server.app[SECOND_PASSES].close(at_most_seconds=20)

    records = await _audit(client, target=GROUP, action="delete_conversation")
    outcomes = [r["detail"]["outcome"] for r in records]
    assert outcomes == ["completed", "deleted", "requested"]
    assert [r["subjects"] for r in records] == [people, people, people]
    # After the deletion nothing of the chat is left to say who was in it: the log still does.
    found = await _audit(client, user=bob, action="delete_conversation")
    assert [r["detail"]["outcome"] for r in found] == outcomes
    await _no_raw_user_ids(client)


async def test_deleting_a_one_to_one_chat_names_its_owner(
    group: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, _ = group
    transcript = await (await client.get("/admin/api/conversations/conv-flagged")).json()
    owner = transcript["conversation"]["user"]

    done = await client.post(
        "/admin/api/conversations/conv-flagged/delete",
        json={"confirm": "conv-flagged", "reason": "ticket 7"},
    )

    assert done.status == 200, await done.text()
    records = await _audit(client, target="conv-flagged", action="delete_conversation")
    assert [r["subjects"] for r in records] == [[owner], [owner]]


async def test_a_group_chat_deletion_that_fails_part_way_names_everyone_it_concerns(
    group: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    client, store = group
    people = await _people(client)
    # The deletion happens, then the store fails (a Cosmos delete can stop part-way).
    store.fail(FaultKind.LOST_RESPONSE, "delete_conversation", count=1)

    failed = await _delete(client)

    assert failed.status == 503
    outcome, requested = await _audit(client, target=GROUP, action="delete_conversation")
    assert outcome["detail"]["outcome"] == "failed_part_way"
    assert outcome["subjects"] == requested["subjects"] == people
    await _no_raw_user_ids(client)
