"""A Japanese reviewer in headless Chromium (locale ja-JP, so the browser sends
Accept-Language: ja-JP) against the app on a real port: the sign-in page, the conversation list
and a transcript are in Japanese, the data as stored; the switch on the page turns them to
English, which the next pages keep although the browser still asks for Japanese, and back.
Screenshots go to test-artifacts/."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin.helpers import XSS_PROMPT
from tests.browser import ARTIFACTS

pytestmark = pytest.mark.browser


async def test_a_japanese_reviewer_reads_the_list_and_a_transcript_in_japanese(
    browser: Any, served: tuple[str, str]
) -> None:
    base, token = served
    context = await browser.new_context(locale="ja-JP")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto(f"{base}/admin/")
        assert await page.evaluate("document.documentElement.lang") == "ja"
        assert await page.get_by_role("heading", level=1).inner_text() == "サインイン"
        assert "1回限りのサインイン リンク" in await page.locator("main").inner_text()

        await page.goto(f"{base}/admin/login?token={token}")
        assert page.url == f"{base}/admin/"
        assert await page.title() == "会話一覧 · 管理"
        assert await page.get_by_role("heading", level=1).inner_text() == "会話一覧"
        headers = await page.locator("table[data-testid=conversations] th").all_inner_texts()
        assert headers == [
            "最終更新（UTC）",
            "タイトル",
            "ユーザー",
            "テナント",
            "チャネル",
            "メッセージ数",
            "フラグ",
        ]
        flagged = page.locator("tr[data-conversation=conv-flagged]")
        assert await flagged.locator(".badge.flag").inner_text() == "暴力"
        await page.get_by_label("カテゴリ").select_option(label="暴力")
        await page.get_by_role("button", name="絞り込む").click()
        await page.wait_for_url("**category=violence**")
        assert await page.locator("[data-conversation]").count() == 1
        await page.screenshot(path=str(ARTIFACTS / "admin-ja-list.png"), full_page=True)

        # The title is stored data: shown as written.
        await page.get_by_role("link", name="Violent request").click()
        await page.wait_for_url("**/admin/conversations/conv-flagged")
        assert await page.title() == "Violent request – 会話履歴 · 管理"
        assert await page.get_by_test_id("message-text").first.inner_text() == XSS_PROMPT
        verdicts = await page.get_by_test_id("verdict").all_inner_texts()
        assert "プロンプト: 暴力（中） · ブロック済み" in verdicts
        assert "回答: 暴力（高） · ブロック済み" in verdicts
        await page.get_by_text("ユーザーに表示されなかった回答（レビュー担当者のみ）").click()
        assert (
            await page.get_by_role("button", name="ユーザーを開示（監査ログに記録）").count() == 1
        )
        await page.screenshot(path=str(ARTIFACTS / "admin-ja-transcript.png"), full_page=True)

        # The switch: English, kept on the next page though the browser asks for Japanese.
        await page.get_by_role("button", name="English").click()
        await page.wait_for_url("**/admin/conversations/conv-flagged")
        assert await page.evaluate("document.documentElement.lang") == "en"
        assert "prompt: violence (medium) · filtered" in (
            await page.get_by_test_id("verdict").all_inner_texts()
        )
        await page.get_by_role("link", name="← Conversations").click()
        assert await page.get_by_role("heading", level=1).inner_text() == "Conversations"
        await page.get_by_role("button", name="日本語").click()
        await page.wait_for_url(f"{base}/admin/")
        assert await page.get_by_role("heading", level=1).inner_text() == "会話一覧"
        assert not errors, errors
    finally:
        await context.close()
