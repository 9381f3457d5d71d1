"""What reviewers and admins do, over real HTTP on real SQLite: list filters and the bounded
search, paging, transcripts with verdict badges, pseudonyms and audited reveals, exports (CSV safe
against formulas), deleting a user's data, and the audit log. Conversations are written through
the store API (tests/admin/helpers.py) except where noted: one test drives the real bot."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from admin.pseudonyms import Pseudonyms
from admin.queries import BadRequest, parse_filters
from app import STORE
from storage.base import Store
from storage.models import Role
from tests.admin.conftest import seeded
from tests.admin.helpers import (
    FORMULA_FEEDBACK,
    T0,
    XSS_PROMPT,
    XSS_WITHHELD,
    EntraStub,
    _conversation,
    _msg,
    sign_in_locally,
)
from tests.conftest import AppFactory, FaultyAppFactory
from tests.faults import FaultKind, FaultyStore
from tests.stores import export_user
from tests.support import RecordingConnector, message_activity

API = "/admin/api/conversations"


async def signed_in_admin(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> TestClient[Any, Any]:
    """A locally signed-in Admin on seeded data; the CSRF token is in the default headers. The
    app must have been built with `caplog` at INFO for "app" (the sign-in link is logged)."""
    client = await seeded(client)
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    return client


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    caplog.set_level(logging.INFO, logger="app")
    return await signed_in_admin(await make_app(), caplog)


@pytest.fixture
async def reviewer(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> TestClient[Any, Any]:
    client = await seeded(await make_app(**oidc_settings))
    client.session.headers["Authorization"] = f"Bearer {entra.mint(roles=['Reviewer'])}"
    return client


async def titles(client: TestClient[Any, Any], query: str = "") -> list[str]:
    response = await client.get(f"{API}?{query}")
    assert response.status == 200, await response.text()
    return [item["title"] for item in (await response.json())["items"]]


async def test_list_is_newest_first_and_each_filter_narrows_it(
    admin: TestClient[Any, Any],
) -> None:
    assert await titles(admin) == [
        "Quarterly report",
        "Expense question",
        "Travel policy",
        "Violent request",
    ]
    assert await titles(admin, "flagged=true") == ["Travel policy", "Violent request"]
    assert await titles(admin, "flagged=false") == ["Quarterly report", "Expense question"]
    assert await titles(admin, "category=violence") == ["Violent request"]
    assert await titles(admin, "negative_feedback=true") == ["Travel policy"]
    assert await titles(admin, "errors=true") == ["Expense question"]
    assert await titles(admin, "tenant=tenant-b") == ["Travel policy"]
    assert await titles(admin, "channel=msteams") == ["Expense question", "Violent request"]
    # A user id, not a pseudonym: a reveal, with a reason.
    assert await titles(admin, "user=alice@contoso.com&reason=complaint") == [
        "Expense question",
        "Violent request",
    ]
    assert await titles(admin, "since=2026-11-02&until=2026-11-03") == [
        "Expense question",
        "Travel policy",
    ]
    assert await titles(admin, "tenant=tenant-a&flagged=true") == ["Violent request"]


async def test_text_search_finds_titles_and_recent_message_text_and_says_it_is_bounded(
    admin: TestClient[Any, Any],
) -> None:
    assert await titles(admin, "q=quarterly") == ["Quarterly report"]
    assert await titles(admin, "q=BUDGET%20spreadsheet") == ["Quarterly report"]
    assert await titles(admin, "q=portal") == ["Travel policy"]
    assert await titles(admin, "q=nothing-like-this") == []
    body = await (await admin.get(f"{API}?q=portal")).json()
    assert body["search"] == {
        "text": "portal",
        "scannedConversations": 4,
        "maxConversations": 200,
        "messagesPerConversation": 20,
    }


async def test_paging_with_continuation_tokens_visits_every_conversation_once(
    admin: TestClient[Any, Any],
) -> None:
    seen: list[str] = []
    continuation = ""
    for _ in range(10):
        body = await (
            await admin.get(API, params={"page_size": "1", "continuation": continuation})
        ).json()
        seen += [item["id"] for item in body["items"]]
        if not body["continuation"]:
            break
        continuation = body["continuation"]
    assert seen == ["conv-plain", "conv-error", "conv-feedback", "conv-flagged"]


@pytest.mark.parametrize(
    "query",
    ["continuation=not-a-token", "flagged=maybe", "since=yesterday", "page_size=0", "category=x-y"],
)
async def test_bad_filters_are_a_400_with_a_safe_message(
    admin: TestClient[Any, Any], query: str
) -> None:
    response = await admin.get(f"{API}?{query}")
    assert response.status == 400
    assert (await response.json())["error"] == "bad_request"


async def test_transcript_shows_status_verdicts_usage_and_feedback_and_is_audited(
    admin: TestClient[Any, Any],
) -> None:
    flagged = await (await admin.get(f"{API}/conv-flagged")).json()
    prompt, answer = flagged["messages"]
    assert prompt["role"] == "user" and prompt["text"] == XSS_PROMPT
    assert prompt["badges"] == [
        {
            "category": "violence",
            "source": "prompt",
            "severity": "medium",
            "filtered": True,
            "detected": False,
            "blocklistIds": [],
            "citations": [],
            "citation": None,
        }
    ]
    assert answer["status"] == "filtered" and answer["withheldText"] == XSS_WITHHELD
    assert answer["badges"][0]["source"] == "output"
    assert answer["badges"][0]["severity"] == "high"
    assert answer["usage"] == {"prompt": 40, "completion": 12}
    assert (answer["deployment"], answer["latencyMs"]) == ("gpt-4o-eastus", 812)
    assert flagged["conversation"]["flagReasons"] == ["violence"]

    feedback = await (await admin.get(f"{API}/conv-feedback")).json()
    assert feedback["messages"][1]["feedback"]["reaction"] == "dislike"
    assert feedback["messages"][1]["feedback"]["text"] == FORMULA_FEEDBACK
    error = await (await admin.get(f"{API}/conv-error")).json()
    assert error["messages"][1]["status"] == "error"
    assert error["messages"][1]["error"] == "model_unavailable"

    audit = (await (await admin.get("/admin/api/audit")).json())["items"]
    assert [(r["action"], r["target"]) for r in audit[:3]] == [
        ("view_transcript", "conv-error"),
        ("view_transcript", "conv-feedback"),
        ("view_transcript", "conv-flagged"),
    ]
    record = audit[0]
    assert record["actor"] == "local-admin" and record["detail"]["actorName"] == "Local admin"
    assert record["clientIp"] == "127.0.0.1" and record["day"] == record["at"][:10]
    assert (await admin.get(f"{API}/no-such-conversation")).status == 404


async def test_verdicts_of_unknown_shape_are_tolerated(admin: TestClient[Any, Any]) -> None:
    store = admin.server.app[STORE]
    [message, _] = await store.conversation_messages("conv-plain")
    odd = {
        "filtered": "yes",
        "results": [None, 7, {"category": 5, "severity": "extreme", "detected": True}],
        "errors": [{"source": "output", "code": "Timeout"}, "x"],
        "new_field": [1, 2],
    }
    await store.replace_message(message.model_copy(update={"filter": odd}))
    body = await (await admin.get(f"{API}/conv-plain")).json()
    view = body["messages"][0]
    assert view["badges"] == [
        {
            "category": "unknown",
            "source": "unknown",
            "severity": None,
            "filtered": False,
            "detected": True,
            "blocklistIds": [],
            "citations": [],
            "citation": None,
        }
    ]
    assert view["filterErrors"] == [{"source": "output", "code": "Timeout", "message": ""}]
    page = await admin.get("/admin/conversations/conv-plain")
    assert page.status == 200 and "output filter error: Timeout" in await page.text()


async def test_reviewers_see_stable_pseudonyms_and_never_user_ids(
    reviewer: TestClient[Any, Any],
) -> None:
    listing = await (await reviewer.get(API)).text()
    transcript = await (await reviewer.get(f"{API}/conv-flagged")).text()
    page = await (await reviewer.get("/admin/conversations/conv-flagged")).text()
    for text in (listing, transcript, page):
        assert "alice@contoso.com" not in text and "bob@contoso.com" not in text
    items = json.loads(listing)["items"]
    alice = {item["user"] for item in items if item["id"] in ("conv-flagged", "conv-error")}
    assert len(alice) == 1 and next(iter(alice)).startswith("p-")
    assert len({item["user"] for item in items}) == 3
    # The pseudonym works as a filter.
    assert await titles(reviewer, f"user={next(iter(alice))}") == [
        "Expense question",
        "Violent request",
    ]
    # Reviewers cannot reveal, export, delete or read the audit log.
    pseudonym = next(iter(alice))
    reveal = await reviewer.post("/admin/api/reveal", json={"user": pseudonym, "reason": "x"})
    assert reveal.status == 403
    assert (await reviewer.get("/admin/api/export/conversations/conv-flagged")).status == 403
    delete = await reviewer.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )
    assert delete.status == 403
    assert "Reveal user" not in page and "Delete all data" not in page


async def test_pseudonyms_are_stable_across_restarts_with_a_configured_key(
    make_app: AppFactory, entra: EntraStub, oidc_settings: dict[str, Any]
) -> None:
    async def alice_pseudonym(**settings: Any) -> str:
        client = await seeded(await make_app(**oidc_settings, **settings))
        token = entra.mint(roles=["Reviewer"])
        response = await client.get(
            f"{API}/conv-flagged", headers={"Authorization": f"Bearer {token}"}
        )
        user: str = (await response.json())["conversation"]["user"]
        await client.close()
        return user

    keyed = [await alice_pseudonym(ADMIN_PSEUDONYM_KEY="k1" * 16) for _ in range(2)]
    assert keyed[0] == keyed[1]
    assert await alice_pseudonym(ADMIN_PSEUDONYM_KEY="k2" * 16) != keyed[0]
    assert await alice_pseudonym(ADMIN_PSEUDONYMIZE="false") == "alice@contoso.com"


async def test_admin_reveals_a_user_with_a_reason_and_the_reveal_is_audited(
    admin: TestClient[Any, Any],
) -> None:
    transcript = await (await admin.get(f"{API}/conv-flagged")).json()
    pseudonym = transcript["conversation"]["user"]
    assert pseudonym.startswith("p-")

    no_reason = await admin.post("/admin/api/reveal", json={"user": pseudonym, "reason": " "})
    assert no_reason.status == 400
    not_ours = await admin.post("/admin/api/reveal", json={"user": "p-aaaa", "reason": "t"})
    assert not_ours.status == 404
    revealed = await admin.post(
        "/admin/api/reveal", json={"user": pseudonym, "reason": "complaint #42"}
    )
    assert revealed.status == 200
    assert (await revealed.json())["userId"] == "alice@contoso.com"

    [last, *_] = (await (await admin.get("/admin/api/audit")).json())["items"]
    assert (last["action"], last["target"]) == ("reveal_user", pseudonym)
    assert last["detail"]["reason"] == "complaint #42"


async def test_conversation_export_as_json_and_formula_safe_csv_is_audited(
    admin: TestClient[Any, Any],
) -> None:
    as_json = await admin.get("/admin/api/export/conversations/conv-feedback?format=json")
    assert as_json.status == 200
    assert "attachment" in as_json.headers["Content-Disposition"]
    exported = json.loads(await as_json.text())
    assert [m["text"] for m in exported["messages"]] == [
        "What is the travel policy?",
        "Book through the portal.",
    ]

    as_csv = await admin.get("/admin/api/export/conversations/conv-feedback?format=csv")
    assert as_csv.status == 200 and as_csv.headers["Content-Type"].startswith("text/csv")
    body = await as_csv.read()
    # The byte order mark tells a spreadsheet the file is UTF-8 (Excel on Japanese Windows reads
    # a file without it as Shift JIS, garbling every Japanese title and message).
    assert body.startswith(b"\xef\xbb\xbf") and body.count(b"\xef\xbb\xbf") == 1
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert [r["role"] for r in rows] == ["user", "assistant"]
    assert rows[1]["feedbackReaction"] == "dislike"
    # A spreadsheet must not run the user's feedback as a formula.
    assert rows[1]["feedbackText"] == "'" + FORMULA_FEEDBACK
    assert rows[1]["promptTokens"] == "30" and rows[1]["deployment"] == "gpt-4o-eastus"

    flagged = await admin.get("/admin/api/export/conversations/conv-flagged?format=csv")
    flagged_rows = list(csv.DictReader(io.StringIO((await flagged.read()).decode("utf-8-sig"))))
    assert flagged_rows[0]["filters"] == "prompt:violence:medium:filtered"
    assert flagged_rows[1]["withheldText"] == XSS_WITHHELD

    audit = (await (await admin.get("/admin/api/audit")).json())["items"]
    assert [(r["action"], r["target"], r["detail"]["format"]) for r in audit[:3]] == [
        ("export_conversation", "conv-flagged", "csv"),
        ("export_conversation", "conv-feedback", "csv"),
        ("export_conversation", "conv-feedback", "json"),
    ]
    bad = await admin.get("/admin/api/export/conversations/conv-feedback?format=xlsx")
    assert bad.status == 400


async def test_filtered_list_export_has_exactly_the_filtered_conversations(
    admin: TestClient[Any, Any],
) -> None:
    response = await admin.get("/admin/api/export/conversations?flagged=true&format=csv")
    body = await response.read()
    assert body.startswith(b"\xef\xbb\xbf")  # as the single conversation's export
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert [r["id"] for r in rows] == ["conv-feedback", "conv-flagged"]
    assert rows[1]["flagReasons"] == "violence" and rows[1]["user"].startswith("p-")
    as_json = json.loads(
        await (await admin.get("/admin/api/export/conversations?format=json&q=budget")).text()
    )
    assert [c["id"] for c in as_json["items"]] == ["conv-plain"]
    records = (await (await admin.get("/admin/api/audit")).json())["items"]
    [last, previous] = [r for r in records if r["action"] == "export_list"]
    assert last["detail"]["filters"] == {"q": "budget"}
    assert last["detail"]["count"] == 1
    assert previous["detail"]["filters"] == {"flagged": "true"}
    assert previous["detail"]["count"] == 2


@pytest.mark.parametrize("named_as", ["alice@contoso.com", "dl_alice@contoso.com", "pseudonym"])
async def test_a_list_export_filtered_by_user_is_audited_under_the_pseudonym_not_the_user_id(
    admin: TestClient[Any, Any], named_as: str
) -> None:
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    user = pseudonym if named_as == "pseudonym" else named_as
    exported = await admin.get(
        "/admin/api/export/conversations",
        params={"format": "json", "user": user, "q": "e", "reason": "complaint"},
    )
    assert exported.status == 200
    assert len(json.loads(await exported.text())["items"]) == 2
    deleted = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )
    assert deleted.status == 200

    audit = (await (await admin.get("/admin/api/audit")).json())["items"]
    [record] = [r for r in audit if r["action"] == "export_list"]
    assert record["detail"]["filters"] == {"user": pseudonym, "q": "e"}
    # Neither the audit log nor its page brings the deleted user id back.
    assert "alice@contoso.com" not in json.dumps(audit)
    assert "alice@contoso.com" not in await (await admin.get("/admin/audit")).text()


async def test_deleting_a_user_needs_confirmation_removes_everything_and_is_audited(
    admin: TestClient[Any, Any],
) -> None:
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]

    unconfirmed = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": "p-other", "reason": "erasure request 7"},
    )
    assert unconfirmed.status == 400
    assert len(await titles(admin, f"user={pseudonym}")) == 2

    done = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )
    assert done.status == 200
    assert (await done.json())["deleted"] == {"conversations": 2, "messages": 4, "states": 0}
    assert await titles(admin, f"user={pseudonym}") == []
    assert (await admin.get(f"{API}/conv-flagged")).status == 404
    assert await titles(admin) == ["Quarterly report", "Travel policy"]
    store = admin.server.app[STORE]
    assert (await export_user(store, "alice@contoso.com"))["messages"] == []

    [record, *_] = await records_but_lists(admin)
    assert (record["action"], record["target"]) == ("delete_user", pseudonym)
    assert record["detail"]["deleted"] == {"conversations": 2, "messages": 4, "states": 0}
    # The audit log keeps the pseudonym, never the deleted user id.
    audit_text = await (await admin.get("/admin/api/audit")).text()
    assert "alice@contoso.com" not in audit_text


async def records_but_lists(admin: TestClient[Any, Any]) -> list[dict[str, Any]]:
    """The audit log, newest first, without the records of the list's reads."""
    items = (await (await admin.get("/admin/api/audit")).json())["items"]
    return [item for item in items if item["action"] != "list_conversations"]


@pytest.fixture
async def faulty_admin(
    make_faulty_app: FaultyAppFactory, caplog: pytest.LogCaptureFixture
) -> tuple[TestClient[Any, Any], FaultyStore]:
    """`admin`, on a store that fails the operations a test arms (tests/faults.py)."""
    caplog.set_level(logging.INFO, logger="app")
    client, store = await make_faulty_app()
    return await signed_in_admin(client, caplog), store


async def test_a_deletion_whose_audit_record_cannot_be_written_deletes_nothing(
    faulty_admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    admin, store = faulty_admin
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    store.fail(FaultKind.ERROR, "append_audit", count=1)

    refused = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )
    assert refused.status == 503
    assert (await refused.json())["error"] == "audit_unavailable"
    assert store.calls["delete_user"] == 0
    assert len(await titles(admin, f"user={pseudonym}")) == 2
    assert len(await store.conversation_messages("conv-flagged")) == 2


async def test_a_deletion_that_fails_part_way_is_on_the_audit_log(
    faulty_admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    admin, store = faulty_admin
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    # The deletion happens, then the store fails (a Cosmos delete can stop part-way).
    store.fail(FaultKind.LOST_RESPONSE, "delete_user", count=1)

    failed = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )
    assert failed.status == 503
    assert await titles(admin, f"user={pseudonym}") == []
    [outcome, request, *_] = await records_but_lists(admin)
    assert (request["action"], request["target"]) == ("delete_user", pseudonym)
    assert request["detail"]["outcome"] == "requested"
    assert (outcome["action"], outcome["target"]) == ("delete_user", pseudonym)
    assert outcome["detail"]["outcome"] == "failed_part_way"


async def test_pages_escape_message_html_and_carry_a_strict_csp(
    admin: TestClient[Any, Any],
) -> None:
    page = await admin.get("/admin/conversations/conv-flagged")
    html = await page.text()
    assert page.status == 200
    assert "&lt;script&gt;window.__xss" in html and "<script>window" not in html
    assert "&lt;img src=&#34;x&#34; onerror=" in html and '<img src="x"' not in html
    assert "<script" not in html  # the admin pages carry no scripts at all
    csp = page.headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ):
        assert directive in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    api = await admin.get(API)
    assert "Content-Security-Policy" in api.headers
    assert "token=" not in html and "admin_session" not in html


async def test_conversations_from_the_real_bot_show_up_flagged_with_their_verdicts(
    make_app: AppFactory, connector: RecordingConnector, caplog: pytest.LogCaptureFixture
) -> None:
    """Data written by the real turn pipeline (bot -> chat -> simulator -> store)."""
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    csrf = await sign_in_locally(client, caplog)
    assert csrf
    for conversation, text in (("c-ok", "Hello there"), ("c-bad", "[cf:violence] hit him")):
        activity = message_activity(
            connector.url, text, conversation_id=conversation, user_id="dave"
        )
        assert (await client.post("/api/messages", json=activity)).status == 202
    await connector.wait_for_messages(2)

    body: dict[str, Any] = {}
    for _ in range(50):
        body = await (await client.get(f"{API}?category=violence")).json()
        if body["items"]:
            break
        await asyncio.sleep(0.1)
    [flagged] = body["items"]
    assert flagged["channel"] == "test" and flagged["user"].startswith("p-")
    transcript = await (await client.get(f"{API}/{flagged['id']}")).json()
    prompt = transcript["messages"][0]
    assert prompt["text"] == "[cf:violence] hit him"
    assert any(
        b["category"] == "violence" and b["source"] == "prompt" and b["filtered"]
        for b in prompt["badges"]
    )
    everything = await (await client.get(API)).json()
    assert len(everything["items"]) == 2


async def test_reveal_form_on_the_transcript_page_shows_the_user_and_is_audited(
    admin: TestClient[Any, Any],
) -> None:
    pseudonym = (await (await admin.get(f"{API}/conv-feedback")).json())["conversation"]["user"]
    csrf = admin.session.headers["X-CSRF-Token"]
    del admin.session.headers["X-CSRF-Token"]  # a browser form sends the field, not the header
    page = await admin.post(
        "/admin/reveal",
        data={"csrf": csrf, "user": pseudonym, "reason": "HR case 7", "conversation": "x"},
    )
    assert page.status == 200
    assert '<code data-testid="revealed-user">bob@contoso.com</code>' in await page.text()
    [record, *_] = (await (await admin.get("/admin/api/audit")).json())["items"]
    assert (record["action"], record["detail"]["reason"]) == ("reveal_user", "HR case 7")


async def test_reviewer_pages_hide_admin_actions_and_refuse_admin_pages(
    reviewer: TestClient[Any, Any],
) -> None:
    listing = await reviewer.get("/admin/")
    assert listing.status == 200
    html = await listing.text()
    assert "Export this list" not in html and "Audit log" not in html
    audit = await reviewer.get("/admin/audit")
    assert audit.status == 403 and "needs the Admin role" in await audit.text()
    delete = await reviewer.get("/admin/users/delete?user=p-x")
    assert delete.status == 403


async def _add_alice_through_direct_line(admin: TestClient[Any, Any]) -> Store:
    """A conversation of Alice as Azure's Direct Line stores her: `dl_<object id>`."""
    store: Store = admin.server.app[STORE]
    await _conversation(
        store,
        "conv-web",
        "dl_alice@contoso.com",
        tenant="",
        channel="directline",
        title="Web question",
        at=T0,
        messages=[_msg(Role.USER, "Asked on the intranet", tokens=4)],
    )
    return store


async def test_deleting_a_user_also_deletes_their_data_from_azures_direct_line(
    admin: TestClient[Any, Any],
) -> None:
    store = await _add_alice_through_direct_line(admin)
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    confirm = await admin.get(f"/admin/users/delete?user={pseudonym}")
    assert "3 conversations" in await confirm.text()

    done = await admin.post(
        "/admin/api/users/delete",
        json={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )

    assert (await done.json())["deleted"] == {"conversations": 3, "messages": 5, "states": 0}
    assert (await export_user(store, "dl_alice@contoso.com"))["messages"] == []
    assert await store.find_summary("conv-web") is None
    assert await titles(admin) == ["Quarterly report", "Travel policy"]


async def test_deleting_the_direct_line_id_also_deletes_the_object_ids_data(
    admin: TestClient[Any, Any],
) -> None:
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    await admin.post(
        "/admin/api/users/delete",
        json={
            "user": "dl_alice@contoso.com",
            "confirm": "dl_alice@contoso.com",
            "reason": "erasure request 7",
        },
    )
    assert (await export_user(admin.server.app[STORE], "alice@contoso.com"))["messages"] == []
    # Recorded under the same pseudonym as a deletion that named the object id.
    [outcome, request, *_] = await records_but_lists(admin)
    assert outcome["target"] == request["target"] == pseudonym


async def _add_direct_line_conversation_and_consent_of_alice(admin: TestClient[Any, Any]) -> None:
    store = await _add_alice_through_direct_line(admin)
    consent = {"consent": {"version": "2026-11", "accepted": True}}
    await store.write_state("msteams/users/alice", consent, None, owner="alice@contoso.com")


async def test_the_user_filter_finds_a_persons_conversations_under_both_of_their_ids(
    admin: TestClient[Any, Any],
) -> None:
    await _add_direct_line_conversation_and_consent_of_alice(admin)
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    both = ["Expense question", "Web question", "Violent request"]

    assert await titles(admin, f"user={pseudonym}") == both
    assert await titles(admin, "user=dl_alice@contoso.com&reason=complaint") == both
    # One person, one pseudonym, whichever channel stored them.
    listed = (await (await admin.get(f"{API}?user={pseudonym}")).json())["items"]
    assert {item["user"] for item in listed} == {pseudonym}
    web = (await (await admin.get(f"{API}/conv-web")).json())["messages"]
    assert web[0]["user"] == pseudonym
    assert await titles(admin, f"user={pseudonym}&channel=directline") == ["Web question"]
    # The list's export follows the same filter.
    exported = await admin.get(f"/admin/api/export/conversations?user={pseudonym}&format=json")
    assert [c["title"] for c in json.loads(await exported.text())["items"]] == both


@pytest.mark.parametrize("named_by", ["pseudonym", "user id", "Direct Line id"])
async def test_a_users_data_export_holds_everything_under_both_of_their_ids(
    admin: TestClient[Any, Any], named_by: str
) -> None:
    """Whichever way the admin names the person, the file names them by their pseudonym."""
    await _add_direct_line_conversation_and_consent_of_alice(admin)
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    named = {
        "pseudonym": pseudonym,
        "user id": "alice@contoso.com",
        "Direct Line id": "dl_alice@contoso.com",
    }[named_by]

    response = await admin.post(
        "/admin/api/users/export", json={"user": named, "reason": "access request DSAR-42"}
    )

    assert response.status == 200, await response.text()
    assert response.headers["Content-Disposition"].startswith('attachment; filename="user-')
    # The file name does not carry the user id.
    assert "alice" not in response.headers["Content-Disposition"]
    exported = json.loads(await response.text())
    assert exported["user"] == pseudonym
    assert exported["storedIds"] == ["alice@contoso.com", "dl_alice@contoso.com"]
    assert sorted(c["id"] for c in exported["conversations"]) == [
        "conv-error",
        "conv-flagged",
        "conv-web",
    ]
    assert "Asked on the intranet" in [m["text"] for m in exported["messages"]]
    assert XSS_WITHHELD in [m.get("withheldText") for m in exported["messages"]]
    assert {m["conversationId"] for m in exported["messages"]} == {
        "conv-error",
        "conv-flagged",
        "conv-web",
    }
    assert exported["states"] == [{"consent": {"version": "2026-11", "accepted": True}}]
    # Nobody else's words.
    assert "Book through the portal." not in await response.text()


async def test_a_users_data_export_is_audited_under_the_pseudonym_with_its_reason(
    admin: TestClient[Any, Any],
) -> None:
    await _add_direct_line_conversation_and_consent_of_alice(admin)
    # Named by the Direct Line id: the same person, the same record.
    exported = await admin.post(
        "/admin/api/users/export", json={"user": "dl_alice@contoso.com", "reason": "DSAR-42"}
    )
    # Downloaded to the end: the export is streamed, and its counts are recorded at the end.
    await exported.read()

    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    audit = (await (await admin.get("/admin/api/audit")).json())["items"]
    # Recorded twice, as a deletion is: the request with its reason before anything is sent
    # (newest first: it comes second), then what was exported.
    [outcome, requested] = [r for r in audit if r["action"] == "export_user"]
    assert requested["target"] == outcome["target"] == pseudonym
    assert requested["detail"]["outcome"] == "requested"
    assert requested["detail"]["reason"] == "DSAR-42"
    assert outcome["detail"]["outcome"] == "exported"
    assert outcome["detail"]["exported"] == {
        "conversations": 3,
        "messages": 5,
        "feedback": 0,
        "states": 1,
        "usage": 0,
        "audit": 1,  # the request of this export
    }
    assert "alice@contoso.com" not in json.dumps(audit)


async def test_a_users_data_export_needs_a_user_and_a_reason(
    admin: TestClient[Any, Any],
) -> None:
    for body, complaint in [
        ({"user": "alice@contoso.com"}, "give a reason"),
        ({"user": "alice@contoso.com", "reason": "  "}, "give a reason"),
        ({"user": "alice@contoso.com", "reason": "x" * 501}, "give a reason"),
        ({"user": " ", "reason": "DSAR-42"}, "name the user"),
    ]:
        refused = await admin.post("/admin/api/users/export", json=body)
        assert refused.status == 400
        assert complaint in (await refused.json())["message"]
    audit = (await (await admin.get("/admin/api/audit")).json())["items"]
    assert "export_user" not in [r["action"] for r in audit]


async def test_a_reviewer_cannot_export_a_users_data(reviewer: TestClient[Any, Any]) -> None:
    refused = await reviewer.post(
        "/admin/api/users/export", json={"user": "alice@contoso.com", "reason": "curious"}
    )
    assert refused.status == 403
    transcript = await reviewer.get("/admin/conversations/conv-flagged")
    assert 'data-testid="export-user"' not in await transcript.text()


async def test_a_users_data_export_whose_audit_record_cannot_be_written_is_refused(
    faulty_admin: tuple[TestClient[Any, Any], FaultyStore],
) -> None:
    admin, store = faulty_admin
    store.fail(FaultKind.ERROR, "append_audit", count=1)

    refused = await admin.post(
        "/admin/api/users/export", json={"user": "alice@contoso.com", "reason": "DSAR-42"}
    )

    assert refused.status == 503
    assert (await refused.json())["error"] == "audit_unavailable"
    assert "Violent request" not in await refused.text()


async def test_the_transcript_and_deletion_pages_offer_the_users_data_export(
    admin: TestClient[Any, Any],
) -> None:
    transcript = await (await admin.get("/admin/conversations/conv-flagged")).text()
    assert 'data-testid="export-user"' in transcript
    pseudonym = (await (await admin.get(f"{API}/conv-flagged")).json())["conversation"]["user"]
    confirm = await (await admin.get(f"/admin/users/delete?user={pseudonym}")).text()
    assert 'data-testid="export-user"' in confirm

    form = {"user": pseudonym, "reason": "before deletion"}
    forged = await admin.post("/admin/users/export", data=form, headers={"X-CSRF-Token": ""})
    assert forged.status == 403
    # What the form posts (the session's CSRF token is in the client's default headers).
    downloaded = await admin.post("/admin/users/export", data=form)

    assert downloaded.status == 200
    assert downloaded.headers["Content-Type"].startswith("application/json")
    assert len(json.loads(await downloaded.text())["conversations"]) == 2


async def test_a_pseudonym_made_under_another_key_is_refused_and_nothing_is_deleted_or_exported(
    admin: TestClient[Any, Any],
) -> None:
    # Alice's pseudonym from another deployment (or from before a restart with a random key).
    foreign = Pseudonyms(b"another deployment's key", enabled=True).pseudonym("alice@contoso.com")

    api_calls = [
        admin.post(
            "/admin/api/users/delete",
            json={"user": foreign, "confirm": foreign, "reason": "erasure request 7"},
        ),
        admin.post("/admin/api/users/export", json={"user": foreign, "reason": "DSAR-42"}),
        admin.get(f"{API}?user={foreign}"),
        admin.get(f"/admin/api/export/conversations?user={foreign}&format=json"),
    ]
    for call in api_calls:
        refused = await call
        assert refused.status == 404
        body = await refused.json()
        assert body["error"] == "unknown_pseudonym"
        assert "ADMIN_PSEUDONYM_KEY" in body["message"]
    page_calls = [
        admin.post(
            "/admin/users/delete",
            data={"user": foreign, "confirm": foreign, "reason": "erasure request 7"},
        ),
        admin.post("/admin/users/export", data={"user": foreign, "reason": "DSAR-42"}),
        admin.get(f"/admin/users/delete?user={foreign}"),
        admin.get(f"/admin/?user={foreign}"),
    ]
    for call in page_calls:
        page = await call
        assert page.status == 404
        assert "ADMIN_PSEUDONYM_KEY" in await page.text()
        assert "Content-Security-Policy" in page.headers

    assert (await (await admin.get("/admin/api/audit")).json())["items"] == []
    assert await titles(admin, "user=alice@contoso.com&reason=complaint") == [
        "Expense question",
        "Violent request",
    ]


@pytest.mark.parametrize(
    "query",
    [
        # The day after 9999-12-31 does not exist.
        "until=9999-12-31",
        # Before year 1 in UTC.
        "since=0001-01-01T00:00:00%2B14:00",
    ],
)
@pytest.mark.parametrize(
    "path", [API, "/admin/", "/admin/api/export/conversations"], ids=["api", "page", "export"]
)
async def test_dates_beyond_the_calendar_are_a_400_on_the_list_its_page_and_its_export(
    admin: TestClient[Any, Any], path: str, query: str
) -> None:
    response = await admin.get(f"{path}?{query}")
    assert response.status == 400
    assert "too far in the past or the future" in await response.text()
    assert "Content-Security-Policy" in response.headers


# The text field each action takes besides the user.
SECOND_FIELD = {"users/delete": "confirm", "users/export": "reason", "reveal": "reason"}


@pytest.mark.parametrize("path", list(SECOND_FIELD))
@pytest.mark.parametrize(
    ("user", "second", "complaint"),
    [
        # A lone surrogate is valid JSON (`"\\ud800"`), but no store can encode it.
        ("\ud800", "x", "user is not valid text"),
        (["a"], "x", "user must be a string"),
        ("alice@contoso.com", "\udfff", "{second} is not valid text"),
        ("alice@contoso.com", {"a": 1}, "{second} must be a string"),
    ],
)
async def test_text_fields_that_are_not_strings_or_hold_a_lone_surrogate_are_a_400_naming_them(
    admin: TestClient[Any, Any], path: str, user: Any, second: Any, complaint: str
) -> None:
    field = SECOND_FIELD[path]
    refused = await admin.post(f"/admin/api/{path}", json={"user": user, field: second})
    assert refused.status == 400
    assert (await refused.json())["message"] == complaint.format(second=field)
    assert (await (await admin.get("/admin/api/audit")).json())["items"] == []
    assert len(await titles(admin, "user=alice@contoso.com&reason=complaint")) == 2


def test_a_lone_surrogate_in_a_filter_is_refused_before_it_reaches_the_store() -> None:
    """aiohttp turns URL escapes that are not UTF-8 into U+FFFD, so over HTTP no lone surrogate
    arrives today; the filters refuse one themselves rather than rely on that."""
    pseudonyms = Pseudonyms(b"key", enabled=True)
    for name in ("q", "user", "tenant", "continuation"):
        with pytest.raises(BadRequest, match=f"{name} is not valid text"):
            parse_filters({name: "\ud800"}, pseudonyms)


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        (API, "q=%ED%A0%80", "q"),  # an encoded lone surrogate
        ("/admin/", "user=alice%FF", "user"),
        ("/admin/api/export/conversations", "tenant=%C3", "tenant"),
        ("/admin/api/audit", "actor=%80", "actor"),
        ("/admin/", "%FF=%FF", "%ff"),  # the name too: named as the address writes it
        ("/admin/audit", "%FF=x", "%ff"),
    ],
)
async def test_a_filter_whose_bytes_are_not_utf8_is_a_400_naming_it_not_a_search_for_u_fffd(
    admin: TestClient[Any, Any], path: str, query: str, name: str
) -> None:
    refused = await admin.get(f"{path}?{query}")
    assert refused.status == 400
    assert f"{name} is not valid text" in (await refused.text()).lower()
    assert (await (await admin.get("/admin/api/audit")).json())["items"] == []


async def test_an_unexpected_error_is_a_generic_500_with_the_security_headers_and_a_log_line(
    faulty_admin: tuple[TestClient[Any, Any], FaultyStore], caplog: pytest.LogCaptureFixture
) -> None:
    # A bug under the transcript (a summary that cannot be read is no longer one: the
    # transcript shows the messages without it, tests/admin/test_admin_unreadable_summaries_*).
    admin, store = faulty_admin
    store.fail(FaultKind.BUG, "find_summary")

    api = await admin.get(f"{API}/conv-plain")
    page = await admin.get("/admin/conversations/conv-plain")

    assert api.status == 500
    assert await api.json() == {
        "error": "internal_error",
        "message": "Something went wrong; try again.",
    }
    assert page.status == 500 and "Something went wrong" in await page.text()
    for response in (api, page):
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "a bug in find_summary" not in await response.text()
    logged = [r for r in caplog.records if r.getMessage() == "admin: unexpected error"]
    assert len(logged) == 2
    assert logged[0].__dict__["error"] == "RuntimeError"
    assert "find_summary" in logged[0].__dict__["trace"]
    # The type and where, never the exception's text (it can quote what was sent or stored).
    assert all("a bug in find_summary" not in str(vars(record)) for record in caplog.records)


async def test_the_list_says_how_much_its_export_holds_beside_the_links(
    admin: TestClient[Any, Any],
) -> None:
    """A CSV file cannot say that more matched than it holds: the page says so beforehand."""
    page = await (await admin.get("/admin/")).text()
    assert "at most 5,000 conversations, newest first" in page
    assert "the matches among the newest 1,000" in page
    japanese = await (await admin.get("/admin/", headers={"Accept-Language": "ja"})).text()
    assert "最大5,000件の会話" in japanese


async def test_a_search_page_with_no_match_says_next_page_searches_older_ones(
    admin: TestClient[Any, Any],
) -> None:
    """A search reads 200 conversations a page: an empty page is no end of the search while
    older conversations are still to be read."""
    store = admin.server.app[STORE]
    await _conversation(
        store,
        "conv-oldest",
        "alice@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title="Expenses",
        at=T0,
        messages=[_msg(Role.USER, "where is the vpn guide")],
    )
    for number in range(200):
        await _conversation(
            store,
            f"conv-{number:03}",
            "bob@contoso.com",
            tenant="tenant-b",
            channel="msteams",
            title=f"Question {number}",
            at=T0 + timedelta(minutes=1 + number),
            messages=[_msg(Role.USER, f"question {number}")],
        )

    first = await (await admin.get("/admin/", params={"q": "vpn"})).text()

    assert "None of the 200 conversations searched on this page match." in first
    assert "“Next page” searches older ones." in first and 'rel="next"' in first
    assert "No conversations match." not in first
