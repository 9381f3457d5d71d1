"""A list filtered by a user id, not a pseudonym, answers with that person's pseudonym: it tells
who is behind it. Over real HTTP on real SQLite, signed in through App Service's principal
header: a Reviewer is refused (pages, API), an Admin gives a reason and the filter is recorded
as a reveal (list, page and export), and links from the answer carry the pseudonym."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.admin.conftest import seeded
from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory

API = "/admin/api/conversations"
EXPORT = "/admin/api/export/conversations"
REVIEWER = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"], oid="oid-rita")}
ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-ada", name="Ada Admin")}
ALICE = "alice@contoso.com"


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))


async def audit(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    response = await client.get("/admin/api/audit", headers=ADMIN)
    assert response.status == 200
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def alice_pseudonym(client: TestClient[Any, Any]) -> str:
    """Alice's pseudonym as a reviewer sees it (reading a transcript is audited: the records
    are counted from here)."""
    body = await (await client.get(f"{API}/conv-flagged", headers=REVIEWER)).json()
    pseudonym: str = body["conversation"]["user"]
    assert pseudonym.startswith("p-")
    return pseudonym


@pytest.mark.parametrize("path", [API, "/admin/"], ids=["api", "page"])
@pytest.mark.parametrize(
    "params",
    [
        {"user": ALICE},
        # The id Azure's Direct Line stores her under.
        {"user": f"dl_{ALICE}"},
        # "Does her conversation hold this word?"
        {"user": ALICE, "q": "expense"},
        # An id of nobody answers as much as one of somebody (no conversations).
        {"user": "nobody@contoso.com"},
        # A reason does not make a Reviewer an Admin.
        {"user": ALICE, "reason": "HR case 7"},
    ],
)
async def test_a_reviewer_filtering_by_a_user_id_is_refused_and_told_to_use_the_pseudonym(
    client: TestClient[Any, Any], path: str, params: dict[str, str]
) -> None:
    pseudonym = await alice_pseudonym(client)
    before = len(await audit(client))

    refused = await client.get(path, params=params, headers=REVIEWER)

    assert refused.status == 403
    text = await refused.text()
    assert pseudonym not in text
    if path == API:
        body = json.loads(text)
        assert body["error"] == "pseudonym_required"
        assert "pseudonym (p-...)" in body["message"]
    else:
        assert "Content-Security-Policy" in refused.headers
        assert "pseudonym (p-...)" in text
    # Nothing was read; the refusal is recorded (`denied`), naming the person by pseudonym.
    records = await audit(client)
    assert len(records) == before + 1
    assert records[0]["action"] == "denied" and records[0]["actor"] == "oid-rita"
    assert records[0]["detail"]["attempted"] == "reveal_user"
    assert records[0]["target"].startswith("p-")
    assert "contoso" not in json.dumps(records)
    # Her pseudonym is the Reviewer's filter.
    listed = await client.get(API, params={**params, "user": pseudonym}, headers=REVIEWER)
    assert listed.status == 200


async def test_an_admin_filtering_by_a_user_id_gives_a_reason_and_it_is_audited_as_a_reveal(
    client: TestClient[Any, Any],
) -> None:
    pseudonym = await alice_pseudonym(client)
    before = len(await audit(client))

    unexplained = await client.get(API, params={"user": ALICE}, headers=ADMIN)
    assert unexplained.status == 400
    assert "give a reason" in (await unexplained.json())["message"]
    assert len(await audit(client)) == before

    listed = await client.get(
        API, params={"user": ALICE, "reason": "complaint 42", "q": "e"}, headers=ADMIN
    )
    assert listed.status == 200
    items = (await listed.json())["items"]
    assert [item["id"] for item in items] == ["conv-error", "conv-flagged"]
    assert {item["user"] for item in items} == {pseudonym}

    records = await audit(client)
    # The reveal, then the text search (newest first), which names her by the pseudonym too.
    assert len(records) == before + 2
    search, reveal = records[:2]
    assert search["action"] == "search_conversations"
    assert search["detail"]["filters"] == {"user": pseudonym, "q": "e"}
    assert reveal["action"] == "reveal_user" and reveal["actor"] == "oid-ada"
    assert reveal["target"] == pseudonym
    assert reveal["detail"]["reason"] == "complaint 42"
    assert reveal["detail"]["by"] == "user_filter"
    # Under the pseudonym: the audit log outlives a deletion and must not bring the id back.
    assert ALICE not in json.dumps(records)


async def test_an_admin_list_page_filtered_by_a_user_id_links_on_with_the_pseudonym(
    client: TestClient[Any, Any],
) -> None:
    pseudonym = await alice_pseudonym(client)
    before = len(await audit(client))

    page = await client.get(
        "/admin/",
        params={"user": f"dl_{ALICE}", "reason": "complaint 42", "page_size": "1"},
        headers=ADMIN,
    )

    assert page.status == 200
    html = await page.text()
    assert "alice" not in html
    assert f'name="user" value="{pseudonym}"' in html
    # The links carry the person sealed (`s`), as the filter form's answer does.
    exports = re.findall(r'href="(/admin/api/export/conversations\?[^"]+)"', html)
    assert exports and all("s=" in link and "user=" not in link for link in exports)
    assert "?user=" not in html
    [next_link] = re.findall(r'href="([^"]+)" rel="next"', html)
    assert "s=" in next_link and "user=" not in next_link and "reason" not in next_link
    [reveal, *_] = await audit(client)
    assert reveal["action"] == "reveal_user" and reveal["target"] == pseudonym
    assert len(await audit(client)) == before + 1
    # The next page names the pseudonym: no second reveal.
    following = await client.get(next_link.replace("&amp;", "&"), headers=ADMIN)
    assert following.status == 200
    assert f'name="user" value="{pseudonym}"' in await following.text()
    assert len(await audit(client)) == before + 1


async def test_a_list_export_filtered_by_a_user_id_is_a_reveal_with_a_reason_too(
    client: TestClient[Any, Any],
) -> None:
    pseudonym = await alice_pseudonym(client)
    before = len(await audit(client))

    unexplained = await client.get(EXPORT, params={"user": ALICE, "format": "csv"}, headers=ADMIN)
    assert unexplained.status == 400
    assert len(await audit(client)) == before

    exported = await client.get(
        EXPORT, params={"user": ALICE, "format": "json", "reason": "DSAR-9"}, headers=ADMIN
    )
    assert exported.status == 200
    body = json.loads(await exported.text())
    assert body["filters"] == {"user": pseudonym}
    assert len(body["items"]) == 2
    export_record, reveal = (await audit(client))[:2]
    assert reveal["action"] == "reveal_user" and reveal["target"] == pseudonym
    assert reveal["detail"]["reason"] == "DSAR-9"
    assert export_record["action"] == "export_list"
    assert export_record["detail"]["filters"] == {"user": pseudonym}


async def test_a_reviewer_filters_by_a_user_id_only_when_pseudonyms_are_off_and_ids_are_shown(
    make_app: AppFactory,
) -> None:
    shown = await seeded(await make_app(ADMIN_AUTH_MODE="appservice", ADMIN_PSEUDONYMIZE="false"))
    hidden = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))

    listed = await shown.get(API, params={"user": ALICE}, headers=REVIEWER)
    refused = await hidden.get(API, params={"user": ALICE}, headers=REVIEWER)

    assert listed.status == 200
    assert {item["user"] for item in (await listed.json())["items"]} == {ALICE}
    # The two apps share the test's store: only the other's refusal is recorded.
    assert [record["action"] for record in await audit(shown)] == ["denied"]
    assert refused.status == 403
