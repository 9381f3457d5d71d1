"""After an action succeeds (a filter applied, a reveal, a conversation or a user deleted), the
page that says what happened takes focus on that message, as a rejected form focuses its field:
a status present when the page loads is not announced, and focus on <body> says nothing. The
page's title says what happened too (the first thing a screen reader reads, and what a tab
shows), in English and Japanese. In headless Chromium against the app on a real port, signed in
with the one-time link (tests/admin/conftest.py `served`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin.test_admin_browser import signed_in_page

pytestmark = pytest.mark.browser


async def focused(page: Any) -> str | None:
    """The `data-testid` of the element that has focus, once the page's `autofocus` has been
    applied: the browser applies it at a later rendering step, after the load event a URL wait
    returns on (a loaded machine shows it); focus that never leaves <body> times out."""
    await page.wait_for_function(
        "document.activeElement && document.activeElement.dataset.testid", timeout=5000
    )
    found: str | None = await page.evaluate("document.activeElement.dataset.testid ?? null")
    return found


async def test_a_filtered_list_focuses_its_result_and_its_title_says_it_is_filtered(
    browser: Any, served: tuple[str, str]
) -> None:
    async with signed_in_page(browser, served, "/admin/") as (_, page, _):
        assert await page.title() == "Conversations · Admin"

        await page.get_by_label("Channel").fill("msteams")
        await page.get_by_role("button", name="Filter").click()
        await page.wait_for_url("**/admin/?channel=msteams")

        assert await focused(page) == "filtered"
        assert await page.get_by_test_id("filtered").inner_text() == (
            "Filtered: 2 conversations on this page."
        )
        assert await page.title() == "Filtered – Conversations · Admin"
        await page.get_by_role("button", name="日本語").click()
        await page.wait_for_url("**/admin/?channel=msteams")
        assert await focused(page) == "filtered"
        assert await page.title() == "絞り込み結果（会話一覧） · 管理"


async def test_a_reveals_result_is_focused_and_titled(
    browser: Any, served: tuple[str, str]
) -> None:
    async with signed_in_page(browser, served, "/admin/conversations/conv-flagged") as (
        _,
        page,
        _,
    ):
        await page.get_by_label("Reason for reveal").fill("HR case 7")
        await page.get_by_role("button", name="Reveal user (audited)").click()
        await page.wait_for_url("**/admin/revealed?s=*")

        assert await focused(page) == "reveal-result"
        assert "alice@contoso.com" in await page.get_by_test_id("reveal-result").inner_text()
        assert await page.title() == "User revealed · Admin"


async def test_a_conversations_deletion_is_focused_and_titled_on_the_list(
    browser: Any, served: tuple[str, str]
) -> None:
    async with signed_in_page(browser, served, "/admin/conversations/conv-error/delete") as (
        _,
        page,
        _,
    ):
        await page.get_by_label("Reason for deletion").fill("ticket 7")
        await page.get_by_label("Type the conversation id shown above to confirm").fill(
            "conv-error"
        )
        await page.get_by_role("button", name="Delete conversation").click()
        await page.wait_for_url("**/admin/?deleted=*")

        assert await focused(page) == "deleted"
        assert await page.title() == "Conversation deleted – Conversations · Admin"


async def test_a_users_deletion_is_focused_and_titled(
    browser: Any, served: tuple[str, str]
) -> None:
    async with signed_in_page(browser, served, "/admin/conversations/conv-flagged") as (
        _,
        page,
        _,
    ):
        await page.get_by_role("link", name="Delete all data of this user…").click()
        await page.wait_for_url("**/admin/users/delete**")
        pseudonym = await page.get_by_test_id("delete-user").inner_text()
        form = "form[action='/admin/users/delete']"
        await page.fill(f"{form} input[name=reason]", "erasure 42")
        await page.fill(f"{form} input[name=confirm]", pseudonym)
        await page.locator(f"{form} button[type=submit]").click()
        await page.wait_for_url("**/admin/users/deleted?s=*")

        assert await focused(page) == "deleted"
        assert await page.title() == "User data deleted · Admin"
