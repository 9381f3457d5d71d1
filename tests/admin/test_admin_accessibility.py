"""Accessibility of the admin pages' HTML (WCAG 2.1 AA): language of parts, page titles, the
delete confirmation's error wiring, distinct labels, the skip link and the current nav link."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from admin.web import text_lang
from app import STORE
from storage.models import Role
from tests.admin.helpers import T0, _conversation, _msg
from tests.admin.test_admin_review import signed_in_admin
from tests.conftest import AppFactory

API = "/admin/api/conversations"


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    caplog.set_level(logging.INFO, logger="app")
    return await signed_in_admin(await make_app(), caplog)


def page_title(html: str) -> str:
    match = re.search(r"<title>(.*?)</title>", html, re.S)
    assert match
    return match.group(1).strip()


def test_kana_or_kanji_mark_a_text_japanese() -> None:
    assert text_lang("出張規程について") == "ja"
    assert text_lang("カタカナ") == "ja"
    assert text_lang("Travel policy") == ""
    assert text_lang("") == ""
    assert text_lang(None) == ""


async def test_japanese_titles_and_messages_carry_their_language(
    admin: TestClient[Any, Any],
) -> None:
    await _conversation(
        admin.server.app[STORE],
        "conv-ja",
        "taro@contoso.com",
        tenant="tenant-a",
        channel="directline",
        title="出張規程について",
        at=T0,
        messages=[
            _msg(Role.USER, "出張の承認は誰がしますか？", locale="ja-JP"),
            _msg(Role.ASSISTANT, "Managers approve travel.", locale="en-US"),
        ],
    )
    listing = await (await admin.get("/admin/")).text()
    assert 'lang="ja">出張規程について</a>' in listing
    assert 'lang="ja">Travel policy' not in listing
    transcript = await (await admin.get("/admin/conversations/conv-ja")).text()
    assert re.search(r'<h1><span dir="auto" lang="ja">出張規程について</span></h1>', transcript)
    assert re.search(r'data-testid="message-text" dir="auto" lang="ja-JP">出張の承認は', transcript)
    assert re.search(r'data-testid="message-text" dir="auto" lang="en-US">Managers', transcript)


async def test_every_transcript_has_its_own_title_and_errors_say_what_they_are(
    admin: TestClient[Any, Any],
) -> None:
    flagged = await (await admin.get("/admin/conversations/conv-flagged")).text()
    assert page_title(flagged) == "Violent request – Transcript · Admin"
    missing = await admin.get("/admin/conversations/no-such-conversation")
    assert missing.status == 404
    assert page_title(await missing.text()) == "Not found · Admin"


async def test_a_rejected_deletion_ties_its_error_to_the_confirmation_field(
    admin: TestClient[Any, Any],
) -> None:
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    first = await (await admin.get(f"/admin/users/delete?user={pseudonym}")).text()
    assert "aria-invalid" not in first and page_title(first) == "Delete user data · Admin"
    rejected = await admin.post(
        "/admin/users/delete",
        data={"user": pseudonym, "confirm": "x", "reason": "erasure request 7"},
    )
    assert rejected.status == 400
    html = await rejected.text()
    assert page_title(html) == "Error: Delete user data · Admin"
    error = re.search(r'<p class="alert" role="alert" id="([^"]+)">([^<]*)</p>', html)
    assert error and error.group(2) == "The confirmation must repeat the user exactly."
    field = re.search(r'<input type="text" name="confirm"[^>]*>', html)
    assert field
    assert 'aria-invalid="true"' in field.group(0)
    assert f'aria-describedby="{error.group(1)}"' in field.group(0)
    assert "autofocus" in field.group(0)


async def test_the_two_reason_fields_on_a_transcript_have_distinct_labels(
    admin: TestClient[Any, Any],
) -> None:
    html = await (await admin.get("/admin/conversations/conv-flagged")).text()
    labels = re.findall(r"<label>([^<]*)<input[^>]*name=\"reason\"", html)
    assert sorted(label.strip() for label in labels) == [
        "Reason for data export",
        "Reason for reveal",
    ]


async def test_pages_start_with_a_skip_link_and_mark_the_current_nav_link(
    admin: TestClient[Any, Any],
) -> None:
    listing = await (await admin.get("/admin/")).text()
    assert '<a class="skip" href="#main">Skip to content</a>' in listing
    assert listing.index('class="skip"') < listing.index("<header")
    assert re.search(r'<main id="main"', listing)
    assert '<a href="/admin/" aria-current="page">Conversations</a>' in listing
    audit = await (await admin.get("/admin/audit")).text()
    assert '<a href="/admin/audit" aria-current="page">Audit log</a>' in audit
    assert '<a href="/admin/">Conversations</a>' in audit
