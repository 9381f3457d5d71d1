"""The chat page, the embed script, the Web Chat bundle (botframework-webchat's, which `make setup`
copies out of node_modules into webchat/vendor: no CDN) and the
token endpoint the page calls first.

`POST /api/directline/token` answers for the signed-in user: with `DIRECT_LINE_SECRET` it asks
Azure Bot Service's Direct Line for a token bound to `dl_<user id>` (the secret never leaves the
server: not in a response, a log line or an error); otherwise it opens a conversation on the
built-in endpoint. The page then hands the token and `domain` to stock Web Chat.

After a reload the page asks to resume the conversation it had in that browser tab
(`{"resume": {"conversationId", "token", "ticket"}}`, kept in the tab's sessionStorage). It gets a
fresh token for it (`"resumed": true`) only while its last token is still valid and only for the
person signed in now; anything else (an expired token, a conversation the built-in endpoint no
longer holds, another user's token, a changed sign-in) gets a new conversation, as a first visit
does. On Azure's Direct Line the token is Azure's and says nothing this app can check, so the
answer also carries a ticket signed here (with a key derived from `DIRECT_LINE_SECRET`, which
every instance shares) naming the conversation and its user; a resume needs it, then refreshes the
page's token at Azure (`/tokens/refresh`: an expired one is refused there).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from bot.routes import json_error
from config import PROJECT_ROOT, Settings, WebChatAuthMode
from webchat.conversations import Participant, RegistryFull
from webchat.directline import PREFIX, BuiltinDirectLine, not_resumed
from webchat.identity import NotSignedIn, current_user
from webchat.limits import TokenRate
from webchat.tokens import Grant, TokenError, TokenSigner

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
BUNDLE = PROJECT_ROOT / "webchat" / "vendor" / "webchat.js"
_STATIC_FILES = {"page.js": "text/javascript", "page.css": "text/css"}
_TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=15)
_EMPTY_STYLE_HASH = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
# Every open conversation of the built-in Direct Line is in use: one may end within this time.
FULL_RETRY_AFTER_SECONDS = 30
# A resume ticket names an Azure Direct Line conversation and its user; the Azure token's own
# expiry (30 minutes after its last refresh) decides sooner whether it can go on.
RESUME_TICKET_SECONDS = 8 * 3600
_RESUME_AUDIENCE = "webchat-resume"
# Far beyond any real id, token or ticket: longer values are not looked at.
_MAX_RESUME_FIELD = 8192


@dataclass(frozen=True)
class ResumeRequest:
    """What the page kept of the conversation it had in this browser tab."""

    conversation_id: str
    token: str
    ticket: str = ""


def _resume_request(body: object) -> ResumeRequest | None:
    resume = body.get("resume") if isinstance(body, dict) else None
    if not isinstance(resume, dict):
        return None
    fields = [resume.get(name) for name in ("conversationId", "token", "ticket")]
    conversation_id, token, ticket = (
        value if isinstance(value, str) and 0 < len(value) <= _MAX_RESUME_FIELD else ""
        for value in fields
    )
    if not conversation_id or not token:
        return None
    return ResumeRequest(conversation_id, token, ticket)


class WebChatPage:
    def __init__(
        self,
        settings: Settings,
        directline: BuiltinDirectLine,
        usage_policy_version: str | None = None,
    ) -> None:
        self._settings = settings
        self._directline = directline
        self._usage_policy_version = usage_policy_version
        self._http: aiohttp.ClientSession | None = None
        self._rate = TokenRate.for_mode(settings.webchat_auth_mode is WebChatAuthMode.LOCAL)
        self._tickets: TokenSigner | None = None
        if settings.uses_azure_direct_line:
            # Derived from the Direct Line secret, which every instance and worker shares and
            # which outlives restarts (one-way: the ticket key tells nothing of the secret).
            key = hmac.new(
                settings.direct_line_secret.get_secret_value().encode(),
                b"web chat resume tickets",
                hashlib.sha256,
            ).hexdigest()
            self._tickets = TokenSigner(key, RESUME_TICKET_SECONDS, _RESUME_AUDIENCE)

    async def start(self) -> None:
        if not BUNDLE.is_file():
            log.error(
                "the web chat bundle is missing: run `make setup` (npm ci, then a copy into "
                "webchat/vendor); the chat page shows an error until then",
                extra={"path": str(BUNDLE)},
            )
        if self._settings.uses_azure_direct_line:
            self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self._index)
        router.add_get("/webchat/embed.js", self._embed)
        router.add_get("/webchat/config.json", self._config)
        router.add_get("/webchat/static/{name}", self._static)
        router.add_get("/webchat/vendor/webchat.js", self._bundle)
        router.add_post("/api/directline/token", self._token)

    # --- page and assets

    def _csp(self, nonce: str) -> str:
        connect = ["'self'"]
        if self._settings.uses_azure_direct_line:
            parts = urlsplit(self._settings.direct_line_endpoint)
            host = parts.netloc
            connect += [
                f"{parts.scheme}://{host}",
                f"{'wss' if parts.scheme == 'https' else 'ws'}://{host}",
            ]
        ancestors = " ".join(["'self'", *self._settings.webchat_trusted_origins])
        return "; ".join(
            [
                "default-src 'self'",
                "script-src 'self'",
                # Web Chat inserts its style sheets at run time; the nonce lets only those in.
                # Style *attributes* (set in rendered markup) cannot carry a nonce and cannot
                # run script, so only they are allowed inline.
                f"style-src 'self' 'nonce-{nonce}'",
                # Some Web Chat parts create an empty <style> and fill it through CSSOM
                # (which CSP does not govern): the hash of the empty string lets only that in.
                f"style-src-elem 'self' 'nonce-{nonce}' '{_EMPTY_STYLE_HASH}'",
                "style-src-attr 'unsafe-inline'",
                "img-src 'self' data: blob:",
                "media-src 'self' blob:",
                "font-src 'self' data:",
                f"connect-src {' '.join(connect)}",
                "object-src 'none'",
                "base-uri 'none'",
                "form-action 'self'",
                f"frame-ancestors {ancestors}",
            ]
        )

    async def _index(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        if not BUNDLE.is_file():
            html = (STATIC_DIR / "missing.html").read_text(encoding="utf-8")
            status = 503
        else:
            html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
            status = 200
        response = web.Response(
            text=html.replace("{{nonce}}", nonce), content_type="text/html", status=status
        )
        response.headers["Content-Security-Policy"] = self._csp(nonce)
        response.headers["Cache-Control"] = "no-store"
        _hardening(response, request)
        return response

    async def _embed(self, request: web.Request) -> web.FileResponse:
        response = web.FileResponse(STATIC_DIR / "embed.js")
        response.content_type = "text/javascript"
        response.headers["Cache-Control"] = "no-cache"
        _hardening(response, request)
        return response

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC_FILES:
            raise web.HTTPNotFound()
        response = web.FileResponse(STATIC_DIR / name)
        response.content_type = _STATIC_FILES[name]
        response.headers["Cache-Control"] = "no-cache"
        _hardening(response, request)
        return response

    async def _bundle(self, request: web.Request) -> web.StreamResponse:
        if not BUNDLE.is_file():
            return json_error(503, "not_installed", "botframework-webchat is not installed.")
        response = web.FileResponse(BUNDLE)
        response.content_type = "text/javascript"
        response.headers["Cache-Control"] = "no-cache"
        _hardening(response, request)
        return response

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "assistantName": self._settings.assistant_name,
                "simulator": self._settings.uses_simulator,
                "mode": "azure" if self._settings.uses_azure_direct_line else "builtin",
                # With USAGE_POLICY_FILE the page names the policy users will be asked to
                # accept instead of its own usage note, as the Teams welcome does.
                "organizationName": self._settings.organization_name,
                "usagePolicyVersion": self._usage_policy_version,
            },
            headers={"Cache-Control": "no-store"},
        )

    # --- tokens

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            # A JSON content type makes cross-site form posts impossible (CORS preflight).
            return json_error(415, "unsupported_media_type", "Send application/json.")
        try:
            user = current_user(request, self._settings.webchat_auth_mode)
        except NotSignedIn:
            return json_error(401, "unauthorized", "Sign in to use the assistant.")
        wait = self._rate.take((user.tenant_id, user.id))
        if wait:
            return _too_many(wait)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # aiohttp's own answer is text/plain; the page reads every error as JSON.
            return json_error(413, "too_large", "The body is larger than the size limit.")
        try:
            # An empty body is a first visit too (the page sends `{}`).
            resume = _resume_request(json.loads(raw) if raw.strip() else None)
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
            return json_error(400, "bad_request", "The body is not valid JSON.")
        participant = Participant(
            user.channel_user_id, user.name, user.aad_object_id, user.tenant_id
        )
        if self._settings.uses_azure_direct_line:
            return await self._azure_token(request, participant, resume)
        resumed = (
            self._directline.resume_conversation(participant, resume.conversation_id, resume.token)
            if resume is not None
            else None
        )
        try:
            token, grant = resumed or self._directline.open_conversation(participant)
        except RegistryFull:
            return _all_in_use()
        return web.json_response(
            {
                "mode": "builtin",
                "token": token,
                "conversationId": grant.conversation_id,
                "expires_in": self._directline.signer.lifetime,
                "domain": self._directline.base_url(request) + PREFIX,
                "userId": participant.user_id,
                "userName": participant.user_name,
                "resumed": resumed is not None,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _azure_token(
        self, request: web.Request, user: Participant, resume: ResumeRequest | None
    ) -> web.Response:
        assert self._http is not None
        if resume is not None:
            resumed = await self._azure_resume(user, resume)
            if resumed is not None:
                return self._azure_grant(user, resumed, resumed=True)
        origins = list(self._settings.webchat_trusted_origins)
        if self._settings.public_base_url:
            origins.append(self._settings.public_base_url.rstrip("/"))
        endpoint = self._settings.direct_line_endpoint
        secret = self._settings.direct_line_secret.get_secret_value()
        unavailable = json_error(
            502, "directline_unavailable", "The chat service is not available right now."
        )
        try:
            async with self._http.post(
                f"{endpoint}/tokens/generate",
                headers={"Authorization": f"Bearer {secret}"},
                json={
                    "user": {"id": user.user_id, "name": user.user_name},
                    "trustedOrigins": origins,
                },
                timeout=_TOKEN_TIMEOUT,
            ) as response:
                if response.status != 200:
                    log.warning(
                        "Direct Line refused the token request", extra={"status": response.status}
                    )
                    return unavailable
                body = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # The exception type only: aiohttp messages can carry the request's URL and headers.
            log.warning("Direct Line token request failed", extra={"error": type(exc).__name__})
            return unavailable
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            log.warning("Direct Line answered without a token")
            return unavailable
        return self._azure_grant(user, body, resumed=False)

    def _azure_grant(
        self, user: Participant, body: dict[str, object], resumed: bool
    ) -> web.Response:
        assert self._tickets is not None
        conversation_id = body.get("conversationId")
        ticket = None
        if isinstance(conversation_id, str) and conversation_id:
            ticket, _ = self._tickets.issue(
                Grant(conversation_id, user.user_id, tenant_id=user.tenant_id)
            )
        return web.json_response(
            {
                "mode": "azure",
                "token": body["token"],
                "conversationId": conversation_id,
                "expires_in": body.get("expires_in"),
                "domain": self._settings.direct_line_endpoint,
                "userId": user.user_id,
                "userName": user.user_name,
                "resumed": resumed,
                "ticket": ticket,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _azure_resume(
        self, user: Participant, resume: ResumeRequest
    ) -> dict[str, object] | None:
        """Azure's answer to refreshing the page's last token, when the ticket says the
        conversation is this user's and Azure still takes the token; None otherwise (the page
        gets a new conversation). The refresh is the token's own call: no secret is sent."""
        assert self._http is not None and self._tickets is not None
        try:
            owner = self._tickets.verify(resume.ticket, resume.conversation_id)
        except TokenError as exc:
            not_resumed(str(exc))
            return None
        if not (
            secrets.compare_digest(owner.user_id, user.user_id)
            and secrets.compare_digest(owner.tenant_id, user.tenant_id)
        ):
            not_resumed("another user")
            return None
        try:
            async with self._http.post(
                f"{self._settings.direct_line_endpoint}/tokens/refresh",
                headers={"Authorization": f"Bearer {resume.token}"},
                timeout=_TOKEN_TIMEOUT,
            ) as response:
                if response.status != 200:
                    # 403: the token expired (Azure refreshes only a valid one) or is not valid.
                    not_resumed(f"Direct Line answered {response.status}")
                    return None
                body = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            not_resumed(type(exc).__name__)
            return None
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("token"), str)
            or body.get("conversationId") != resume.conversation_id
        ):
            # An Azure token is bound to one conversation: a refreshed one for another is not
            # this conversation going on.
            not_resumed("another conversation")
            return None
        return body


def _too_many(seconds: int) -> web.Response:
    """One user asked for more tokens than `TokenRate` allows; the page waits and asks again."""
    response = json_error(
        429, "too_many_requests", "Too many chats were opened in a short time; retry shortly."
    )
    response.headers["Retry-After"] = str(seconds)
    response.headers["Cache-Control"] = "no-store"
    return response


def _all_in_use() -> web.Response:
    """The built-in Direct Line holds as many conversations as it may, every one in use."""
    response = json_error(
        503, "too_many_conversations", "Too many conversations are open; retry shortly."
    )
    response.headers["Retry-After"] = str(FULL_RETRY_AFTER_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return response


# A year, this host only: the organization's other hosts are not ours to pin.
HSTS = "max-age=31536000"


def _hardening(response: web.StreamResponse, request: web.Request) -> None:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if request.secure or forwarded == "https":
        # Reached over https (here, or at the front end that ended TLS, as App Service says):
        # browsers then never try the chat page over plain http.
        response.headers["Strict-Transport-Security"] = HSTS
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
