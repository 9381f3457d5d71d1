"""An admin state change's Origin must be this site's by scheme, host and port, over real HTTP:
https://host:port is another site than the http app on host:port. Behind a front end that ends
TLS and says so in X-Forwarded-Proto (App Service), the https origin is the site's own."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin.conftest import seeded
from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory

ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
PUBLIC = "chat.contoso.example"


@pytest.mark.parametrize(
    ("origin", "host", "forwarded", "status"),
    [
        # Plain http, as `make run` serves it ({host} is the test server's host:port).
        ("http://{host}", None, None, 200),
        ("https://{host}", None, None, 403),
        ("http://127.0.0.1", None, None, 403),
        ("http://{host}0", None, None, 403),
        ("ftp://{host}", None, None, 403),
        # App Service: the Host is the public name, TLS ends at the front end.
        (f"https://{PUBLIC}", PUBLIC, "https", 200),
        (f"https://{PUBLIC}:443", PUBLIC, "https", 200),
        (f"http://{PUBLIC}", PUBLIC, "https", 403),
        (f"https://{PUBLIC}:8443", PUBLIC, "https", 403),
        (f"https://{PUBLIC}", PUBLIC, None, 403),
        (f"http://{PUBLIC}", PUBLIC, None, 200),
        (f"https://{PUBLIC}", PUBLIC, "http", 403),
    ],
)
async def test_state_changes_from_the_same_host_with_another_scheme_or_port_are_refused(
    make_app: AppFactory, origin: str, host: str | None, forwarded: str | None, status: int
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    front: dict[str, str] = {}
    if host is not None:
        front["Host"] = host
    if forwarded is not None:
        front["X-Forwarded-Proto"] = forwarded
    me = await client.get("/admin/api/me", headers={**ADMIN, **front})
    csrf = (await me.json())["csrfToken"]
    listed = await client.get("/admin/api/conversations", headers=ADMIN)
    pseudonym = (await listed.json())["items"][0]["user"]

    response = await client.post(
        "/admin/api/reveal",
        json={"user": pseudonym, "reason": "complaint 42"},
        headers={
            **ADMIN,
            **front,
            "X-CSRF-Token": csrf,
            "Origin": origin.format(host=f"{client.host}:{client.port}"),
        },
    )

    assert response.status == status, await response.text()
    if status == 403:
        refusal: dict[str, Any] = await response.json()
        assert refusal["error"] == "csrf" and "another site" in refusal["message"]
