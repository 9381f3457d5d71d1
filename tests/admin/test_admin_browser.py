"""The admin review in headless Chromium against the app on a real port: sign in with the
printed one-time link, filter flagged conversations, open a transcript whose messages hold
`<script>` and `<img onerror>` and prove nothing runs, export, download a user's data, delete
the user and find both in the audit log. Screenshots go to test-artifacts/."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from app import STORE, create_app
from config import Settings
from storage.models import Role
from tests.admin.helpers import XSS_PROMPT, XSS_WITHHELD, local_link_token
from tests.admin.helpers import _conversation as seed_conversation
from tests.admin.helpers import _msg as message
from tests.browser import ARTIFACTS

pytestmark = pytest.mark.browser

# The width WCAG 1.4.10 Reflow asks pages to fit.
NARROW = {"width": 320, "height": 640}


async def new_page(browser: Any, **context_options: Any) -> tuple[Any, Any, list[str]]:
    """A page in a new browser context (Playwright's `new_context` options), and the list its
    dialogs, console messages and page errors are written to."""
    context = await browser.new_context(accept_downloads=True, **context_options)
    page = await context.new_page()
    events: list[str] = []
    page.on("dialog", lambda dialog: events.append(f"dialog: {dialog.message}"))
    page.on("console", lambda message: events.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: events.append(f"pageerror: {error}"))
    return context, page, events


@asynccontextmanager
async def signed_in_page(
    browser: Any, served: tuple[str, str], path: str, **context_options: Any
) -> AsyncIterator[tuple[str, Any, list[str]]]:
    """A page signed in with the one-time link of `served`, then opened at `path`: (base URL,
    page, its events as `new_page` records them). Its browser context closes on the way out."""
    base, token = served
    context, page, events = await new_page(browser, **context_options)
    try:
        await page.goto(f"{base}/admin/login?token={token}")
        await page.goto(f"{base}{path}")
        yield base, page, events
    finally:
        await context.close()


async def test_reviewer_flow_in_a_real_browser_runs_no_message_script(
    browser: Any, served: tuple[str, str]
) -> None:
    base, token = served
    context, page, events = await new_page(browser)
    try:
        await page.goto(f"{base}/admin/")
        assert "one-time" in await page.locator("main").inner_text()

        events.clear()  # the page before sign-in is a 401, which the console reports
        await page.goto(f"{base}/admin/login?token={token}")
        assert page.url == f"{base}/admin/"
        assert await page.get_by_test_id("signed-in-as").inner_text() == "Local admin"
        assert await page.locator("[data-conversation]").count() == 4
        # An icon of its own: without one the browser asks for /favicon.ico, a 404 every page.
        icon = await page.locator("link[rel=icon]").get_attribute("href")
        assert icon is not None and (await page.request.get(f"{base}{icon}")).status == 200

        await page.select_option("select[name=flagged]", "true")
        await page.select_option("select[name=category]", "violence")
        await page.get_by_role("button", name="Filter").click()
        await page.wait_for_url("**category=violence**")
        rows = page.locator("[data-conversation]")
        assert await rows.count() == 1
        assert await rows.first.get_attribute("data-conversation") == "conv-flagged"
        await page.screenshot(path=str(ARTIFACTS / "admin-list-flagged.png"), full_page=True)

        await page.get_by_role("link", name="Violent request").click()
        await page.wait_for_url("**/admin/conversations/conv-flagged")
        texts = page.get_by_test_id("message-text")
        assert await texts.first.inner_text() == XSS_PROMPT
        await page.locator("details.withheld summary").click()
        assert await page.locator("details.withheld .text").inner_text() == XSS_WITHHELD
        verdicts = await page.get_by_test_id("verdict").all_inner_texts()
        assert "prompt: violence (medium) · filtered" in verdicts
        assert "output: violence (high) · filtered" in verdicts
        # Nothing from the messages ran: no global set, no element created, no dialog.
        assert await page.evaluate("typeof window.__xss") == "undefined"
        assert await page.locator("main img").count() == 0
        assert await page.locator("main script").count() == 0
        assert not [e for e in events if e.startswith(("dialog", "pageerror"))], events
        # Nor did anything fail to load (a missing icon included).
        assert not [e for e in events if "Failed to load" in e], events
        await page.screenshot(path=str(ARTIFACTS / "admin-transcript.png"), full_page=True)
    finally:
        await context.close()


async def test_admin_exports_deletes_a_user_and_finds_it_in_the_audit_log(
    browser: Any, served: tuple[str, str]
) -> None:
    flagged = "/admin/conversations/conv-flagged"
    async with signed_in_page(browser, served, flagged) as (base, page, _):
        await page.screenshot(path=str(ARTIFACTS / "admin-transcript-actions.png"), full_page=True)

        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="CSV").click()
        download = await download_info.value
        path = await download.path()
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        assert [r["role"] for r in rows] == ["user", "assistant"]
        assert rows[0]["text"] == XSS_PROMPT

        pseudonym = await page.get_by_test_id("conversation-user").inner_text()
        assert pseudonym.startswith("p-")
        await page.get_by_role("link", name="Delete all data of this user…").click()
        await page.wait_for_url("**/admin/users/delete**")
        assert await page.get_by_test_id("delete-user").inner_text() == pseudonym
        # Everything about the user, kept before the deletion.
        await page.fill("[data-testid=export-user] input[name=reason]", "access request 42")
        await page.screenshot(path=str(ARTIFACTS / "admin-delete-confirm.png"), full_page=True)
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name="Export all data of this user").click()
        exported = json.loads((await (await download_info.value).path()).read_text("utf-8"))
        assert [c["id"] for c in exported["conversations"]] == ["conv-error", "conv-flagged"]
        assert XSS_PROMPT in [m["text"] for m in exported["messages"]]
        # A wrong confirmation deletes nothing.
        await page.fill("form[action='/admin/users/delete'] input[name=reason]", "erasure 42")
        await page.fill("input[name=confirm]", "someone else")
        await page.get_by_role("button", name="Delete").click()
        assert "repeat the user exactly" in await page.locator("[role=alert]").inner_text()
        await page.fill("form[action='/admin/users/delete'] input[name=reason]", "erasure 42")
        await page.fill("input[name=confirm]", pseudonym)
        await page.get_by_role("button", name="Delete").click()
        deleted = await page.get_by_test_id("deleted").inner_text()
        assert "Deleted 2 conversations, 4 messages and 0 saved dialog states" in deleted
        await page.screenshot(path=str(ARTIFACTS / "admin-deleted.png"), full_page=True)

        await page.goto(f"{base}/admin/")
        assert await page.locator("[data-conversation]").count() == 2

        await page.get_by_role("link", name="Audit log").click()
        await page.wait_for_url("**/admin/audit")
        # Views of the list are on the log too, shown when asked for (as reads of the log).
        first = page.locator("tr[data-action]").first
        assert await first.get_attribute("data-action") == "delete_user"
        assert pseudonym in await first.inner_text()
        actions = await page.locator("tr[data-action]").evaluate_all(
            "rows => rows.map(r => r.dataset.action)"
        )
        # A deletion and a user's data export are each recorded twice: the request before
        # anything is deleted or sent, then its outcome. The deletion page counted the user's
        # conversations: a read of their data, recorded too.
        assert actions == [
            "delete_user",
            "delete_user",
            "export_user",
            "export_user",
            "view_user_counts",
            "export_conversation",
            "view_transcript",
        ]
        await page.screenshot(path=str(ARTIFACTS / "admin-audit.png"), full_page=True)


async def test_no_admin_page_scrolls_sideways_at_320_pixels(
    browser: Any, served: tuple[str, str]
) -> None:
    """WCAG 1.4.10 Reflow: 320 CSS pixels wide (1280 at 400 % zoom), the header wraps, long ids
    break and only the tables scroll, inside their own focusable region."""
    flagged = "/admin/conversations/conv-flagged"
    async with signed_in_page(browser, served, flagged, viewport=NARROW) as (base, page, _):
        pseudonym = await page.get_by_test_id("conversation-user").inner_text()
        pages = {
            "list": "/admin/",
            "transcript": "/admin/conversations/conv-flagged",
            "delete": f"/admin/users/delete?user={pseudonym}",
            "audit": "/admin/audit",
        }
        for name, path in pages.items():
            await page.goto(f"{base}{path}")
            width = await page.evaluate("document.documentElement.scrollWidth")
            await page.screenshot(path=str(ARTIFACTS / f"admin-320-{name}.png"), full_page=True)
            assert width <= 320, (name, width)
            header = await page.evaluate(
                "getComputedStyle(document.querySelector('header.top')).flexWrap"
            )
            assert header == "wrap", name
        # The wide table scrolls in a named, keyboard-reachable region.
        await page.goto(f"{base}/admin/")
        region = page.get_by_role("region", name="Conversations")
        assert await region.get_attribute("tabindex") == "0"
        assert await region.evaluate("el => el.scrollWidth > el.clientWidth")


async def test_a_title_without_spaces_breaks_instead_of_widening_its_transcript_page(
    browser: Any,
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pasted link or a long word as the first message (and so the title) wraps in the
    heading: at 320 pixels and on a desktop width alike the page does not scroll sideways."""
    caplog.set_level(logging.INFO, logger="app")
    server: TestServer = await aiohttp_server(create_app(make_settings()))
    base, token = str(server.make_url("")).rstrip("/"), local_link_token(caplog)
    title = "https://intranet.contoso.com/" + "x" * 160
    await seed_conversation(
        server.app[STORE],
        "conv-long-title",
        "dave@contoso.com",
        tenant="tenant-a",
        channel="directline",
        title=title,
        at=datetime(2026, 11, 1, tzinfo=UTC),
        messages=[message(Role.USER, title, tokens=40)],
    )
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{base}/admin/login?token={token}")
        for width in (320, 1200):
            await page.set_viewport_size({"width": width, "height": 700})
            await page.goto(f"{base}/admin/conversations/conv-long-title")
            assert await page.get_by_role("heading", level=1).inner_text() == title
            assert await page.evaluate("document.documentElement.scrollWidth") <= width, width
    finally:
        await context.close()
