"""Deleting one conversation in headless Chromium against the app on a real port: from the
transcript's link to the confirmation page (a wrong confirmation deletes nothing), then back on
the list with the result, and both audit records on the audit page. The confirmation page
reflows at 320 CSS pixels like the other admin pages."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin.test_admin_browser import NARROW, signed_in_page
from tests.browser import ARTIFACTS

pytestmark = pytest.mark.browser


async def test_an_admin_deletes_one_conversation_from_its_transcript_and_finds_it_audited(
    browser: Any,
    served: tuple[str, str],
) -> None:
    flagged = "/admin/conversations/conv-flagged"
    async with signed_in_page(browser, served, flagged) as (base, page, events):
        await page.get_by_role("link", name="Delete this conversation…").click()
        await page.wait_for_url("**/admin/conversations/conv-flagged/delete")
        assert await page.get_by_test_id("delete-conversation").inner_text() == "conv-flagged"
        await page.screenshot(
            path=str(ARTIFACTS / "admin-conversation-delete-confirm.png"), full_page=True
        )

        # A wrong confirmation deletes nothing.
        await page.get_by_label("Reason for deletion").fill("password pasted, ticket 7")
        await page.get_by_label("Type the conversation id shown above to confirm").fill("conv")
        await page.get_by_role("button", name="Delete conversation").click()
        alert = await page.locator("[role=alert]").inner_text()
        assert "repeat the conversation id exactly" in alert
        await page.get_by_label("Reason for deletion").fill("password pasted, ticket 7")
        await page.get_by_label("Type the conversation id shown above to confirm").fill(
            "conv-flagged"
        )
        await page.get_by_role("button", name="Delete conversation").click()

        await page.wait_for_url(f"{base}/admin/?deleted=*")
        result = await page.get_by_test_id("deleted").inner_text()
        assert result.startswith("Deleted conversation conv-flagged: 2 messages, its summary")
        rows = page.locator("[data-conversation]")
        assert await rows.count() == 3
        assert await page.locator('[data-conversation="conv-flagged"]').count() == 0
        await page.screenshot(path=str(ARTIFACTS / "admin-conversation-deleted.png"))
        # Reloading shows the list again; nothing is posted twice.
        await page.reload()
        assert await rows.count() == 3

        await page.get_by_role("link", name="Audit log").click()
        await page.wait_for_url("**/admin/audit")
        actions = await page.locator("tr[data-action]").evaluate_all(
            "rows => rows.map(r => r.dataset.action)"
        )
        assert actions[:2] == ["delete_conversation", "delete_conversation"]
        deleted = page.locator("tr[data-action=delete_conversation]").first
        assert "conv-flagged" in await deleted.inner_text()
        assert not [e for e in events if e.startswith(("dialog", "pageerror"))], events


async def test_the_conversation_delete_confirmation_does_not_scroll_sideways_at_320_pixels(
    browser: Any,
    served: tuple[str, str],
) -> None:
    delete = "/admin/conversations/conv-flagged/delete"
    async with signed_in_page(browser, served, delete, viewport=NARROW) as (_, page, _):
        assert await page.get_by_test_id("delete-conversation").inner_text() == "conv-flagged"
        await page.screenshot(
            path=str(ARTIFACTS / "admin-320-conversation-delete.png"), full_page=True
        )
        assert await page.evaluate("document.documentElement.scrollWidth") <= 320
