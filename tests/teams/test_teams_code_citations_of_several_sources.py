"""An answer whose code matches two public repositories cites both, to the user and to the
reviewer. Azure judges a stream chunk by chunk, so each source comes in its own chunk's
`protected_material_code` (the simulator's `[cf:protected-code:two-sources]`): the sibling of
test_teams_filter_verdicts_outlive_a_broken_stream.py's one-citation test, at its level: real
HTTP, the app, the Teams channel double streaming the answer, the real simulator, and the admin
transcript."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app import STORE
from storage.ids import safe_id
from tests.admin.helpers import sign_in_locally
from tests.support import settle
from tests.teams.activities import PERSONAL_CONVERSATION, personal_message
from tests.teams.channel import TeamsChannel

CONVERSATION_ID = safe_id(f"msteams:{PERSONAL_CONVERSATION}")
# The two sources of the trigger in simulator/triggers.yaml.
MIT_URL = "https://github.com/contoso/sample-utils/blob/main/src/retry.py"
GPL_URL = "https://github.com/fabrikam/text-tools/blob/main/lib/wrap.py"


async def test_code_matching_two_sources_cites_both_to_the_user_and_the_reviewer(
    make_app: Any, teams: TeamsChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")  # the admin's sign-in link is logged
    client = await make_app()
    text = "show me two helpers [cf:protected-code:two-sources]"
    response = await client.post("/api/messages", json=personal_message(teams.url, text))
    assert response.status == 202
    [final] = await teams.wait_for_messages(1)
    await settle(client)

    shown = final["text"]
    assert f"{MIT_URL} (license: `MIT`)" in shown
    assert f"{GPL_URL} (license: `GPL-3.0`)" in shown
    assert shown.index(MIT_URL) < shown.index(GPL_URL), "cited in the order they came"

    _, answer = await client.server.app[STORE].conversation_messages(CONVERSATION_ID)
    assert shown.startswith(answer.text) and answer.text and "license" not in answer.text
    assert answer.filter is not None
    [code] = [r for r in answer.filter["results"] if r["category"] == "protected_material_code"]
    assert code["citations"] == [
        {"url": MIT_URL, "license": "MIT"},
        {"url": GPL_URL, "license": "GPL-3.0"},
    ]

    await sign_in_locally(client, caplog)
    page = await (await client.get(f"/admin/conversations/{CONVERSATION_ID}")).text()
    assert f"citation: {MIT_URL} MIT</span>" in page
    assert f"citation: {GPL_URL} GPL-3.0</span>" in page
