"""App Service HTTP logging and Application Gateway access logs keep every address with its query
string, in Log Analytics, where the audit log does not reach. So the admin pages never put the
words searched for (often words of users' messages), a user named by id, or the reason of a
reveal in an address: the filter forms post them and are answered with an address that carries
them sealed (`s`, encrypted and expiring), and the pages' links carry them so. Over real HTTP on
real SQLite, signed in through App Service's principal header."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from tests.admin.conftest import seeded
from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory

ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-ada", name="Ada Admin")}
REVIEWER = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"], oid="oid-rita")}
ALICE = "alice@contoso.com"
REASON = "HR case 77"


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))


async def csrf(client: TestClient[Any, Any], who: dict[str, str]) -> str:
    token: str = (await (await client.get("/admin/api/me", headers=who)).json())["csrfToken"]
    return token


async def filter_by_form(
    client: TestClient[Any, Any], path: str, fields: dict[str, str], who: dict[str, str] = ADMIN
) -> str:
    """Sends a filter form; the address it is answered with."""
    form = {**fields, "csrf": await csrf(client, who)}
    sent = await client.post(path, data=form, headers=who, allow_redirects=False)
    assert sent.status == 303, await sent.text()
    location: str = sent.headers["Location"]
    return location


def links(page: str) -> list[str]:
    return [html.unescape(href) for href in re.findall(r'href="([^"]+)"', page)]


def assert_shows_nothing_of(address: str, *words: str) -> None:
    for word in words:
        assert word.lower() not in address.lower(), (word, address)
    assert not {"q", "user", "reason"} & set(parse_qs(urlsplit(address).query)), address


async def test_a_search_of_the_list_is_answered_with_an_address_that_shows_none_of_it(
    client: TestClient[Any, Any],
) -> None:
    address = await filter_by_form(
        client, "/admin/", {"q": "budget", "user": ALICE, "reason": REASON, "channel": ""}
    )

    assert address.startswith("/admin/?s=")
    assert_shows_nothing_of(address, "budget", "alice", REASON)
    page = await client.get(address, headers=ADMIN)
    assert page.status == 200
    text = await page.text()
    assert 'name="q" value="budget"' in text
    # The user named by id is shown as the pseudonym (a reveal, with its reason).
    assert re.search(r'name="user" value="p-[a-z0-9]+"', text)
    for link in links(text):
        assert_shows_nothing_of(link, "budget", "alice", REASON)


async def test_the_lists_links_and_exports_carry_the_search_sealed_and_it_holds(
    client: TestClient[Any, Any],
) -> None:
    address = await filter_by_form(client, "/admin/", {"q": "the", "since": "2020-01-01"})
    assert "since=2020-01-01" in address, "what says nothing of anyone stays readable"
    first = await (await client.get(f"{address}&page_size=1", headers=ADMIN)).text()
    [next_link] = [link for link in links(first) if "continuation=" in link]
    [export] = [link for link in links(first) if "export/conversations?" in link and "json" in link]
    assert_shows_nothing_of(next_link, "the")
    assert_shows_nothing_of(export, "the")

    later = await client.get(next_link, headers=ADMIN)
    assert later.status == 200 and 'name="q" value="the"' in await later.text()
    exported = await (await client.get(export, headers=ADMIN)).json(content_type=None)
    assert exported["filters"]["q"] == "the" and exported["search"]["text"] == "the"


async def test_a_person_is_linked_to_sealed_from_the_list_and_the_transcript(
    client: TestClient[Any, Any],
) -> None:
    listed = await (await client.get("/admin/", headers=ADMIN)).text()
    [by_person, *_] = [link for link in links(listed) if link.startswith("/admin/?s=")]
    filtered = await client.get(by_person, headers=ADMIN)
    assert filtered.status == 200
    assert re.search(r'name="user" value="p-[a-z0-9]+"', await filtered.text())

    transcript = await (await client.get("/admin/conversations/conv-flagged", headers=ADMIN)).text()
    [delete_person] = [link for link in links(transcript) if "/admin/users/delete" in link]
    assert_shows_nothing_of(delete_person, "alice")
    confirm = await client.get(delete_person, headers=ADMIN)
    assert confirm.status == 200


async def test_an_audit_log_filter_is_answered_sealed_too_and_only_for_admins(
    client: TestClient[Any, Any],
) -> None:
    address = await filter_by_form(
        client, "/admin/audit", {"user": ALICE, "reason": REASON, "action": "view_transcript"}
    )
    assert address.startswith("/admin/audit?") and "action=view_transcript" in address
    assert_shows_nothing_of(address, "alice", REASON)
    page = await client.get(address, headers=ADMIN)
    assert page.status == 200
    for link in links(await page.text()):
        assert_shows_nothing_of(link, "alice", REASON)

    form = {"action": "x", "csrf": await csrf(client, REVIEWER)}
    refused = await client.post("/admin/audit", data=form, headers=REVIEWER)
    assert refused.status == 403


@pytest.mark.parametrize("sealed", ["forged", "gAAAAABtampered"], ids=["forged", "tampered"])
async def test_a_sealed_part_that_is_not_ours_is_a_400_that_says_to_filter_again(
    client: TestClient[Any, Any], sealed: str
) -> None:
    page = await client.get("/admin/", params={"s": sealed, "channel": "msteams"}, headers=ADMIN)
    assert page.status == 400
    text = await page.text()
    assert "filter again" in text
    assert 'name="channel" value="msteams"' in text, "what was plain comes back"
    api = await client.get("/admin/api/conversations", params={"s": sealed}, headers=ADMIN)
    assert api.status == 400


async def test_a_sealed_address_of_another_deployment_opens_nothing(
    make_app: AppFactory,
) -> None:
    """Another key (another deployment, or a session secret changed since) cannot open it."""
    one = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    address = await filter_by_form(one, "/admin/", {"q": "budget"})
    other = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    assert (await other.get(address, headers=ADMIN)).status == 400


async def test_a_filter_form_without_its_csrf_token_is_refused(
    client: TestClient[Any, Any],
) -> None:
    refused = await client.post("/admin/", data={"q": "budget"}, headers=ADMIN)
    assert refused.status == 403


async def test_a_sealed_address_opens_only_for_the_person_it_was_made_for(
    client: TestClient[Any, Any],
) -> None:
    """Read from the logs, an Admin's sealed address tells nobody else anything: a Reviewer
    sees neither the user id nor the search in the page, and another Admin cannot replay the
    reveal (with a reason they never gave)."""
    address = await filter_by_form(
        client, "/admin/", {"q": "budget", "user": ALICE, "reason": REASON}
    )
    reveals = [
        r
        for r in (await (await client.get("/admin/api/audit", headers=ADMIN)).json())["items"]
        if r["action"] == "reveal_user"
    ]

    other_admin = {
        "X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-bob", name="Bob Admin")
    }
    for who in (REVIEWER, other_admin):
        page = await client.get(address, headers=who)
        assert page.status == 400
        text = await page.text()
        assert "filter again" in text
        assert "alice" not in text and "budget" not in text and REASON not in text
        api = await client.get(f"/admin/api/conversations?{urlsplit(address).query}", headers=who)
        assert api.status == 400

    after = [
        r
        for r in (await (await client.get("/admin/api/audit", headers=ADMIN)).json())["items"]
        if r["action"] == "reveal_user"
    ]
    assert len(after) == len(reveals), "no reveal by anyone else"
    assert (await client.get(address, headers=ADMIN)).status == 200


async def test_the_audit_logs_target_and_actor_are_sealed_too(
    client: TestClient[Any, Any],
) -> None:
    address = await filter_by_form(
        client,
        "/admin/audit",
        # A person's id as the target is a reveal: it takes a reason.
        {"target": ALICE, "actor": "oid-ada", "action": "denied", "reason": "ticket 7"},
    )
    assert "action=denied" in address
    assert_shows_nothing_of(address, "alice", "oid-ada", "ticket")
    assert not {"target", "actor"} & set(parse_qs(urlsplit(address).query))
    page = await client.get(address, headers=ADMIN)
    assert page.status == 200
    assert 'name="actor" value="oid-ada"' in await page.text()


@pytest.mark.parametrize("who", [ADMIN, REVIEWER], ids=["admin", "reviewer"])
async def test_a_json_body_in_an_unknown_charset_is_refused_not_a_500(
    client: TestClient[Any, Any], who: dict[str, str]
) -> None:
    headers = {**who, "X-CSRF-Token": await csrf(client, who)}
    headers["Content-Type"] = "application/json; charset=bogus"
    answered = await client.post("/admin/api/reveal", data=b'{"user": "x"}', headers=headers)
    assert answered.status == (400 if who is ADMIN else 403)
