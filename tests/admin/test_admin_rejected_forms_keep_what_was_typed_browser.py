"""A rejected admin form keeps what was typed, in headless Chromium against the app on a real
port: the admin fixes only the field at fault, which has the focus, and sends the form again.
Deleting a user and a conversation with a wrong confirmation, revealing a user with a blank
reason, and filtering the list and the audit log by a user id without a reason."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin.test_admin_browser import signed_in_page
from tests.browser import ARTIFACTS

pytestmark = pytest.mark.browser

REASON = 'erasure request "7" <b>by mail</b>'
ALICE = "alice@contoso.com"


async def _focused(page: Any) -> str:
    """The name of the focused field, once the page's `autofocus` has been applied: the browser
    applies it at a later rendering step, not as the page loads (a loaded machine shows it)."""
    await page.wait_for_function(
        "document.activeElement && document.activeElement.name", timeout=5000
    )
    name: str = await page.evaluate("document.activeElement.name || ''")
    return name


async def _border(field: Any) -> str:
    color: str = await field.evaluate("e => getComputedStyle(e).borderTopColor")
    return color


BAD = "rgb(179, 38, 30)"  # admin.css --bad


async def test_an_admin_fixes_only_the_field_at_fault_of_a_rejected_deletion(
    browser: Any, served: tuple[str, str]
) -> None:
    flagged = "/admin/conversations/conv-flagged"
    async with signed_in_page(browser, served, flagged) as (base, page, events):
        await page.get_by_role("link", name="Delete all data of this user…").click()
        await page.wait_for_url("**/admin/users/delete?s=*")
        user = await page.get_by_test_id("delete-user").inner_text()
        reason = page.get_by_label("Reason for deletion")
        confirm = page.locator('form[action="/admin/users/delete"] input[name=confirm]')
        await reason.fill(REASON)
        await confirm.fill(user[:-1])
        await page.get_by_role("button", name="Delete", exact=True).click()

        alert = await page.locator("[role=alert]").inner_text()
        assert "repeat the user exactly" in alert
        assert await reason.input_value() == REASON
        assert await confirm.input_value() == user[:-1]
        assert await confirm.get_attribute("aria-invalid") == "true"
        assert await _focused(page) == "confirm"
        # The field at fault stands out to the eye too; the one that was right does not.
        assert await _border(confirm) == BAD
        assert await _border(reason) != BAD
        await page.screenshot(
            path=str(ARTIFACTS / "admin-delete-user-rejected-keeps-input.png"), full_page=True
        )
        await confirm.fill(user)
        await page.get_by_role("button", name="Delete", exact=True).click()
        assert (await page.get_by_test_id("deleted").inner_text()).startswith("Deleted")

        await page.goto(f"{base}/admin/conversations/conv-plain/delete")
        reason = page.get_by_label("Reason for deletion")
        confirm = page.get_by_label("Type the conversation id shown above to confirm")
        await reason.fill(REASON)
        await confirm.fill("conv-plan")
        await page.get_by_role("button", name="Delete conversation").click()
        assert (
            "repeat the conversation id exactly" in await page.locator("[role=alert]").inner_text()
        )
        assert await reason.input_value() == REASON
        assert await confirm.input_value() == "conv-plan"
        assert await _focused(page) == "confirm"
        assert await _border(confirm) == BAD and await _border(reason) != BAD
        await confirm.fill("conv-plain")
        await page.get_by_role("button", name="Delete conversation").click()
        await page.wait_for_url(f"{base}/admin/?deleted=*")

        # Both deletions recorded the reason as typed once (the session's API, same cookie).
        audit = await (await page.request.get(f"{base}/admin/api/audit")).json()
        reasons = [
            item["detail"].get("reason")
            for item in audit["items"]
            if item["action"] in ("delete_user", "delete_conversation")
            and item["detail"].get("outcome") == "requested"
        ]
        assert reasons == [REASON, REASON]
        assert not [e for e in events if e.startswith(("dialog", "pageerror"))], events


async def test_an_admin_gives_the_missing_reason_of_a_reveal_and_of_filters_by_user_id(
    browser: Any, served: tuple[str, str]
) -> None:
    flagged = "/admin/conversations/conv-flagged"
    async with signed_in_page(browser, served, flagged) as (base, page, events):
        await page.get_by_label("Reason for reveal").fill("   ")
        await page.get_by_role("button", name="Reveal user (audited)").click()
        assert "to reveal a user" in await page.locator("[role=alert]").inner_text()
        reason = page.get_by_label("Reason for reveal")
        assert await reason.input_value() == "   "
        assert await _focused(page) == "reason"
        await reason.fill("HR case 7")
        await page.get_by_role("button", name="Reveal user (audited)").click()
        assert await page.get_by_test_id("revealed-user").inner_text() == ALICE

        await page.goto(f"{base}/admin/")
        await page.get_by_label("User", exact=True).fill(ALICE)
        await page.get_by_label("Search").fill("expense")
        await page.get_by_role("button", name="Filter").click()
        assert "to filter by a user id" in await page.locator("[role=alert]").inner_text()
        assert await page.get_by_label("User", exact=True).input_value() == ALICE
        assert await page.get_by_label("Search").input_value() == "expense"
        assert await _focused(page) == "reason"
        await page.screenshot(
            path=str(ARTIFACTS / "admin-list-filter-rejected-keeps-input.png"), full_page=True
        )
        await page.get_by_label("Reason", exact=True).fill("complaint 42")
        await page.get_by_role("button", name="Filter").click()
        rows = page.locator("[data-conversation]")
        assert await rows.count() == 1
        assert await rows.first.get_attribute("data-conversation") == "conv-error"

        await page.goto(f"{base}/admin/audit")
        await page.get_by_label("User", exact=True).fill(ALICE)
        await page.get_by_role("button", name="Filter").click()
        assert "in the audit log" in await page.locator("[role=alert]").inner_text()
        assert await page.get_by_label("User", exact=True).input_value() == ALICE
        assert await _focused(page) == "reason"
        await page.get_by_label("Reason", exact=True).fill("complaint 42")
        await page.get_by_role("button", name="Filter").click()
        assert await page.locator("tr[data-action]").count() >= 1
        assert not [e for e in events if e.startswith(("dialog", "pageerror"))], events
