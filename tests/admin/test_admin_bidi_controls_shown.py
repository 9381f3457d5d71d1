"""Text that reorders itself cannot spoof a reviewer: a right-to-left override in a title or a
message ("invoice \u202egnp.exe" shows as "invoice exe.png") is printed named, as [U+202E],
on the list and the transcript, and so are other control characters a browser shows as nothing
(a NUL, an escape). The JSON API keeps the text as stored."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from storage.models import Role
from tests.admin.helpers import _conversation as seed_conversation
from tests.admin.helpers import _msg as message
from tests.admin.test_admin_review import signed_in_admin
from tests.conftest import AppFactory

SPOOF = "invoice \u202egnp.exe"


async def test_a_right_to_left_override_is_shown_named_on_the_pages(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    admin: TestClient[Any, Any] = await signed_in_admin(await make_app(), caplog)
    await seed_conversation(
        admin.server.app[STORE],
        "conv-spoof",
        "mallory@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title=SPOOF,
        at=datetime(2026, 11, 20, tzinfo=UTC),
        messages=[
            message(Role.USER, f"please pay {SPOOF} \u2067today\u2069", tokens=9),
            message(Role.ASSISTANT, "a\x00b\x1b[0m\tc\nd\x85", tokens=3),
        ],
    )

    for path in ("/admin/", "/admin/conversations/conv-spoof"):
        page = await (await admin.get(path)).text()
        assert "invoice [U+202E]gnp.exe" in page, path
        assert "\u202e" not in page and "\u2067" not in page, path
    transcript = await (await admin.get("/admin/conversations/conv-spoof")).text()
    assert "[U+2067]today[U+2069]" in transcript
    # Tabs and line breaks are text; the rest is named.
    assert "a[U+0000]b[U+001B][0m\tc\nd[U+0085]" in transcript
    assert "\x00" not in transcript and "\x1b" not in transcript

    api = await (await admin.get("/admin/api/conversations/conv-spoof")).json()
    assert SPOOF in json.dumps(api, ensure_ascii=False)
