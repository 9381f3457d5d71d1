"""The chat page and the admin pages, reached over https (at the front end that ended TLS, as
App Service says with X-Forwarded-Proto), tell browsers to come back over https only
(Strict-Transport-Security), so a later visit typed as plain http is not downgraded on the way.
Over plain http (`make run` on loopback) they say nothing: browsers ignore it there anyway."""

from __future__ import annotations

import pytest

from tests.conftest import AppFactory

PATHS = ["/", "/webchat/embed.js", "/admin/"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_page_reached_over_https_asks_browsers_to_use_only_https(
    make_app: AppFactory, path: str
) -> None:
    client = await make_app()

    response = await client.get(path, headers={"X-Forwarded-Proto": "https"})

    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


@pytest.mark.parametrize("path", PATHS)
async def test_a_page_reached_over_plain_http_says_nothing_of_https(
    make_app: AppFactory, path: str
) -> None:
    client = await make_app()

    response = await client.get(path)

    assert "Strict-Transport-Security" not in response.headers
