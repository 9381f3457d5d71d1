"""The operator's page when the Web Chat bundle was never installed: what to run, in English and
in Japanese alike."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import webchat.page
from tests.conftest import AppFactory


async def test_without_the_bundle_the_page_says_what_to_install_in_both_languages(
    make_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a server where `make setup` never ran: no webchat/vendor/webchat.js.
    monkeypatch.setattr(webchat.page, "BUNDLE", tmp_path / "webchat.js")
    client: Any = await make_app()

    response = await client.get("/")
    html = await response.text()

    assert response.status == 503
    [title] = re.findall(r"<title>(.*?)</title>", html)
    [heading] = re.findall(r"<h1>(.*?)</h1>", html, re.DOTALL)
    paragraphs = dict(re.findall(r'<p( lang="ja")?>(.*?)</p>', html, re.DOTALL))
    assert "Web chat is not installed" in title and "インストールされていません" in title
    assert "not installed" in heading and "インストールされていません" in heading
    for language in ("", ' lang="ja"'):
        text = paragraphs[language]
        for needed in ("<code>botframework-webchat</code>", "<code>make setup</code>", "npm ci"):
            assert needed in text, (language, needed)
