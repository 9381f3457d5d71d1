"""The admin text search over real HTTP on both stores (tests/stores.py): full-width and
half-width forms, letter case and variation selectors are the same to it, in titles and in
message text, and the titles are shown as they were stored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app import STORE
from config import Settings
from storage.base import Store
from storage.models import Message, Role, SummaryDelta
from tests.admin.helpers import sign_in_locally
from tests.conftest import AppFactory
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401

API = "/admin/api/conversations"
T0 = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
KATSURAGI_WITH_SELECTOR = "葛\U000e0100城市"
# id: (title, the user's message), newest first.
CONVERSATIONS = {
    "conv-password": ("ﾊﾟｽﾜｰﾄﾞ再設定の手順", "ﾊﾟｽﾜｰﾄﾞを忘れました"),
    "conv-vpn": ("ＶＰＮ接続ができません", "自宅から接続できません"),
    "conv-sumifs": ("表計算の質問", "条件付きで合計するにはsumifsを使う方法を教えて"),
    "conv-katsuragi": ("住所の確認", f"{KATSURAGI_WITH_SELECTOR}の郵便番号は？"),
    "conv-plain": ("Quarterly report", "Summarize the budget"),
}


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store


async def _seed(store: Store) -> None:
    for number, (conversation_id, (title, text)) in enumerate(reversed(CONVERSATIONS.items())):
        at = T0 + timedelta(minutes=number)
        await store.add_message(
            Message(
                id=f"{conversation_id}-1",
                conversation_id=conversation_id,
                seq=1,
                role=Role.USER,
                text=text,
                user_id="hanako@contoso.com",
                tenant_id="tenant-a",
                channel_id="msteams",
                created_at=at,
            )
        )
        await store.apply_summary_delta(
            SummaryDelta(
                conversation_id=conversation_id,
                user_id="hanako@contoso.com",
                channel_id="msteams",
                tenant_id="tenant-a",
                title=title,
                at=at,
                messages=1,
            )
        )


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    await _seed(client.server.app[STORE])
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    return client


async def _found(client: TestClient[Any, Any], text: str) -> list[str]:
    response = await client.get(API, params={"q": text})
    assert response.status == 200, await response.text()
    return [item["id"] for item in (await response.json())["items"]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Half-width katakana in the title, full-width in the search, and back.
        ("パスワード", ["conv-password"]),
        ("ﾊﾟｽﾜｰﾄﾞ", ["conv-password"]),
        ("再設定", ["conv-password"]),
        # Full-width letters in the title; half-width, either case, in the search.
        ("vpn", ["conv-vpn"]),
        ("VPN", ["conv-vpn"]),
        ("ｖｐｎ接続", ["conv-vpn"]),
        # In a message's text: full-width in the search, half-width stored.
        ("ｓｕｍｉｆｓ", ["conv-sumifs"]),
        ("ＳＵＭＩＦＳを使う", ["conv-sumifs"]),
        # A variation selector on either side.
        ("葛城市", ["conv-katsuragi"]),
        (KATSURAGI_WITH_SELECTOR, ["conv-katsuragi"]),
        ("ｑｕａｒｔｅｒｌｙ", ["conv-plain"]),
        ("パスワードを忘れ", ["conv-password"]),
        ("ログイン", []),
    ],
)
async def test_search_treats_full_and_half_width_case_and_variation_selectors_alike(
    admin: TestClient[Any, Any], text: str, expected: list[str]
) -> None:
    assert await _found(admin, text) == expected


async def test_search_shows_titles_as_stored_and_the_page_finds_them_too(
    admin: TestClient[Any, Any],
) -> None:
    response = await admin.get(API, params={"q": "パスワード"})
    items = (await response.json())["items"]
    assert [item["title"] for item in items] == ["ﾊﾟｽﾜｰﾄﾞ再設定の手順"]

    page = await admin.get("/admin/", params={"q": "vpn"})
    assert page.status == 200
    html = await page.text()
    assert "ＶＰＮ接続ができません" in html
    assert "ﾊﾟｽﾜｰﾄﾞ再設定の手順" not in html

    transcript = await admin.get("/admin/conversations/conv-katsuragi")
    assert f"{KATSURAGI_WITH_SELECTOR}の郵便番号は？" in await transcript.text()
