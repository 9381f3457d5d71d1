"""The reveal form's post (`POST /admin/reveal`) is answered with a redirect to a page that shows
its result (`/admin/revealed`, the result sealed in the address for the admin who revealed, as a
user deletion's is), so reloading that page shows the user again without a second reveal or a
second `reveal_user` record. Over real HTTP on real SQLite."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from tests.admin.conftest import seeded
from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory

ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-ada", name="Ada Admin")}
OTHER_ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-bea")}
REVIEWER = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"], oid="oid-ada")}
BOB = "bob@contoso.com"  # conv-feedback's user


@pytest.fixture
async def client(make_app: AppFactory) -> TestClient[Any, Any]:
    return await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))


async def reveals(client: TestClient[Any, Any]) -> int:
    answer = await client.get("/admin/api/audit", params={"action": "reveal_user"}, headers=ADMIN)
    return len((await answer.json())["items"])


REASON = "HR case 7 of the quarterly access review"


async def reveal_bob(client: TestClient[Any, Any]) -> tuple[str, str]:
    """Bob's pseudonym, and where the reveal form's post led."""
    transcript = await client.get("/admin/api/conversations/conv-feedback", headers=ADMIN)
    pseudonym: str = (await transcript.json())["conversation"]["user"]
    csrf = (await (await client.get("/admin/api/me", headers=ADMIN)).json())["csrfToken"]
    posted = await client.post(
        "/admin/reveal",
        data={
            "csrf": csrf,
            "user": pseudonym,
            "reason": REASON,
            "conversation": "conv-feedback",
        },
        headers=ADMIN,
        allow_redirects=False,
    )
    assert posted.status == 303, await posted.text()
    return pseudonym, posted.headers["Location"]


async def test_reloading_a_reveals_result_shows_the_user_without_revealing_again(
    client: TestClient[Any, Any],
) -> None:
    pseudonym, location = await reveal_bob(client)

    assert location.startswith("/admin/revealed?s=")
    # Only the sealed part, which holds none of it as text (a short word could turn up in the
    # sealed bytes' base64 by chance: the reason is long enough not to).
    assert list(parse_qs(urlsplit(location).query)) == ["s"]
    assert all(secret not in unquote(location) for secret in (BOB, pseudonym, REASON))
    for _ in range(2):  # the page, then its reload
        shown = await client.get(location, headers=ADMIN)
        assert shown.status == 200
        page = await shown.text()
        assert f'<code data-testid="revealed-user">{BOB}</code>' in page
        assert pseudonym in page and 'href="/admin/conversations/conv-feedback"' in page
        # Its language switch shows this result again, not the form that posted it.
        assert f'name="next" value="{location.replace("&", "&amp;")}"' in page
    assert await reveals(client) == 1


async def test_a_reveals_result_opens_for_no_one_else_nor_for_one_no_longer_an_admin(
    client: TestClient[Any, Any],
) -> None:
    _, location = await reveal_bob(client)

    elsewhere = await client.get(location, headers=OTHER_ADMIN, allow_redirects=False)
    demoted = await client.get(location, headers=REVIEWER)

    assert elsewhere.status == 303 and elsewhere.headers["Location"] == "/admin/"
    assert demoted.status == 403
    assert BOB not in await demoted.text()
    assert await reveals(client) == 1
