"""The admin pages say that their times and date filters are UTC (a reviewer in Japan reads
04:00 as their own morning otherwise), over real HTTP on real SQLite; the JSON API keeps ISO
times with their offset."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from storage.models import MessageStatus, Role
from tests.admin.conftest import seeded
from tests.admin.helpers import T0, _conversation, _msg, sign_in_locally
from tests.conftest import AppFactory

# The seeded "Quarterly report" (tests/admin/helpers.py): its summary at T0 + 3 days, its
# messages a second and two seconds later.
PLAIN = "conv-plain"
PLAIN_AT = "2026-11-04 09:00:00 UTC"
TIME = re.compile(r"<time datetime=\"([^\"]+)\">([^<]*)</time>")


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    caplog.set_level(logging.INFO, logger="app")
    client = await seeded(await make_app())
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    return client


def _facts(html: str) -> dict[str, str]:
    return dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)</dd>", html))


async def test_the_list_says_its_times_and_its_date_filters_are_utc(
    admin: TestClient[Any, Any],
) -> None:
    html = await (await admin.get("/admin/")).text()
    assert "<th>Last activity (UTC)</th>" in html
    assert '<label>From (UTC day) <input type="date" name="since"' in html
    assert '<label>To (UTC day) <input type="date" name="until"' in html
    times = TIME.findall(html)
    assert times[0] == ("2026-11-04T09:00:00+00:00", "2026-11-04 09:00:00")


async def test_a_transcript_says_each_of_its_times_is_utc(admin: TestClient[Any, Any]) -> None:
    html = await (await admin.get(f"/admin/conversations/{PLAIN}")).text()
    facts = _facts(html)
    assert facts["Started"] == PLAIN_AT
    assert facts["Last activity"] == PLAIN_AT
    assert TIME.findall(html) == [
        ("2026-11-04T09:00:01+00:00", "2026-11-04 09:00:01 UTC"),
        ("2026-11-04T09:00:02+00:00", "2026-11-04 09:00:02 UTC"),
    ]


async def test_an_edit_and_a_deletion_by_the_user_say_when_in_utc(
    admin: TestClient[Any, Any],
) -> None:
    revised = T0 + timedelta(days=5, hours=15, minutes=30)
    await _conversation(
        admin.server.app[STORE],
        "conv-revised",
        "dave@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title="Edited",
        at=T0 + timedelta(days=5),
        messages=[
            _msg(Role.USER, "first words, edited", revised_at=revised),
            _msg(Role.USER, "", status=MessageStatus.WITHDRAWN, revised_at=revised),
        ],
    )
    html = await (await admin.get("/admin/conversations/conv-revised")).text()
    assert "Edited by the user on 2026-11-07 00:30:00 UTC;" in html
    assert "The user deleted this message on 2026-11-07 00:30:00 UTC." in html


async def test_the_delete_confirmation_says_its_time_is_utc(admin: TestClient[Any, Any]) -> None:
    html = await (await admin.get(f"/admin/conversations/{PLAIN}/delete")).text()
    assert _facts(html)["Last activity"] == PLAIN_AT


async def test_the_json_api_keeps_iso_times_with_their_offset(
    admin: TestClient[Any, Any],
) -> None:
    body = await (await admin.get("/admin/api/conversations", params={"page_size": "1"})).json()
    assert body["items"][0]["lastActivityAt"] == "2026-11-04T09:00:00+00:00"
    transcript = await (await admin.get(f"/admin/api/conversations/{PLAIN}")).json()
    created = [m["createdAt"] for m in transcript["messages"]]
    assert created == ["2026-11-04T09:00:01+00:00", "2026-11-04T09:00:02+00:00"]
