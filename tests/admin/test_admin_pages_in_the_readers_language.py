"""The admin pages in English and Japanese, over real HTTP on real SQLite: every text of the
pages exists in both languages with the same placeholders (admin/texts.yaml); the templates hold
no words of their own; the language is the browser's (Accept-Language, quality values honoured)
unless the reader chose one with the pages' switch (a cookie that wins over the header); every
page a Japanese reviewer can reach renders with `<html lang="ja">` and no English of ours left;
the JSON API keeps its codes and English messages."""

from __future__ import annotations

import html
import logging
import re
import string
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from admin.texts import LANGUAGE_NAMES, LANGUAGES, all_texts, language_of
from app import STORE
from storage.base import Store
from storage.models import Feedback, MessageStatus, Role, Usage
from tests.admin.helpers import T0, _conversation, _msg, sign_in_locally
from tests.conftest import AppFactory

TEMPLATES = Path(__file__).resolve().parents[2] / "admin" / "templates"
JA = {"Accept-Language": "ja"}
EN = {"Accept-Language": "en-US,en;q=0.9"}
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
# What a link followed from another site (Teams, an e-mail) sends.
FOLLOWED_LINK = {
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
}


# --- the texts


@pytest.mark.parametrize("key", sorted(all_texts()))
def test_every_admin_text_exists_in_english_and_japanese_with_the_same_placeholders(
    key: str,
) -> None:
    texts = all_texts()[key]
    assert set(texts) == set(LANGUAGES)
    fields = {
        language: {name for _, name, _, _ in string.Formatter().parse(text) if name}
        for language, text in texts.items()
    }
    assert fields["en"] == fields["ja"]
    assert JAPANESE.search(texts["ja"]), "the Japanese text is Japanese"
    for language, text in texts.items():
        # HTML, filled with escaped values: <code> is its only markup, and no quote or
        # ampersand can end an attribute it is put in or start an entity.
        assert not re.sub(r"</?code>", "", text).count("<"), (language, text)
        assert ">" not in re.sub(r"</?code>", "", text) and '"' not in text and "&" not in text
        if key.startswith("error_"):
            # The JSON API sends these as plain text.
            assert "<" not in text, (language, text)


class _TemplateText(HTMLParser):
    """The text of a template outside its Jinja tags: element text and the attributes people
    read (placeholder, aria-label, title, alt)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("placeholder", "aria-label", "title", "alt") and value:
                self.parts.append(value)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_the_templates_hold_no_words_of_their_own(template: str) -> None:
    """Every word a page shows comes from texts.yaml (`t(...)`), so it has its Japanese: what
    is left outside the Jinja tags is markup, punctuation and the names of the export formats."""
    source = (TEMPLATES / template).read_text(encoding="utf-8")
    without_jinja = re.sub(r"{{.*?}}|{%.*?%}|{#.*?#}", " ", source, flags=re.S)
    parser = _TemplateText()
    parser.feed(without_jinja)
    words = set(re.findall(r"[A-Za-z]{2,}", " ".join(parser.parts)))
    assert words <= {"JSON", "CSV"}, words


# --- the language asked for


@pytest.mark.parametrize(
    ("accept_language", "language"),
    [
        ("", "en"),
        ("ja", "ja"),
        ("ja-JP", "ja"),
        ("JA-jp", "ja"),
        ("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", "ja"),
        ("en-US,en;q=0.9,ja;q=0.8", "en"),
        ("en;q=0.5, ja;q=0.8", "ja"),
        ("fr-FR, ja;q=0.5", "ja"),
        ("fr-FR, de", "en"),
        ("ja;q=0", "en"),
        ("ja;q=0.5, *;q=0.8", "en"),
        ("en, ja", "en"),
        ("ja, en", "ja"),
        ("ja;q=banana, en", "en"),
        ("jav, ja-Latn;q=0.1", "ja"),
        ("*", "en"),
    ],
)
def test_the_browsers_language_is_picked_by_its_quality_values(
    accept_language: str, language: str
) -> None:
    assert language_of(accept_language) == language


@pytest.fixture
async def admin(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> TestClient[Any, Any]:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    await seed_in_japanese(client.server.app[STORE])
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    return client


def html_lang(page: str) -> str:
    found = re.search(r'<html lang="([^"]+)">', page)
    assert found, page[:200]
    return found.group(1)


@pytest.mark.parametrize(
    ("headers", "language"),
    [
        ({}, "en"),
        (EN, "en"),
        ({"Accept-Language": "fr-FR"}, "en"),
        (JA, "ja"),
        ({"Accept-Language": "ja-JP,ja;q=0.9,en-US;q=0.8"}, "ja"),
        ({"Accept-Language": "en;q=0.5, ja;q=0.8"}, "ja"),
    ],
)
async def test_each_page_is_in_the_browsers_language_and_its_html_lang_says_so(
    admin: TestClient[Any, Any], headers: dict[str, str], language: str
) -> None:
    for path in ("/admin/", "/admin/conversations/conv-ja", "/admin/audit"):
        response = await admin.get(path, headers=headers)
        assert response.status == 200
        page = await response.text()
        assert html_lang(page) == language, path
        assert response.headers["Content-Language"] == language
        heading = {"/admin/": "会話一覧", "/admin/audit": "監査ログ"}.get(path)
        if heading:
            assert (f"<h1>{heading}</h1>" in page) == (language == "ja"), path


async def test_the_language_chosen_on_a_page_wins_over_the_browsers(
    admin: TestClient[Any, Any],
) -> None:
    page = await (await admin.get("/admin/conversations/conv-ja", headers=JA)).text()
    # The switch is a form (the pages run no script), returning to the page it is on.
    switch = re.search(
        r'<form method="post" action="/admin/language"[^>]*>(.*?)</form>', page, re.S
    )
    assert switch, "no language switch"
    assert 'name="next" value="/admin/conversations/conv-ja"' in switch.group(1)
    assert '<button type="submit" name="lang" value="en" lang="en">English</button>' in (
        switch.group(1)
    )

    chosen = await admin.post(
        "/admin/language",
        data={"lang": "en", "next": "/admin/conversations/conv-ja"},
        headers=JA,
        allow_redirects=False,
    )
    assert chosen.status == 303
    assert chosen.headers["Location"] == "/admin/conversations/conv-ja"
    cookie = chosen.headers["Set-Cookie"]
    assert cookie.startswith("admin_lang=en;")
    assert "Path=/admin/" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    for path in ("/admin/", "/admin/conversations/conv-ja", "/admin/audit"):
        english = await (await admin.get(path, headers=JA)).text()
        assert html_lang(english) == "en", path
        assert "日本語</button>" in english

    await admin.post("/admin/language", data={"lang": "ja", "next": "/admin/"}, headers=EN)
    japanese = await admin.get("/admin/", headers=EN)
    assert html_lang(await japanese.text()) == "ja"
    assert japanese.headers["Content-Language"] == "ja"


async def test_switching_the_language_of_an_audit_log_filtered_by_a_user_id_reveals_nothing_again(
    admin: TestClient[Any, Any],
) -> None:
    """Filtering the audit log by a user id is a reveal (recorded, with its reason); its page's
    language switch returns to the log filtered by the pseudonym, as the list's does: the id and
    the reason are not in it, and switching records no second reveal."""
    page = await (
        await admin.get("/admin/audit", params={"user": "alice@contoso.com", "reason": "T-1"})
    ).text()
    found = re.search(r'name="next" value="([^"]*)"', page)
    assert found
    back = html.unescape(found.group(1))
    # The pseudonym is in the sealed part (`s`): an address is logged where the audit log
    # does not reach.
    assert back.startswith("/admin/audit?s="), back
    assert "alice" not in back and "T-1" not in back and "reason" not in back

    async def reveals() -> int:
        body = await (await admin.get("/admin/api/audit", params={"action": "reveal_user"})).json()
        return len(body["items"])

    before = await reveals()
    switched = await admin.post("/admin/language", data={"lang": "ja", "next": back})
    assert switched.status == 200 and html_lang(await switched.text()) == "ja"
    assert await reveals() == before


async def test_the_switch_returns_only_to_a_page_of_the_admin_and_refuses_other_sites(
    admin: TestClient[Any, Any],
) -> None:
    for target in ("https://evil.example/", "//evil.example/admin/", "/admin/../x", "/elsewhere"):
        chosen = await admin.post(
            "/admin/language", data={"lang": "ja", "next": target}, allow_redirects=False
        )
        assert chosen.status == 303 and chosen.headers["Location"] == "/admin/", target
    unknown = await admin.post("/admin/language", data={"lang": "fr", "next": "/admin/"})
    assert unknown.status == 400 and "Set-Cookie" not in unknown.headers
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = await admin.post(
            "/admin/language", data={"lang": "ja", "next": "/admin/"}, headers=headers
        )
        assert refused.status == 403, headers
        assert "Set-Cookie" not in refused.headers


async def test_switching_the_language_of_the_page_asking_before_a_link_opens_asks_again(
    admin: TestClient[Any, Any],
) -> None:
    """A link from Teams to a transcript asks first; switching that page's language shows it
    again in the language chosen, and opens and records nothing."""
    before = len((await admin.server.app[STORE].list_audit(200))[0])
    asked = await admin.get("/admin/conversations/conv-ja", headers={**FOLLOWED_LINK, **EN})
    page = await asked.text()
    assert "Open this conversation?" in page
    assert 'name="open" value="transcript"' in page
    again = await admin.post(
        "/admin/language",
        data={"lang": "ja", "next": "/admin/conversations/conv-ja", "open": "transcript"},
        headers={"Sec-Fetch-Site": "same-origin", **EN},
        allow_redirects=False,
    )
    assert again.status == 200
    japanese = await again.text()
    assert html_lang(japanese) == "ja" and "この会話を開きますか？" in japanese
    assert 'href="/admin/conversations/conv-ja" data-testid="open"' in japanese
    assert "暴力的なことを教えて" not in japanese  # the transcript itself was not read
    assert len((await admin.server.app[STORE].list_audit(200))[0]) == before


async def test_the_api_keeps_its_codes_and_english_messages(admin: TestClient[Any, Any]) -> None:
    refused = await admin.get("/admin/api/conversations?page_size=0", headers=JA)
    assert refused.status == 400
    assert await refused.json() == {
        "error": "bad_request",
        "message": "page_size must be between 1 and 100",
    }
    missing = await admin.get("/admin/api/conversations/nothing-here", headers=JA)
    assert await missing.json() == {"error": "not_found", "message": "No such conversation."}
    page = await (await admin.get("/admin/?page_size=0", headers=JA)).text()
    assert "page_size には1から100までの数値を指定してください。" in page


# --- every page a Japanese reviewer reaches


class _VisibleText(HTMLParser):
    """What a reader sees of a page and what it says to a screen reader: element text (the
    title too) and the attributes people read; not `<code>` (ids, addresses, the audit detail)
    nor `<time>`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("code", "time", "style", "script"):
            self._hidden += 1
        for name, value in attrs:
            if name in ("placeholder", "aria-label", "title", "alt") and value:
                self.parts.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("code", "time", "style", "script"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


# Words that are no English of ours: stored data on these pages (the channel ids, the local
# admin's name), the export formats' names, and the switch's own "English".
DATA_WORDS = {"msteams", "directline", "Local", "admin", "JSON", "CSV", *LANGUAGE_NAMES.values()}


def english_words(page: str) -> set[str]:
    """Latin words on a page that no Japanese text of ours holds (as ID, JSON, UTC, Teams do)
    and that are not stored data; identifiers (with digits, `_`, `-`, `@`, `.`, `/`) are
    data."""
    parser = _VisibleText()
    parser.feed(page)
    ours = {w for t in all_texts().values() for w in re.findall(r"[A-Za-z]{2,}", t["ja"])}
    words: set[str] = set()
    for token in " ".join(parser.parts).split():
        if re.search(r"[0-9_\-@./:=?]", token):
            continue
        words |= set(re.findall(r"[A-Za-z]{2,}", token))
    return words - ours - DATA_WORDS


async def test_every_page_a_japanese_reviewer_reaches_is_all_japanese(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    client = await make_app()
    client.session.headers.update(JA)
    pages: dict[str, tuple[int, str]] = {}

    async def visit(name: str, method: str, path: str, **kwargs: Any) -> str:
        response = await client.request(method, path, **kwargs)
        page = await response.text()
        pages[name] = (response.status, page)
        assert response.headers.get("Content-Language") == "ja", name
        return page

    await visit("sign-in", "GET", "/admin/")
    await seed_in_japanese(client.server.app[STORE])
    client.session.headers["X-CSRF-Token"] = await sign_in_locally(client, caplog)
    await visit("audit, empty", "GET", "/admin/audit")
    await visit("list", "GET", "/admin/")
    await visit(
        "list, filtered and searched", "GET", "/admin/?flagged=true&category=violence&q=暴力"
    )
    await visit("list, nothing matches", "GET", "/admin/?tenant=nobody")
    await visit("transcript", "GET", "/admin/conversations/conv-ja")
    await visit("transcript, untitled", "GET", "/admin/conversations/conv-untitled")
    listed = await (await client.get("/admin/api/conversations/conv-ja")).json()
    pseudonym = listed["conversation"]["user"]
    await visit(
        "reveal",
        "POST",
        "/admin/reveal",
        data={"user": pseudonym, "reason": "苦情 42", "conversation": "conv-ja"},
    )
    await visit("delete a user", "GET", f"/admin/users/delete?user={pseudonym}")
    await visit(
        "delete a user, wrong confirmation",
        "POST",
        "/admin/users/delete",
        data={"user": pseudonym, "confirm": "違う", "reason": "erasure request 7"},
    )
    await visit(
        "delete a user, no reason",
        "POST",
        "/admin/users/delete",
        data={"user": pseudonym, "confirm": pseudonym, "reason": ""},
    )
    await visit("delete a conversation", "GET", "/admin/conversations/conv-travel/delete")
    await visit(
        "delete a conversation, no reason",
        "POST",
        "/admin/conversations/conv-travel/delete",
        data={"confirm": "conv-travel", "reason": ""},
    )
    deleted = await client.post(
        "/admin/conversations/conv-travel/delete",
        data={"confirm": "conv-travel", "reason": "依頼 7"},
        allow_redirects=False,
    )
    assert deleted.status == 303
    await visit("list, a conversation deleted", "GET", deleted.headers["Location"])
    await visit(
        "user deleted",
        "POST",
        "/admin/users/delete",
        data={"user": pseudonym, "confirm": pseudonym, "reason": "erasure request 7"},
    )
    await visit("audit", "GET", "/admin/audit")
    await visit("not found", "GET", "/admin/conversations/nothing-here")
    await visit("bad filter", "GET", "/admin/?page_size=0")
    await visit("unknown address", "GET", "/admin/nowhere")
    await visit("open?", "GET", "/admin/conversations/conv-untitled", headers=FOLLOWED_LINK)
    await visit(
        "CSRF refusal",
        "POST",
        "/admin/reveal",
        data={"user": "x", "reason": "y"},
        headers={"X-CSRF-Token": "forged"},
    )

    expected = {"sign-in": 401, "delete a user, wrong confirmation": 400}
    expected |= {"delete a user, no reason": 400}
    expected |= {"delete a conversation, no reason": 400, "not found": 404, "bad filter": 400}
    expected |= {"unknown address": 404, "CSRF refusal": 403}
    for name, (status, page) in pages.items():
        assert status == expected.get(name, 200), (name, status, page[-600:])
        assert html_lang(page) == "ja", name
        assert 'data-testid="language-switch"' in page, name
        assert not english_words(page), (name, english_words(page))
    # Some of what they say, to be sure the pages were the ones meant.
    said = {
        "sign-in": "最新のリンクを15分以内に開いてください",
        "audit, empty": "まだ記録はありません。",
        "list": "<th>最終更新（UTC）</th>",
        "list, filtered and searched": "テキスト検索では、",
        "list, nothing matches": "条件に一致する会話はありません。",
        "transcript": "プロンプト: 暴力（中） · ブロック済み",
        "transcript, untitled": "（無題）",
        "reveal": "この開示は監査ログに記録されました。",
        "delete a user": "会話2件と、そのすべてのメッセージとフィードバックが削除されます。",
        "delete a user, wrong confirmation": "確認欄には、表示されているユーザーをそのとおりに",
        "delete a conversation": "会話 ID",
        "delete a conversation, no reason": "会話を削除するには理由を入力してください（500文字",
        "list, a conversation deleted": "会話 <code>conv-travel</code> を削除しました（メッセ",
        "user deleted": "の会話1件、メッセージ16件",
        "audit": "会話履歴の閲覧 <code>view_transcript</code>",
        "not found": "該当する会話はありません。",
        "bad filter": "page_size には1から100までの数値を指定してください。",
        "unknown address": "ページが見つかりません。",
        "open?": "この会話を開きますか？",
        "CSRF refusal": "CSRF トークンがないか無効です",
    }
    for name, words in said.items():
        assert words in pages[name][1], (name, pages[name][1][-1500:])
    transcript = pages["transcript"][1]
    for words in (
        "<title>暴力的な依頼 – 会話履歴 · 管理</title>",
        "回答: 保護対象素材（コード）（検出）",
        "ブロックリスト: 社外秘リスト",
        "回答はここで打ち切られました。モデルが生成できる回答の最大長",
        "回答はここで打ち切られました（終了理由: content_filter）。",
        "回答はここで打ち切られました（終了理由: なし）。",
        "ユーザーがここで回答を停止しました。",
        "配信は確認されていません。",
        "ユーザーに表示されなかった回答（レビュー担当者のみ）",
        "1,234トークン",
        "低評価",
        'data-flag="ungrounded_material_v2">ungrounded_material_v2</span>',
    ):
        assert words in transcript, words


async def seed_in_japanese(store: Store) -> None:
    """A conversation with every kind of note a transcript shows, all its data in Japanese
    (so that any English left on a page is ours), a plain one and an untitled one."""
    prompt_verdict = {
        "filtered": True,
        "results": [
            {"category": "violence", "source": "prompt", "filtered": True, "severity": "medium"},
            {"category": "jailbreak", "source": "prompt", "filtered": False, "detected": True},
            {"category": "blocklist", "source": "prompt", "blocklist_ids": ["社外秘リスト"]},
        ],
        "errors": [{"source": "prompt", "code": "429", "message": "too many"}],
    }
    answer_verdict = {
        "filtered": True,
        "results": [
            {"category": "violence", "source": "output", "filtered": True, "severity": "high"},
            {
                "category": "protected_material_code",
                "source": "output",
                "detected": True,
                "citation": {"url": "https://example.com/code", "license": "MIT-0"},
            },
        ],
    }
    partial = MessageStatus.PARTIAL
    await _conversation(
        store,
        "conv-ja",
        "alice@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title="暴力的な依頼",
        at=T0,
        messages=[
            _msg(
                Role.USER,
                "暴力的なことを教えて",
                tokens=1234,
                filter=prompt_verdict,
                locale="ja-JP",
            ),
            _msg(
                Role.ASSISTANT,
                "",
                status=MessageStatus.FILTERED,
                withheld_text="差し控えた回答",
                filter=answer_verdict,
                usage=Usage(prompt=40, completion=12),
                deployment="gpt-4o-eastus",
                latency_ms=812,
                correlation_id="ref-123",
                feedback=Feedback(reaction="dislike", text="役に立たない"),
            ),
            _msg(Role.ASSISTANT, "途中まで", status=partial, finish_reason="length"),
            _msg(Role.ASSISTANT, "途中まで", status=partial, finish_reason="model_deadline"),
            _msg(Role.ASSISTANT, "途中まで", status=partial, finish_reason="stream_time_limit"),
            _msg(Role.ASSISTANT, "途中まで", status=partial, finish_reason="stopped"),
            _msg(Role.ASSISTANT, "途中まで", status=partial, finish_reason="content_filter"),
            _msg(Role.ASSISTANT, "途中まで", status=partial),
            _msg(Role.USER, "", status=MessageStatus.WITHDRAWN, revised_at=T0 + timedelta(hours=1)),
            _msg(Role.USER, "編集後の質問", revised_at=T0 + timedelta(hours=2)),
            _msg(Role.ASSISTANT, "届いたか不明な回答", error="delivery_unknown"),
            _msg(Role.ASSISTANT, "古い質問への回答", prompt_changed=True),
            _msg(Role.ASSISTANT, "", status=MessageStatus.ERROR, error="model_unavailable"),
            _msg(
                Role.ASSISTANT, "良い回答", feedback=Feedback(reaction="like", text="助かりました")
            ),
            _msg(Role.ASSISTANT, "普通の回答", feedback=Feedback(text="コメントのみ")),
            _msg(Role.CONTEXT_RESET, ""),
        ],
        filtered=2,
        errors=1,
        negative=1,
        reasons=[
            "violence",
            "jailbreak",
            "blocklist",
            "negative_feedback",
            "ungrounded_material_v2",
        ],
    )
    await _conversation(
        store,
        "conv-travel",
        "alice@contoso.com",
        tenant="tenant-b",
        channel="directline",
        title="出張規程について",
        at=T0 + timedelta(days=1),
        messages=[
            _msg(Role.USER, "出張の承認は誰がしますか？", tokens=12),
            _msg(Role.ASSISTANT, "上長が承認します。", usage=Usage(prompt=30, completion=6)),
        ],
    )
    await _conversation(
        store,
        "conv-untitled",
        "bob@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title="",
        at=T0 + timedelta(days=2),
        messages=[_msg(Role.USER, "こんにちは", tokens=3)],
    )
