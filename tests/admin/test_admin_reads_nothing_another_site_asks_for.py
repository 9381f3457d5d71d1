"""What another site's page makes a reviewer's browser ask the admin for reads and records
nothing, over real HTTP, with the Fetch Metadata headers (`Sec-Fetch-*`) a browser sends. App
Service Authentication's cookie goes with requests from anywhere, so in `appservice` mode an
<img> or <iframe> elsewhere would otherwise open a transcript, an export or a user's page in the
reviewer's name (each an audit record). A frame, an image or a script's request from another
site (or a sibling subdomain: `same-site`) is refused (403); a link followed from another site
(Teams, Outlook) gets a page that asks before opening, whose link is a same-origin navigation.
The same requests from the admin's own pages, a typed address, or a client that sends no such
header (curl) are answered as before. A sign-in the reviewer meant still lands on its page,
though the identity provider's redirect back arrives from another site: through a page of this
site that goes on at once."""

from __future__ import annotations

import html
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from storage.models import AuditRecord
from tests.admin.conftest import seeded
from tests.admin.helpers import EntraStub, appservice_header, local_link_tokens
from tests.conftest import AppFactory

ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
WORDS = "Summarize the budget spreadsheet for Q3"  # conv-plain's first message

# What a browser sends, by who asks and how.
IFRAME = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}
IMAGE = {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
LINK = {
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-User": "?1",
    "Upgrade-Insecure-Requests": "1",
}


def site(value: str, kind: dict[str, str]) -> dict[str, str]:
    return {"Sec-Fetch-Site": value, **kind}


async def audit(client: TestClient[Any, Any]) -> list[AuditRecord]:
    records, _ = await client.server.app[STORE].list_audit(200)
    return records


async def alice(client: TestClient[Any, Any]) -> str:
    listed = await client.get("/admin/api/conversations", headers=ADMIN)
    items = (await listed.json())["items"]
    pseudonym: str = next(i["user"] for i in items if i["id"] == "conv-flagged")
    return pseudonym


def assert_framing_forbidden(response: Any) -> None:
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


def audited_reads(pseudonym: str) -> list[str]:
    """Admin GETs that read a person's data and record it."""
    return [
        # The list shows titles, each a conversation's first line.
        "/admin/",
        "/admin/api/conversations",
        "/admin/conversations/conv-plain",
        "/admin/api/conversations/conv-plain",
        "/admin/api/export/conversations/conv-plain?format=csv",
        "/admin/api/export/conversations?format=json",
        # A user id in the filter is a reveal.
        "/admin/?user=carol@contoso.com&reason=complaint-42",
        f"/admin/users/delete?user={pseudonym}",
    ]


async def test_frames_images_and_scripts_of_other_sites_read_and_record_nothing(
    make_app: AppFactory,
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    pseudonym = await alice(client)
    listed = await audit(client)
    unaudited = ["/admin/audit", "/admin/api/audit", "/admin/api/me"]

    for url in [*audited_reads(pseudonym), *unaudited]:
        for value in ("cross-site", "same-site"):
            for kind in (IFRAME, IMAGE, FETCH):
                refused = await client.get(url, headers={**ADMIN, **site(value, kind)})

                assert refused.status == 403, (url, value, kind)
                body = await refused.text()
                assert "cross_site" in body and "another site" in body, url
                assert WORDS not in body and "Quarterly report" not in body
                assert "Content-Disposition" not in refused.headers
                assert_framing_forbidden(refused)
    assert await audit(client) == listed

    # The same requests from the admin's own pages, a typed address, or curl are answered.
    for url in audited_reads(pseudonym):
        for headers in (site("same-origin", LINK), site("none", LINK), {}):
            answered = await client.get(url, headers={**ADMIN, **headers})
            assert answered.status == 200, (url, headers, await answered.text())
    # The list filtered by a user id records a reveal and then the list.
    assert len(await audit(client)) == len(listed) + 3 * (len(audited_reads(pseudonym)) + 1)


async def test_a_link_from_another_site_asks_before_opening_and_then_opens_from_this_one(
    make_app: AppFactory,
) -> None:
    """A transcript link in a Teams chat or an e-mail: a top-level navigation from another
    site. The page asks, reading and recording nothing; its link, followed from this site,
    opens the transcript (one audit record)."""
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    pseudonym = await alice(client)
    listed = await audit(client)

    for url in audited_reads(pseudonym):
        for value in ("cross-site", "same-site"):
            asked = await client.get(url, headers={**ADMIN, **site(value, LINK)})

            assert asked.status == 200, url
            page = await asked.text()
            assert "Open " in page and "audit log under your name" in page
            assert WORDS not in page and "Quarterly report" not in page
            assert "Content-Disposition" not in asked.headers
            assert asked.content_type == "text/html"
            assert_framing_forbidden(asked)
            assert link_on(page, "open") == url
    assert await audit(client) == listed

    link = "/admin/conversations/conv-plain"
    asked = await (await client.get(link, headers={**ADMIN, **site("cross-site", LINK)})).text()
    assert "<h1>Open this conversation?</h1>" in asked
    opened = await client.get(link, headers={**ADMIN, **site("same-origin", LINK)})

    assert opened.status == 200 and WORDS in await opened.text()
    [viewed] = [r for r in await audit(client) if r not in listed]
    assert (viewed.action, viewed.target, viewed.actor) == (
        "view_transcript",
        "conv-plain",
        "oid-1",
    )
    # Reading the audit log is recorded, so it asks first too.
    asked = await client.get("/admin/audit", headers={**ADMIN, **site("cross-site", LINK)})
    assert "<h1>Open the audit log?</h1>" in await asked.text()
    # What records nothing opens from a link as it always did.
    shown = await client.get("/admin/api/me", headers={**ADMIN, **site("cross-site", LINK)})
    assert shown.status == 200 and "Open " not in await shown.text()
    assert len(await audit(client)) == len(listed) + 1


def link_on(page: str, testid: str) -> str:
    found = re.search(rf'<a class="button" href="([^"]+)" data-testid="{testid}">', page)
    assert found is not None, page
    return html.unescape(found.group(1))


async def _oidc_sign_in(client: TestClient[Any, Any], start: str, begun_from: str) -> Any:
    """A browser's sign-in from our /admin/login (asked for from `begun_from`), through the
    identity provider, whose redirect back to our callback arrives from another site; the
    callback's answer."""
    begun = await client.get(start, headers=site(begun_from, LINK), allow_redirects=False)
    assert begun.status == 303, await begun.text()
    async with client.session.get(begun.headers["Location"], allow_redirects=False) as idp:
        callback = urlsplit(idp.headers["Location"])
    return await client.get(
        f"{callback.path}?{callback.query}",
        headers=site("cross-site", LINK),
        allow_redirects=False,
    )


def goes_on_to(page: str) -> str:
    """Where a page that goes on at once leads: its meta refresh, which its link repeats."""
    found = re.search(r'<meta http-equiv="refresh" content="0; url=([^"]+)">', page)
    assert found is not None, page
    target = html.unescape(found.group(1))
    assert link_on(page, "continue") == target
    return target


async def test_a_sign_in_begun_here_lands_on_its_page_and_one_begun_elsewhere_asks_first(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    client = await seeded(await make_app(**oidc_settings))
    link = "/admin/conversations/conv-plain"
    start = f"/admin/login?next={link}"

    back = await _oidc_sign_in(client, start, "same-origin")

    # A redirect from here would arrive from another site, without the SameSite=Strict
    # session cookie: the page goes on with a navigation of this site's own.
    assert back.status == 200 and "admin_session=" in back.headers["Set-Cookie"]
    assert goes_on_to(await back.text()) == link
    landed = await client.get(link, headers=site("same-origin", LINK))
    assert landed.status == 200 and WORDS in await landed.text()
    assert [r.action for r in await audit(client)] == ["view_transcript"]

    # Another site's page sends the browser to our sign-in: the identity provider may sign in
    # without a click, so the page it returns to asks first.
    client.session.cookie_jar.clear()
    back = await _oidc_sign_in(client, start, "cross-site")
    assert back.status == 303 and back.headers["Location"] == link
    asked = await client.get(link, headers=site("cross-site", LINK))

    page = await asked.text()
    assert asked.status == 200 and "Open this conversation?" in page and WORDS not in page
    assert [r.action for r in await audit(client)] == ["view_transcript"]


async def test_a_teams_link_to_a_transcript_in_local_mode_asks_then_signs_in_and_lands(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A link from another site comes without the SameSite=Strict session cookie, signed in or
    not: it asks first. Followed from here, it leads to the sign-in page, which writes a fresh
    link to the log; that link, opened from the portal's log stream (another site), then lands
    on the transcript."""
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())
    link = "/admin/conversations/conv-plain"

    asked = await client.get(link, headers=site("cross-site", LINK))
    assert asked.status == 200 and link_on(await asked.text(), "open") == link
    assert "admin_return" not in asked.headers.get("Set-Cookie", "")
    signin = await client.get(link, headers=site("same-origin", LINK))
    assert signin.status == 401 and "one-time" in await signin.text()
    signed_in = await client.get(
        f"/admin/login?token={local_link_tokens(caplog)[-1]}",
        headers=site("cross-site", LINK),
        allow_redirects=False,
    )
    assert signed_in.status == 200 and goes_on_to(await signed_in.text()) == link

    landed = await client.get(link, headers=site("same-origin", LINK))

    assert landed.status == 200 and WORDS in await landed.text()
    assert [r.action for r in await audit(client)] == ["view_transcript"]


async def test_a_page_the_browser_loads_ahead_of_time_records_nothing_until_it_is_opened(
    make_app: AppFactory,
) -> None:
    """Chromium prefetches or prerenders an address it expects to be opened (typed into the
    address bar, a hovered link), with `Sec-Purpose: prefetch` (`prefetch;prerender`) or the
    older `Purpose: prefetch`. Such a load of an audited page is refused, so the audit log holds
    no read that nobody made; opening the page loads it."""
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    pseudonym = await alice(client)
    listed = await audit(client)
    ahead = [
        {"Sec-Purpose": "prefetch", "Sec-Fetch-Dest": "empty"},
        {"Sec-Purpose": "prefetch;prerender", **site("none", LINK)},
        {"Purpose": "prefetch", **site("same-origin", LINK)},
    ]

    for url in audited_reads(pseudonym):
        for headers in ahead:
            refused = await client.get(url, headers={**ADMIN, **headers})

            assert refused.status == 403, (url, headers)
            body = await refused.text()
            assert "speculative_load" in body, url
            assert WORDS not in body and "Content-Disposition" not in refused.headers
    assert await audit(client) == listed

    # What records nothing is answered as usual, ahead of time or not.
    me = await client.get("/admin/api/me", headers={**ADMIN, **ahead[1]})
    assert me.status == 200

    opened = await client.get("/admin/conversations/conv-plain", headers={**ADMIN, **LINK})
    assert opened.status == 200 and WORDS in await opened.text()
    assert [r.action for r in await audit(client) if r not in listed] == ["view_transcript"]
