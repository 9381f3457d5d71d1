"""A body over the size limit gets a JSON 413 on every JSON endpoint the app serves, as every
other error there does: aiohttp's own answer is a text/plain sentence that the chat page and API
clients cannot read as an error."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory
from tests.webchat.support import open_session
from webchat import DIRECT_LINE
from webchat.directline import CONNECTOR_PREFIX, MAX_POST_BYTES

# Past the app's 256 KB limit and the built-in Direct Line's own, larger one.
TOO_LARGE = b'{"type": "message", "text": "' + b"x" * (MAX_POST_BYTES + 1024) + b'"}'
JSON = {"Content-Type": "application/json"}


async def assert_json_413(
    client: TestClient[Any, Any], path: str, method: str = "POST", **headers: str
) -> None:
    response = await client.request(method, path, data=TOO_LARGE, headers={**JSON, **headers})
    assert response.status == 413, path
    assert response.content_type == "application/json", (path, await response.text())
    body = await response.json()
    error = body["error"]
    if isinstance(error, dict):
        assert error["code"] and error["message"], path
    else:
        assert error and body["message"], path


async def test_every_json_post_endpoint_answers_a_body_over_the_limit_in_json(
    make_app: AppFactory,
) -> None:
    client = await make_app(ADMIN_AUTH_MODE="appservice")
    await assert_json_413(client, "/api/directline/token")
    await assert_json_413(client, "/api/messages")

    session = await open_session(client)  # the token endpoint serves the next request as ever
    conversation = session.conversation_id
    await assert_json_413(
        client, f"/v3/directline/conversations/{conversation}/activities", **session.headers
    )
    # Where the bot's replies go (only this process knows the key).
    key = client.server.app[DIRECT_LINE].connector_key
    connector = f"{CONNECTOR_PREFIX}/{key}/v3/conversations/{conversation}/activities"
    await assert_json_413(client, connector)
    await assert_json_413(client, f"{connector}/some-activity")
    await assert_json_413(client, f"{connector}/some-activity", method="PUT")

    admin = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
    csrf = (await (await client.get("/admin/api/me", headers=admin)).json())["csrfToken"]
    for path in ("/admin/api/reveal", "/admin/api/users/delete", "/admin/api/users/export"):
        await assert_json_413(client, path, **admin, **{"X-CSRF-Token": csrf})
