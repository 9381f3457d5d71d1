"""The channel side of the benchmark, in the load generator's process: a local OpenID provider
(metadata, JWKS, client-credentials token endpoint) and a recording connector that timestamps
every reply. Loopback only.

The stock botbuilder bot gets its outbound token through MSAL, which accepts only an https
authority: the same endpoints are also served over TLS with a self-signed certificate made for
this run (the stock bot trusts it through REQUESTS_CA_BUNDLE).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://api.botframework.com"
BENCH_APP_ID = "bench-bot-app-id"
BENCH_APP_PASSWORD = "bench-bot-secret"  # noqa: S105 (a local test credential, nothing else)


@dataclass
class Arrival:
    """One reply seen by the connector: when (time.monotonic(), comparable across processes on
    Linux) and for which incoming activity."""

    at: float
    conversation_id: str
    reply_to: str | None
    kind: str


@dataclass
class Channel:
    """Issuer + recording connector. `url` is plain http; `tls_url` the same app over TLS."""

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = "bench-signing-key"
    url: str = ""
    tls_url: str = ""
    ca_file: Path | None = None
    token_requests: int = 0
    replies: int = 0
    # Typing activities that carry part of a streamed answer (streamType "streaming").
    stream_updates: int = 0
    _waiters: dict[str, asyncio.Future[Arrival]] = field(default_factory=dict)
    # Conversation -> the activity its answer is awaited for: a Web Chat channel's final
    # message names no replyToId, and a conversation has one question out at a time.
    _awaited_in: dict[str, str] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _token_cache: dict[str, str] = field(default_factory=dict)

    # --- lifecycle

    async def start(self, workdir: Path) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        base = "/v3/conversations/{conversation}/activities"
        app.router.add_post(base, self._post)
        app.router.add_post(base + "/{activity}", self._post)
        app.router.add_put(base + "/{activity}", self._put)
        app.router.add_get("/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/keys", self._keys)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        # MSAL (stock bot): an ADFS-style authority needs no instance discovery, so MSAL only
        # reads this document and then posts to its token endpoint; all on loopback.
        app.router.add_get("/adfs/.well-known/openid-configuration", self._msal_metadata)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.url = f"http://127.0.0.1:{_bound_port(site)}"
        cert, key = _self_signed_certificate(workdir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        tls_site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context, backlog=1024)
        await tls_site.start()
        self.tls_url = f"https://127.0.0.1:{_bound_port(tls_site)}"
        self.ca_file = cert

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- tokens

    def mint(self, audience: str = BENCH_APP_ID, service_url: str | None = None) -> str:
        """A channel token, valid for an hour; one per run like a real channel's cached token."""
        service_url = service_url or self.url
        cached = self._token_cache.get(service_url)
        if cached:
            return cached
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "serviceurl": service_url,
            "nbf": now - 10,
            "iat": now - 10,
            "exp": now + 3600,
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        self._token_cache[service_url] = token
        return token

    async def _metadata(self, request: web.Request) -> web.Response:
        base = self.tls_url if request.secure else self.url
        return web.json_response({"issuer": ISSUER, "jwks_uri": f"{base}/keys"})

    async def _keys(self, request: web.Request) -> web.Response:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "endorsements": ["test", "msteams", "webchat"]})
        return web.json_response({"keys": [jwk]})

    async def _msal_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": f"{self.tls_url}/adfs",
                "authorization_endpoint": f"{self.tls_url}/adfs/oauth2/v2.0/authorize",
                "token_endpoint": f"{self.tls_url}/adfs/oauth2/v2.0/token",
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if form.get("client_secret") != BENCH_APP_PASSWORD:
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3600, "access_token": f"out-{uuid.uuid4()}"}
        )

    # --- the connector

    def expect(self, activity_id: str, conversation_id: str = "") -> asyncio.Future[Arrival]:
        """A future resolved when the message replying to `activity_id` arrives (or, with
        `conversation_id`, the next message to that conversation that names no replyToId)."""
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self._waiters[activity_id] = future
        if conversation_id:
            self._awaited_in[conversation_id] = activity_id
        return future

    def forget(self, activity_id: str) -> None:
        self._waiters.pop(activity_id, None)
        for conversation, awaited in list(self._awaited_in.items()):
            if awaited == activity_id:
                del self._awaited_in[conversation]

    async def _post(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        if not request.headers.get("Authorization", "").startswith("Bearer out-"):
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        body = await request.json()
        kind = str(body.get("type", ""))
        conversation = request.match_info["conversation"]
        reply_to = request.match_info.get("activity") or body.get("replyToId")
        if not reply_to and kind == "message":
            reply_to = self._awaited_in.pop(conversation, None)
        if kind == "typing" and (body.get("channelData") or {}).get("streamType") == "streaming":
            self.stream_updates += 1
        if kind == "message":
            self.replies += 1
            waiter = self._waiters.pop(str(reply_to), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(Arrival(at, conversation, reply_to, kind))
        return web.json_response({"id": f"reply-{uuid.uuid4().hex[:12]}"})

    async def _put(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": request.match_info["activity"]})


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the asyncio Server here; port 0 was asked for
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])


def _self_signed_certificate(workdir: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = workdir / "channel-cert.pem", workdir / "channel-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def message_activity(
    service_url: str,
    conversation_id: str,
    activity_id: str,
    text: str,
    user_id: str,
    channel_id: str = "test",
) -> dict[str, Any]:
    """`channel_id` "test" gets one message per answer; "webchat" gets the answer streamed (typing
    activities with streaminfo, then the final message), as Web Chat users do."""
    return {
        "type": "message",
        "id": activity_id,
        "channelId": channel_id,
        "serviceUrl": service_url,
        "conversation": {"id": conversation_id},
        "from": {"id": user_id, "name": "Bench User"},
        "recipient": {"id": BENCH_APP_ID, "name": "Assistant"},
        "text": text,
        "locale": "en-US",
        "timestamp": "2026-11-21T10:00:00Z",
    }
