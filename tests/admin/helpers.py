"""Admin test helpers: conversations written through the store API (deterministic flags, verdicts
and feedback, independent of the model), a local Entra ID stand-in (OpenID metadata, JWKS,
authorize and token endpoints with PKCE), and sign-in helpers."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from admin.web import CONTEXT, LOCAL_LINK_LOGGER, AdminContext
from storage.base import Store
from storage.models import (
    Feedback,
    Message,
    MessageStatus,
    Role,
    SummaryDelta,
    Usage,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
XSS_PROMPT = '<script>window.__xss = "prompt"</script> how do I hurt someone?'
XSS_WITHHELD = '<img src="x" onerror="window.__xss = \'withheld\'"> a violent answer'
FORMULA_FEEDBACK = '=HYPERLINK("http://evil.example","click")'


def _verdict(source: str, category: str, severity: str) -> dict[str, Any]:
    return {
        "filtered": True,
        "results": [
            {
                "category": category,
                "source": source,
                "filtered": True,
                "severity": severity,
                "detected": None,
                "blocklist_ids": [],
                "citation": None,
                "some_future_key": {"ignored": True},
            },
            {"category": "hate", "source": source, "filtered": False, "severity": "safe"},
        ],
        "errors": [],
    }


async def _conversation(
    store: Store,
    conversation_id: str,
    user_id: str,
    *,
    tenant: str,
    channel: str,
    title: str,
    at: datetime,
    messages: list[Message],
    filtered: int = 0,
    errors: int = 0,
    negative: int = 0,
    reasons: list[str] | None = None,
) -> None:
    await _add_messages(
        store,
        conversation_id,
        messages,
        at=at,
        user_id=user_id,
        tenant_id=tenant,
        channel_id=channel,
    )
    await store.apply_summary_delta(
        SummaryDelta(
            conversation_id=conversation_id,
            user_id=user_id,
            channel_id=channel,
            tenant_id=tenant,
            title=title,
            at=at,
            messages=len(messages),
            prompt_tokens=sum(m.usage.prompt for m in messages if m.usage),
            completion_tokens=sum(m.usage.completion for m in messages if m.usage),
            filtered=filtered,
            errors=errors,
            negative_feedback=negative,
            flag_reasons=reasons or [],
        )
    )


async def _add_messages(
    store: Store, conversation_id: str, messages: list[Message], *, at: datetime, **fields: Any
) -> None:
    """Stores `messages` in `conversation_id`, numbered from 1 a second apart after `at`, each
    with `fields` (a message's other fields by name) set."""
    for seq, message in enumerate(messages, start=1):
        created_at = at + timedelta(seconds=seq)
        update = {"conversation_id": conversation_id, "seq": seq, "created_at": created_at}
        await store.add_message(message.model_copy(update={**update, **fields}))


def _msg(role: Role, text: str, **fields: Any) -> Message:
    return Message(
        id=f"{role.value}-{secrets.token_hex(4)}",
        conversation_id="",
        seq=0,
        role=role,
        text=text,
        **fields,
    )


async def add_group_chat(
    store: Store, conversation_id: str, messages: list[Message], *, at: datetime
) -> None:
    """A Teams group chat, "Team lunch", in tenant-a: `messages` (each with its writer's
    `user_id`) numbered from 1 a second apart after `at`, and its summary the conversation's own
    (`shared:`), not a writer's, as the bot keeps a shared conversation's."""
    await _add_messages(
        store, conversation_id, messages, at=at, tenant_id="tenant-a", channel_id="msteams"
    )
    await store.apply_summary_delta(
        SummaryDelta(
            conversation_id=conversation_id,
            user_id=f"shared:{conversation_id}",
            tenant_id="tenant-a",
            channel_id="msteams",
            title="Team lunch",
            at=at,
            messages=len(messages),
        )
    )


async def seed(store: Store) -> None:
    """Four conversations, newest first: plain (carol), error (alice), feedback (bob),
    flagged (alice, with script and onerror text)."""
    await _conversation(
        store,
        "conv-flagged",
        "alice@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title="Violent request",
        at=T0,
        messages=[
            _msg(
                Role.USER,
                XSS_PROMPT,
                tokens=14,
                filter=_verdict("prompt", "violence", "medium"),
            ),
            _msg(
                Role.ASSISTANT,
                "",
                status=MessageStatus.FILTERED,
                withheld_text=XSS_WITHHELD,
                filter=_verdict("output", "violence", "high"),
                usage=Usage(prompt=40, completion=12),
                deployment="gpt-4o-eastus",
                latency_ms=812,
            ),
        ],
        filtered=1,
        reasons=["violence"],
    )
    await _conversation(
        store,
        "conv-feedback",
        "bob@contoso.com",
        tenant="tenant-b",
        channel="directline",
        title="Travel policy",
        at=T0 + timedelta(days=1),
        messages=[
            _msg(Role.USER, "What is the travel policy?", tokens=7),
            _msg(
                Role.ASSISTANT,
                "Book through the portal.",
                usage=Usage(prompt=30, completion=6),
                deployment="gpt-4o-eastus",
                latency_ms=640,
                feedback=Feedback(reaction="dislike", text=FORMULA_FEEDBACK),
            ),
        ],
        negative=1,
        reasons=["negative_feedback"],
    )
    await _conversation(
        store,
        "conv-error",
        "alice@contoso.com",
        tenant="tenant-a",
        channel="msteams",
        title="Expense question",
        at=T0 + timedelta(days=2),
        messages=[
            _msg(Role.USER, "How do I file expenses?", tokens=6),
            _msg(Role.ASSISTANT, "", status=MessageStatus.ERROR, error="model_unavailable"),
        ],
        errors=1,
    )
    await _conversation(
        store,
        "conv-plain",
        "carol@contoso.com",
        tenant="tenant-a",
        channel="directline",
        title="Quarterly report",
        at=T0 + timedelta(days=3),
        messages=[
            _msg(Role.USER, "Summarize the budget spreadsheet for Q3", tokens=9),
            _msg(
                Role.ASSISTANT,
                "Here is the summary.",
                usage=Usage(prompt=25, completion=5),
                deployment="gpt-4o-eastus",
                latency_ms=500,
            ),
        ],
    )


# --- sign-in helpers

LINK = re.compile(r"/admin/login\?token=([A-Za-z0-9_\-]+)")


def local_link_tokens(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The tokens of the one-time sign-in links logged so far, oldest first."""
    return [
        found.group(1)
        for record in caplog.records
        if record.name == LOCAL_LINK_LOGGER and (found := LINK.search(record.getMessage()))
    ]


def local_link_token(caplog: pytest.LogCaptureFixture) -> str:
    """The token of the link logged at start-up."""
    tokens = local_link_tokens(caplog)
    assert tokens, "no one-time sign-in link was logged at start-up"
    return tokens[0]


def admin_context(client: TestClient[Any, Any]) -> AdminContext:
    """The admin sub-app's context in an app that create_app built."""
    for resource in client.server.app.router.resources():
        info: dict[str, Any] = dict(resource.get_info())
        if isinstance(info.get("app"), web.Application) and CONTEXT in info["app"]:
            context: AdminContext = info["app"][CONTEXT]
            return context
    raise AssertionError("no admin sub-app")


def local_clock(client: TestClient[Any, Any]) -> list[float]:
    """Sets the local sign-in's clock to one the test moves: add seconds to the list's item."""
    local = admin_context(client).local
    assert local is not None, "not in local mode"
    start, shift = local.clock(), [0.0]
    local.clock = lambda: start + shift[0]
    return shift


async def sign_in_locally(client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture) -> str:
    """Signs the client in with the logged link; returns its CSRF token."""
    token = local_link_token(caplog)
    response = await client.get(f"/admin/login?token={token}", allow_redirects=False)
    assert response.status == 303, await response.text()
    me = await client.get("/admin/api/me")
    assert me.status == 200
    csrf: str = (await me.json())["csrfToken"]
    return csrf


def appservice_header(roles: list[str], oid: str = "oid-1", name: str = "Rita Reviewer") -> str:
    principal = {
        "auth_typ": "aad",
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        "claims": [
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
            {"typ": "name", "val": name},
            *({"typ": "roles", "val": role} for role in roles),
        ],
    }
    return base64.b64encode(json.dumps(principal).encode()).decode()


# --- a local Entra ID stand-in


@dataclass
class EntraStub:
    """OpenID metadata, JWKS, /authorize (signs the configured user in at once) and /token
    (checks the PKCE verifier and redirect URI, returns an ID token). `multi_tenant`: the
    metadata names its issuer with Entra's `{tenantid}` placeholder, as the `common` and
    `organizations` metadata do."""

    client_id: str = "admin-client-id"
    # Entra's `tid` is the tenant's GUID.
    tenant: str = "7f3c2a91-5b6d-4e8f-9a0b-1c2d3e4f5a6b"
    url: str = ""
    multi_tenant: bool = False
    key: Any = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    kid: str = "entra-test-key"
    user: dict[str, Any] = field(
        default_factory=lambda: {"oid": "oid-admin", "name": "Ada Admin", "roles": ["Admin"]}
    )
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    # What /token answers every code with instead of an ID token (a 400 with this `error`).
    token_error: str | None = None

    @property
    def issuer(self) -> str:
        return self.issuer_of(self.tenant)

    def issuer_of(self, tenant: str) -> str:
        """The `iss` of a token from `tenant`, as Entra writes it."""
        return f"{self.url}/{tenant}/v2.0"

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/{self.tenant}/v2.0/.well-known/openid-configuration"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._metadata)
        app.router.add_get("/keys", self._keys)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        return app

    async def _metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer_of("{tenantid}") if self.multi_tenant else self.issuer,
                "jwks_uri": f"{self.url}/keys",
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig"})
        return web.json_response({"keys": [jwk]})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        assert q["client_id"] == self.client_id and q["response_type"] == "code"
        assert q["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = dict(q)
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
        raise web.HTTPFound(target)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        if self.token_error is not None:
            return web.json_response({"error": self.token_error}, status=400)
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).decode().rstrip("=") != grant["code_challenge"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        id_token = self.mint(nonce=grant["nonce"], **self.user)
        return web.json_response({"token_type": "Bearer", "id_token": id_token})

    def mint(self, key: Any = None, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "tid": self.tenant,
            "oid": "oid-user",
            "name": "Test User",
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + 3600,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})
