"""Every admin form that refuses what was typed comes back with it, over real HTTP on real
SQLite: deleting a user or a conversation (a confirmation that does not match, a reason missing
or too long), revealing a user and exporting their data (the reason), the list's filters (a user
id without a reason, a search too long, a pseudonym no key opens, a Reviewer naming an id) and
the audit log's. The page says what is wrong, marks the field at fault (and focuses it), and its
fields hold what the admin typed, escaped, so only that field is typed again: a reason that was
too long too, so it can be shortened, but at most four reasons' worth of it. What was typed is shown
in those fields only: never in a link, the language switch's return address, or a log."""

from __future__ import annotations

import logging
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from admin.web import MAX_REASON_CHARS
from tests.admin.conftest import seeded
from tests.admin.helpers import appservice_header
from tests.admin.test_admin_review import signed_in_admin
from tests.conftest import AppFactory

API = "/admin/api/conversations"
ALICE = "alice@contoso.com"
# A reason that would break the page were it not escaped, in both scripts the pages are read in.
REASON = 'ticket "7" <script>window.__typed = 1</script> & 苦情'
TOO_LONG = "r" * (MAX_REASON_CHARS + 1)
PASTED = "p" * (10 * MAX_REASON_CHARS)
# How much of a field a rejected form shows again (admin.web.MAX_TYPED_CHARS).
FOUR_REASONS = 4 * MAX_REASON_CHARS


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    caplog.set_level(logging.DEBUG)
    return await signed_in_admin(await make_app(), caplog)


class _Page(HTMLParser):
    """A page's forms (their fields by action and name), links, alert and where text sits."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: dict[str, dict[str, dict[str, str]]] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._form: dict[str, dict[str, str]] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        self.tags.append((tag, found))
        if tag == "form":
            self._form = self.forms.setdefault(found.get("action", ""), {})
        elif tag in ("input", "select") and self._form is not None and "name" in found:
            self._form.setdefault(found["name"], found)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def field(self, action: str, name: str) -> dict[str, str]:
        return self.forms[action][name]


def _marked(field: dict[str, str], focused: bool = True) -> bool:
    return (
        field.get("aria-invalid") == "true"
        and field.get("aria-describedby", "") != ""
        and ("autofocus" in field) == focused
    )


def _only_in_fields(page: _Page, typed: str, fields: set[str]) -> None:
    """`typed` is on the page only as the value of the named form fields: not in a link, the
    language switch's `next`, an attribute or text."""
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if typed in value:
                assert tag == "input" and name == "value", (tag, name)
                assert attrs.get("name") in fields, attrs.get("name")
    assert not [text for text in page.text if typed in text]


def _not_logged(caplog: pytest.LogCaptureFixture, *typed: str) -> None:
    """The app logs none of it (aiohttp's access log is off in the app as served)."""
    for record in caplog.records:
        if record.name.startswith("aiohttp.access"):
            continue
        said = record.getMessage() + repr(record.__dict__)
        assert not [t for t in typed if t in said], record.name


async def _alice(client: TestClient[Any, Any]) -> str:
    user: str = (await (await client.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    return user


async def _form_back(
    client: TestClient[Any, Any], path: str, typed: dict[str, str], status: int = 400
) -> tuple[str, _Page]:
    """The page the form at `path` comes back as when sent (GET) with `typed`: its status is
    `status` and each typed field holds what was typed. Returns its HTML and its fields."""
    refused = await client.get(path, params=typed)
    assert refused.status == status
    html = await refused.text()
    page = _Page(html)
    for name, value in typed.items():
        assert page.field(path, name)["value"] == value, name
    return html, page


async def _audit_actions(client: TestClient[Any, Any]) -> list[str]:
    items = (await (await client.get("/admin/api/audit")).json())["items"]
    return [item["action"] for item in items]


async def test_a_rejected_user_deletion_keeps_the_reason_and_the_confirmation_as_typed(
    admin: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    alice = await _alice(admin)

    wrong = await admin.post(
        "/admin/users/delete", data={"user": alice, "confirm": "alice", "reason": REASON}
    )

    assert wrong.status == 400
    html = await wrong.text()
    assert "<script>window.__typed" not in html
    page = _Page(html)
    assert page.field("/admin/users/delete", "reason")["value"] == REASON
    assert page.field("/admin/users/delete", "confirm")["value"] == "alice"
    assert _marked(page.field("/admin/users/delete", "confirm"))
    assert "aria-invalid" not in page.field("/admin/users/delete", "reason")
    # The export form on the page is another form: it holds nothing of the deletion's.
    assert page.field("/admin/users/export", "reason").get("value", "") == ""
    _only_in_fields(page, REASON, {"reason"})

    blank = await admin.post(
        "/admin/users/delete", data={"user": alice, "confirm": f" {alice} ", "reason": "   "}
    )

    assert blank.status == 400
    page = _Page(await blank.text())
    assert page.field("/admin/users/delete", "confirm")["value"] == f" {alice} "
    assert page.field("/admin/users/delete", "reason")["value"] == "   "
    assert _marked(page.field("/admin/users/delete", "reason"))
    assert "aria-invalid" not in page.field("/admin/users/delete", "confirm")
    assert await _audit_actions(admin) == ["view_transcript"]
    _not_logged(caplog, REASON)


async def test_a_rejected_conversation_deletion_keeps_the_reason_and_the_confirmation_as_typed(
    admin: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    action = "/admin/conversations/conv-flagged/delete"

    wrong = await admin.post(action, data={"confirm": "conv-flag", "reason": REASON})

    assert wrong.status == 400
    html = await wrong.text()
    assert "<script>window.__typed" not in html
    page = _Page(html)
    assert page.field(action, "reason")["value"] == REASON
    assert page.field(action, "confirm")["value"] == "conv-flag"
    assert _marked(page.field(action, "confirm"))
    assert "aria-invalid" not in page.field(action, "reason")
    _only_in_fields(page, REASON, {"reason"})

    missing = await admin.post(action, data={"confirm": "conv-flagged"})

    assert missing.status == 400
    page = _Page(await missing.text())
    assert page.field(action, "confirm")["value"] == "conv-flagged"
    assert page.field(action, "reason")["value"] == ""
    assert _marked(page.field(action, "reason"))
    assert await _audit_actions(admin) == []
    _not_logged(caplog, REASON)


async def test_a_rejected_reveal_shows_its_form_again_with_the_reason_as_typed(
    admin: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    alice = await _alice(admin)
    typed = "  " + REASON + " " + TOO_LONG

    refused = await admin.post(
        "/admin/reveal", data={"user": alice, "reason": typed, "conversation": "conv-flagged"}
    )

    assert refused.status == 400
    html = await refused.text()
    assert "Give a reason (up to 500 characters) to reveal a user." in html
    assert ALICE not in html and "<script>window.__typed" not in html
    page = _Page(html)
    assert page.field("/admin/reveal", "reason")["value"] == typed
    assert _marked(page.field("/admin/reveal", "reason"))
    assert page.field("/admin/reveal", "user")["value"] == alice
    assert page.field("/admin/reveal", "conversation")["value"] == "conv-flagged"
    assert ("a", {"href": "/admin/conversations/conv-flagged"}) in page.tags
    _only_in_fields(page, REASON, {"reason"})
    # Nothing was revealed, so nothing is recorded; the form as given again reveals.
    assert await _audit_actions(admin) == ["view_transcript"]
    done = await admin.post(
        "/admin/reveal", data={"user": alice, "reason": "HR 7", "conversation": "conv-flagged"}
    )
    assert done.status == 200 and ALICE in await done.text()
    _not_logged(caplog, REASON)


async def test_a_rejected_user_export_shows_its_form_again_with_the_reason_as_typed(
    admin: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    alice = await _alice(admin)
    transcript = _Page(await (await admin.get("/admin/conversations/conv-flagged")).text())
    # The transcript's export form says where it came from, as its reveal form does.
    assert transcript.field("/admin/users/export", "conversation")["value"] == "conv-flagged"

    refused = await admin.post(
        "/admin/users/export",
        data={"user": alice, "reason": REASON + TOO_LONG, "conversation": "conv-flagged"},
    )

    assert refused.status == 400
    assert refused.headers["Content-Type"].startswith("text/html")
    html = await refused.text()
    assert "Give a reason (up to 500 characters) to export a user's data." in html
    page = _Page(html)
    assert page.field("/admin/users/export", "reason")["value"] == REASON + TOO_LONG
    assert _marked(page.field("/admin/users/export", "reason"))
    assert page.field("/admin/users/export", "user")["value"] == alice
    assert ("a", {"href": "/admin/conversations/conv-flagged"}) in page.tags
    _only_in_fields(page, REASON, {"reason"})
    assert await _audit_actions(admin) == ["view_transcript", "view_transcript"]
    _not_logged(caplog, REASON)


@pytest.mark.parametrize(
    "form",
    ["delete a user", "delete a conversation", "reveal", "export"],
)
async def test_a_reason_far_too_long_comes_back_cut_to_four_reasons(
    admin: TestClient[Any, Any], form: str
) -> None:
    alice = await _alice(admin)
    action, data = {
        "delete a user": ("/admin/users/delete", {"user": alice, "confirm": alice}),
        "delete a conversation": (
            "/admin/conversations/conv-flagged/delete",
            {"confirm": "conv-flagged"},
        ),
        "reveal": ("/admin/reveal", {"user": alice}),
        "export": ("/admin/users/export", {"user": alice}),
    }[form]

    refused = await admin.post(action, data={**data, "reason": PASTED})

    assert refused.status == 400
    page = _Page(await refused.text())
    assert page.field(action, "reason")["value"] == PASTED[:FOUR_REASONS]
    assert _marked(page.field(action, "reason"))


async def test_a_rejected_list_filter_keeps_the_filters_and_the_reason_as_typed(
    admin: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    typed = {"user": ALICE, "reason": REASON + TOO_LONG, "channel": "msteams", "q": "budget"}

    html, page = await _form_back(admin, "/admin/", typed)

    assert "Give a reason (up to 500 characters) to filter by a user id" in html
    assert _marked(page.field("/admin/", "reason"))
    assert "aria-invalid" not in page.field("/admin/", "user")
    # No list, no export or next-page links: nothing was read.
    assert 'data-testid="conversations"' not in html and "/admin/api/export/" not in html
    _only_in_fields(page, REASON, {"reason"})
    assert page.field("/admin/language", "next")["value"] == "/admin/"

    missing = await admin.get("/admin/", params={"user": ALICE, "flagged": "true"})

    assert missing.status == 400
    page = _Page(await missing.text())
    assert page.field("/admin/", "user")["value"] == ALICE
    assert page.field("/admin/", "reason")["value"] == ""
    assert _marked(page.field("/admin/", "reason"))
    assert ("option", {"value": "true", "selected": ""}) in page.tags

    long_search = "s" * 201
    _, page = await _form_back(admin, "/admin/", {"q": long_search, "tenant": "tenant-a"})

    assert _marked(page.field("/admin/", "q"))

    unknown = {"user": "p-nobodyhere", "q": "budget"}
    _, page = await _form_back(admin, "/admin/", unknown, status=404)

    assert _marked(page.field("/admin/", "user"))
    # Nothing was looked for: no reveal, no search recorded.
    assert await _audit_actions(admin) == []
    _not_logged(caplog, REASON)


async def test_a_reviewer_naming_a_user_id_gets_the_list_form_back_with_the_user_marked(
    make_app: AppFactory,
) -> None:
    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    reviewer = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Reviewer"], oid="oid-rita")}

    refused = await client.get(
        "/admin/", params={"user": ALICE, "channel": "msteams"}, headers=reviewer
    )

    assert refused.status == 403
    html = await refused.text()
    assert "pseudonym (p-...)" in html
    page = _Page(html)
    assert page.field("/admin/", "user")["value"] == ALICE
    assert page.field("/admin/", "channel")["value"] == "msteams"
    assert _marked(page.field("/admin/", "user"))
    assert "p-" not in page.field("/admin/", "user")["value"]
    assert 'data-testid="conversations"' not in html


async def test_a_rejected_audit_log_filter_keeps_the_filters_and_the_reason_as_typed(
    admin: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    typed = {"user": ALICE, "reason": "  ", "action": "view_transcript", "since": "2026-11-01"}

    html, page = await _form_back(admin, "/admin/audit", typed)

    assert "to look for a user id in the audit log" in html
    assert _marked(page.field("/admin/audit", "reason"))
    assert 'data-testid="audit"' not in html and "/admin/api/export/" not in html

    long_reason = await admin.get("/admin/audit", params={"user": ALICE, "reason": REASON * 30})

    assert long_reason.status == 400
    page = _Page(await long_reason.text())
    assert page.field("/admin/audit", "reason")["value"] == (REASON * 30)[:FOUR_REASONS]
    _only_in_fields(page, REASON, {"reason"})
    assert page.field("/admin/language", "next")["value"] == "/admin/audit"

    _, page = await _form_back(admin, "/admin/audit", {"action": "View transcript"})

    assert _marked(page.field("/admin/audit", "action"))

    both = {"target": "conv-flagged", "user": ALICE}
    _, page = await _form_back(admin, "/admin/audit", both)

    assert _marked(page.field("/admin/audit", "target"))
    assert _marked(page.field("/admin/audit", "user"), focused=False)
    # No reveal was recorded (each refused read is not a read either).
    assert "reveal_user" not in await _audit_actions(admin)
    _not_logged(caplog, REASON)
