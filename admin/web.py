"""The admin review sub-app: `create_admin_app(store_provider, settings, pseudonyms)`, at /admin/.

Its own middlewares: security headers and errors (outermost), then what another site may make a
browser ask for (`_other_sites`), then sign-in and CSRF. Roles are checked per handler with
`@requires`. Pages are server-rendered with Jinja2 (autoescape on; no scripts at all) from the
same view functions that the JSON API under /admin/api/ returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import ipaddress
import json
import logging
import re
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import aiohttp
import jinja2
import markupsafe
from aiohttp import web

from admin import export
from admin.auth import (
    LOCAL_LINK_TTL_SECONDS,
    AuthError,
    LinkState,
    LocalSignIn,
    Principal,
    Role,
    Sealer,
    Sessions,
    Signer,
    appservice_principal,
    roles_from,
)
from admin.erasures import OpenConversations, SecondPasses
from admin.oidc import OidcClient, oauth_error_code
from admin.pseudonyms import PREFIX as PSEUDONYM_PREFIX
from admin.pseudonyms import Pseudonyms, UnknownPseudonym
from admin.queries import (
    EXPORT_SEARCH_MAX_CONVERSATIONS,
    FLAG_CATEGORIES,
    LIST_FILTERS,
    SEARCH_MAX_CONVERSATIONS,
    SEARCH_MESSAGES_PER_CONVERSATION,
    BadRequest,
    Filters,
    conversations_to_export,
    date_range,
    list_conversations,
    message_view,
    parse_filters,
    summary_view,
    text_value,
    transcript_summary,
    whole_number,
)
from admin.settings import AdminSettings, AuthMode
from admin.signouts import SignOuts
from admin.texts import (
    LANGUAGE_COOKIE,
    LANGUAGE_NAMES,
    LANGUAGES,
    Language,
    PageTexts,
    Text,
    all_texts,
    language_of,
    show_hidden_controls,
)
from storage.base import USER_DATA_KINDS, Store, StoreError
from storage.erasures import RecentErasures
from storage.ids import person_ids
from storage.models import AuditQuery, AuditRecord, ConversationSummary, Message
from storage.summaries import is_shared_owner

# Start-up lines go through the app's logger, like the other "what is in use" lines.
startup_log = logging.getLogger("app")
# The local sign-in links have a logger of their own, which app.py's configure_logging keeps on
# stderr: a link lets whoever reads it in, and Application Insights has a wider readership than
# the admins. A child of "app", so whatever shows the start-up lines shows the links too.
LOCAL_LINK_LOGGER = "app.local_sign_in_link"
link_log = logging.getLogger(LOCAL_LINK_LOGGER)
log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "admin_session"
FLOW_COOKIE = "admin_oidc_flow"
# Local mode: the page a browser without a session asked for, signed, for the one-time link
# (which is the same for everyone, so it cannot carry it) to return that browser to.
RETURN_COOKIE = "admin_return"
# What a browser's Sec-Fetch-Site says of a request that another site's page made it send.
OTHER_SITES = frozenset({"cross-site", "same-site"})
COOKIE_PATH = "/admin/"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
# Where a sign-in may return to (`_return_target`): pages, read with GET. A list's filters and
# continuation token fit well within this; a longer address returns to the list instead.
RETURN_ROUTES = frozenset(
    {
        "list",
        "transcript",
        "delete_conversation_confirm",
        "delete_confirm",
        "audit",
        "deleted",
        "revealed",
    }
)
RETURN_MAX_CHARS = 2048
_NOT_RETURN_TARGETS = (
    "/admin/api/",
    "/admin/login",
    "/admin/auth/",
    "/admin/logout",
    "/admin/static/",
)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
EXPORT_MAX_CONVERSATIONS = 5000
# The list page's parameter that carries a deletion's result (signed, for DELETED_SECONDS): the
# deletion redirects there, so reloading the page does not post it again.
DELETED_PARAM = "deleted"
DELETED_SECONDS = 300
MAX_REASON_CHARS = 500
# A rejected form comes back with what the admin typed in its fields (`_as_typed`), a reason
# that was too long too, so that it can be shortened rather than typed again. But no more than
# this of any field: four reasons' worth shows a pasted text whole with room to pick the reason
# out of it, while a page never reflects a whole request body (aiohttp reads up to 1 MiB of a
# form) back. The pages' fields take MAX_REASON_CHARS when typed in, so only a pasted or
# scripted value is ever cut.
MAX_TYPED_CHARS = 4 * MAX_REASON_CHARS
# How long the language chosen on a page is remembered.
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600
# Documents a user's data export reads from the store at a time, and so about all it holds in
# memory: a message with its verdicts is a few kB of JSON, so a page is a few hundred kB.
EXPORT_PAGE_SIZE = 100
CSP = (
    "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
StoreProvider = Callable[[], Store]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminError(Exception):
    """An error answer: JSON for the API, a page for browsers. Its text (admin/texts.yaml, safe
    to show) is said on a page in the reader's language; the API's `message` is the English
    one, beside the stable `code` a client goes by (scripts and logs read one language)."""

    def __init__(self, status: int, code: str, text: str | Text, **values: object) -> None:
        self.text = text if isinstance(text, Text) else Text(text, values)
        self.message = self.text.plain()
        super().__init__(self.message)
        self.status, self.code = status, code


UNKNOWN_PSEUDONYM = AdminError(404, "unknown_pseudonym", "error_unknown_pseudonym")
NOT_A_PERSON = AdminError(400, "not_a_person", "error_not_a_person")
PSEUDONYM_REQUIRED = AdminError(403, "pseudonym_required", "error_pseudonym_required")


@dataclass
class AdminContext:
    settings: AdminSettings
    store_provider: StoreProvider
    templates: jinja2.Environment
    sessions: Sessions
    pseudonyms: Pseudonyms
    flow_signer: Signer
    # Signs the result of a deletion for the page it redirects to (`DELETED_PARAM`).
    result_signer: Signer
    # Signs the page a sign-in returns to (`RETURN_COOKIE`).
    return_signer: Signer
    # Seals what a page's address must not show (`SEALED_FIELDS`).
    sealer: Sealer
    local: LocalSignIn | None = None
    oidc: OidcClient | None = None
    http: aiohttp.ClientSession | None = field(default=None, repr=False)
    # This process's erasures, which its turns check before they store anything.
    recent_erasures: RecentErasures = field(default_factory=RecentErasures)
    # None: no second pass (an app that wires none).
    second_passes: SecondPasses | None = None
    # Sign-outs, kept in the store (admin/signouts.py).
    signouts: SignOuts = field(default_factory=SignOuts)
    # Denied requests this minute, per person (`_record_denial`).
    denials: Denials = field(default_factory=lambda: Denials())
    # The quota scope a stored user id is counted under (`create_admin_app`).
    quota_scope: Callable[[str], str] | None = None
    # What this process holds of conversations in memory (`create_admin_app`); None: nothing.
    open_conversations: OpenConversations | None = None

    @property
    def store(self) -> Store:
        return self.store_provider()


CONTEXT = web.AppKey("admin_context", AdminContext)
PRINCIPAL = web.RequestKey("admin_principal", Principal)
# Set on a link followed from another site (`_other_sites`): it reads nothing it would record.
FROM_ANOTHER_SITE = web.RequestKey("admin_from_another_site", bool)


_KANA_OR_KANJI = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
_LATIN = re.compile("[A-Za-z]")


def _route(request: web.Request) -> str:
    """What a log line names a request by: its route's template, never its path, which holds
    conversation ids (a Teams conversation id can name its user)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def text_lang(text: object) -> str:
    """`ja` for a text with kana or kanji (a Japanese title on the English pages), else ''."""
    return "ja" if isinstance(text, str) and _KANA_OR_KANJI.search(text) else ""


@jinja2.pass_context
def _part_lang(context: jinja2.runtime.Context, text: object) -> str:
    """The `lang` a stored text (a title) needs on this page, or '' when it is the page's:
    `ja` for a Japanese one on an English page, `en` for one in Latin letters only on a
    Japanese page."""
    if context.get("lang") != "ja":
        return text_lang(text)
    if isinstance(text, str) and not text_lang(text) and _LATIN.search(text):
        return "en"
    return ""


def _readable_json(value: object) -> object:
    """An audit record's detail as its page shows it: JSON with the text as written, where
    `tojson` writes テ as \\u30c6 and < as \\u003c for a script, not a reader. A plain string,
    so the page escapes it as any text; bidi and other control characters named as on every
    page (the escapes hid them, and `finalize` passes over markup such as `tojson`'s)."""
    return show_hidden_controls(json.dumps(value, ensure_ascii=False, sort_keys=True))


@jinja2.pass_context
def _at_fault(context: jinja2.runtime.Context, name: str) -> markupsafe.Markup:
    """The attributes of a filter form's field that its rejection is about (`invalid`, the
    fields at fault, the first one focused): marked invalid and tied to the error's text."""
    invalid: Sequence[str] = context.get("invalid") or ()
    if name not in invalid:
        return markupsafe.Markup("")
    if name != invalid[0]:
        return markupsafe.Markup(' aria-invalid="true" aria-describedby="filter-error"')
    return markupsafe.Markup(' aria-invalid="true" aria-describedby="filter-error" autofocus')


def utc_time(value: object) -> str:
    """A stored ISO time as the pages print it: to the second, saying that it is UTC (the stores
    keep UTC, and the reviewer's own zone is not known). The JSON API keeps the ISO form."""
    if not isinstance(value, str):
        return ""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return value
    return f"{moment.isoformat(sep=' ', timespec='seconds')[:19]} UTC"


def create_admin_app(
    store_provider: StoreProvider,
    settings: AdminSettings,
    pseudonyms: Pseudonyms,
    *,
    erasures: RecentErasures | None = None,
    second_passes: SecondPasses | None = None,
    quota_scope: Callable[[str], str] | None = None,
    open_conversations: OpenConversations | None = None,
) -> web.Application:
    """The store is opened in the parent's cleanup context, so it is read lazily per request.
    `pseudonyms` are the parent's (it records refusals under them too): one key, one source.
    `erasures` are the ones the parent's turns check; `second_passes` run each user's
    deletion again once turns that were running elsewhere have ended (admin/erasures.py);
    the parent runs those still pending at its shutdown. `quota_scope` names the quota scope
    of a stored user id (the parent's controls count usage under it, holding the id; this
    package does not know their names): a user's data export holds its usage documents and
    their deletion deletes them. Without it, neither. `open_conversations`: what the parent's
    channels keep of conversations in memory (the built-in Direct Line's log of what it
    delivered); each pass of a deletion forgets what it deletes there too."""
    app = web.Application(middlewares=[_errors_and_headers, _other_sites, _sign_in])
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=show_hidden_controls,
    )
    templates.filters["text_lang"] = _part_lang
    templates.filters["utc_time"] = utc_time
    templates.filters["readable_json"] = _readable_json
    templates.globals["at_fault"] = _at_fault
    # What the list's export can hold, said beside its links (a CSV file has no place to say
    # that it stopped there).
    templates.globals["export_limits"] = {
        "max": EXPORT_MAX_CONVERSATIONS,
        "searched": EXPORT_SEARCH_MAX_CONVERSATIONS,
    }
    app[CONTEXT] = AdminContext(
        settings=settings,
        store_provider=store_provider,
        templates=templates,
        sessions=Sessions(settings.session_secret, settings.session_hours),
        pseudonyms=pseudonyms,
        flow_signer=Signer(settings.session_secret, "admin-oidc-flow"),
        result_signer=Signer(settings.session_secret, "admin-result"),
        return_signer=Signer(settings.session_secret, "admin-return"),
        # A sealed address works as long as a session could have made it.
        sealer=Sealer(settings.session_secret, "admin-address", int(settings.session_hours * 3600)),
        local=LocalSignIn() if settings.mode is AuthMode.LOCAL else None,
        recent_erasures=erasures or RecentErasures(),
        second_passes=second_passes,
        quota_scope=quota_scope,
        open_conversations=open_conversations,
    )
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    r = app.router
    r.add_get("/", list_page, name="list")
    r.add_post("/", list_search, name="list_search")
    r.add_get("/conversations/{id}", transcript_page, name="transcript")
    r.add_get(
        "/conversations/{id}/delete",
        delete_conversation_confirm_page,
        name="delete_conversation_confirm",
    )
    r.add_post("/conversations/{id}/delete", delete_conversation_page, name="delete_conversation")
    r.add_post("/reveal", reveal_page, name="reveal")
    r.add_get("/revealed", revealed_page, name="revealed")
    r.add_get("/users/delete", delete_confirm_page, name="delete_confirm")
    r.add_post("/users/delete", delete_page, name="delete")
    r.add_get("/users/deleted", deleted_page, name="deleted")
    r.add_post("/users/export", export_user_page, name="export_user")
    r.add_get("/audit", audit_page, name="audit")
    r.add_post("/audit", audit_search, name="audit_search")
    r.add_get("/login", login, name="login")
    r.add_get("/auth/callback", oidc_callback, name="callback")
    r.add_post("/logout", logout, name="logout")
    r.add_post("/language", set_language, name="language")
    r.add_get("/api/me", api_me)
    r.add_get("/api/conversations", api_list)
    r.add_get("/api/conversations/{id}", api_transcript)
    r.add_post("/api/conversations/{id}/delete", api_delete_conversation)
    r.add_get("/api/export/conversations", api_export_list)
    r.add_get("/api/export/conversations/{id}", api_export_conversation)
    r.add_post("/api/reveal", api_reveal)
    r.add_post("/api/users/delete", api_delete_user)
    r.add_post("/api/users/export", api_export_user)
    r.add_get("/api/audit", api_audit)
    r.add_get("/api/export/audit", api_export_audit)
    r.add_static("/static/", HERE / "static", name="static")
    return app


PUBLIC_ROUTES = {"login", "callback", "static", "language"}


async def _startup(app: web.Application) -> None:
    context = app[CONTEXT]
    settings = context.settings
    if settings.mode is AuthMode.OIDC:
        context.http = aiohttp.ClientSession()
        context.oidc = OidcClient(
            context.http,
            settings.oidc_metadata_url,
            settings.oidc_client_id,
            settings.oidc_client_secret,
            settings.oidc_tenant_id,
        )
    if context.local is not None:
        _write_local_link(context)
    else:
        startup_log.info("admin: sign-in through %s", settings.mode.value)
    if settings.pseudonymize and settings.pseudonym_key_ephemeral:
        startup_log.info(
            "admin: user pseudonyms change on restart (set ADMIN_PSEUDONYM_KEY to keep them)"
        )
    if context.pseudonyms.previous_keys:
        startup_log.info(
            "admin: pseudonyms of %d previous key(s) are read (ADMIN_PSEUDONYM_PREVIOUS_KEYS)",
            context.pseudonyms.previous_keys,
        )


def _write_local_link(context: AdminContext) -> None:
    """The one secret this app ever logs, on purpose (to stderr only: `LOCAL_LINK_LOGGER`): it
    is the local admin's way in, usable once and for LOCAL_LINK_TTL_SECONDS. The first is
    written at start-up, a fresh one when someone without a session asks (`_signin_page`)."""
    token = context.local.pending_token if context.local is not None else None
    if token is None:
        return
    base = context.settings.link_base_url.rstrip("/")
    minutes = LOCAL_LINK_TTL_SECONDS // 60
    link_log.info(
        "admin: one-time local sign-in link (valid once, for %d minutes): %s",
        minutes,
        f"{base}/admin/login?token={token}",
    )


async def _cleanup(app: web.Application) -> None:
    http = app[CONTEXT].http
    if http is not None:
        await http.close()


# --- middlewares


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/admin/api/")


def _secure_headers(response: web.StreamResponse, request: web.Request) -> None:
    if _reached_over_https(request):
        # Browsers then never try the admin pages over plain http (a downgrade on the way).
        response.headers["Strict-Transport-Security"] = HSTS
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on form
    # posts, and the CSRF check needs the real origin.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")


# A year, this host only: the organization's other hosts are not ours to pin.
HSTS = "max-age=31536000"


@web.middleware
async def _errors_and_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except AdminError as error:
        response = _problem(request, error)
    except BadRequest as error:
        response = _problem(request, AdminError(400, "bad_request", error.text))
    except UnknownPseudonym:
        response = _problem(request, UNKNOWN_PSEUDONYM)
    except StoreError:
        log.exception("admin: the store failed", extra={"route": _route(request)})
        response = _problem(
            request, AdminError(503, "store_unavailable", "error_store_unavailable")
        )
    except web.HTTPException as exc:
        response = _problem(request, _http_error(exc)) if exc.status >= 400 else exc
    except Exception as exc:
        # A bug, not a caller's mistake: still an answer with the security headers, never
        # aiohttp's bare 500. The log gets the type and where it was raised, not the
        # exception's text, which can quote what was sent (a user id, message text).
        log.error(
            "admin: unexpected error",
            extra={
                "route": _route(request),
                "error": type(exc).__name__,
                "trace": "".join(traceback.format_tb(exc.__traceback__)),
            },
        )
        response = _problem(request, AdminError(500, "internal_error", "error_internal"))
    _secure_headers(response, request)
    return response


def _http_error(exc: web.HTTPException) -> AdminError:
    """aiohttp's own error (an unknown address, a method a route does not take, a body too
    large): a page says the common ones in words of its own, whose English is the reason
    phrase the API has always sent; any other with its reason phrase."""
    key = f"error_http_{exc.status}"
    if all_texts().get(key, {}).get("en") != exc.reason:
        key = "error_http"
    return AdminError(exc.status, "http_error", key, reason=exc.reason)


def _problem(request: web.Request, error: AdminError) -> web.Response:
    if _is_api(request):
        return web.json_response(
            {"error": error.code, "message": error.message}, status=error.status
        )
    if error.status == 401:
        # No session (a first visit, or one that ended) is not a failed sign-in.
        return _signin_page(request, failed=error.code != "unauthenticated")
    return _render(request, "error.html", status=error.status, error=error)


def _signin_page(request: web.Request, failed: bool, target: str | None = None) -> web.Response:
    """The sign-in page, in every mode. In local mode, opening it without a session writes a
    fresh link to the log (at most one a minute), and `link` says so: the start-up link may
    have expired, been used, or scrolled out of reach.

    The sign-in returns to the page asked for (`target`, else this request's page): its buttons
    carry it (to our OIDC flow, which keeps it in its signed cookie; to App Service's login,
    which checks it itself); in local mode a signed cookie keeps it for the logged link."""
    context = request.app[CONTEXT]
    target = target or _requested_page(request)
    link = ""
    if context.local is not None:
        state = context.local.renew()
        if state is LinkState.WRITTEN:
            _write_local_link(context)
        link = state.value
    back = target or "/admin/"
    response = _render(
        request,
        "signin.html",
        status=401,
        language_next=back,
        failed=failed,
        link=link,
        link_minutes=LOCAL_LINK_TTL_SECONDS // 60,
        oidc_href="/admin/login?" + urlencode({"next": back}, safe="/"),
        appservice_href="/.auth/login/aad?"
        + urlencode({"post_login_redirect_uri": back}, safe="/"),
    )
    if context.local is not None and target is not None:
        response.set_cookie(
            RETURN_COOKIE,
            context.return_signer.sign({"next": target}, LOCAL_LINK_TTL_SECONDS),
            max_age=LOCAL_LINK_TTL_SECONDS,
            path=COOKIE_PATH,
            httponly=True,
            secure=_cookie_secure(request),
            # Lax: the logged link may be opened from another site (the portal's log stream).
            samesite="Lax",
        )
    return response


async def _principal(request: web.Request, context: AdminContext) -> Principal | None:
    settings = context.settings
    if settings.mode is AuthMode.APPSERVICE:
        # Only here: App Service Authentication sets this header and strips a client's copy.
        if "X-MS-CLIENT-PRINCIPAL" not in request.headers:
            return None
        return appservice_principal(request.headers, settings.session_secret)
    authorization = request.headers.get("Authorization", "")
    if settings.mode is AuthMode.OIDC and authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or context.oidc is None:
            raise AuthError("Authorization is not a bearer token")
        claims = await context.oidc.validate(token.strip())
        return _principal_from_claims(claims, via="bearer")
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    principal = context.sessions.read(cookie)
    if principal.session_id and principal.session_expires is not None:
        try:
            signed_out = await context.signouts.is_signed_out(
                context.store, principal.session_id, principal.session_expires
            )
        except StoreError as exc:
            # Fail closed: a session that may have been signed out is not let in.
            log.warning("admin: a session could not be checked", extra={"route": _route(request)})
            raise AdminError(503, "store_unavailable", "error_session_unchecked") from exc
        if signed_out:
            raise AuthError("signed out")
    return principal


def _principal_from_claims(claims: Mapping[str, Any], via: str) -> Principal:
    subject = str(claims.get("oid") or claims.get("sub") or "")
    name = str(claims.get("name") or claims.get("preferred_username") or subject)
    return Principal(id=subject, name=name, roles=roles_from(claims.get("roles")), via=via)


def _origin_allowed(request: web.Request) -> bool:
    """Whether a sent Origin is this site's: scheme, host and port, as browsers compare them
    (https://host is another site than http://host, even on the same port)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    sent = _origin_of(origin)
    if sent is None:
        return False
    # The scheme the browser used: a front end that ends TLS (App Service) forwards plain http
    # and says https in X-Forwarded-Proto. A cross-site page cannot add that header to a
    # browser's request (it is not a simple header, and the admin answers no CORS preflight).
    scheme = "https" if _reached_over_https(request) else "http"
    if sent == _origin_of(f"{scheme}://{request.host}"):
        return True
    # A front end may send another Host than the browser's: Application Gateway sends the
    # backend's host name (pickHostNameFromBackendAddress), so compare with PUBLIC_BASE_URL too.
    public = _origin_of(request.app[CONTEXT].settings.public_base_url)
    return public is not None and sent == public


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """Scheme, host and port, the parts a browser's Origin has; None for no web origin
    (`null`, a typo)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is not a number
        return None
    return parts.scheme, parts.hostname, port


async def _csrf_refusal(request: web.Request, principal: Principal) -> str | None:
    """Why a state change is refused (a text's key), or None. A browser sends `Origin` with
    every POST; a client without one (a script using the session) still needs the token."""
    if principal.csrf is None:
        # A bearer token is never attached by a browser on its own: nothing to forge.
        return None
    if not _origin_allowed(request):
        return "error_csrf_origin"
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    # Our tokens are ASCII; a header of bytes that are not UTF-8 arrives as lone surrogates,
    # which cannot be encoded for the comparison.
    if sent and sent.isascii() and hmac.compare_digest(sent.encode(), principal.csrf.encode()):
        return None
    return "error_csrf_token"


OTHER_SITE_REFUSED = AdminError(403, "cross_site", "error_cross_site")
SPECULATIVE_LOAD_REFUSED = AdminError(403, "speculative_load", "error_speculative_load")
# The pages that the page asking before opening a link from another site names
# (`open_what_<route>` in texts.yaml); any other address is `open_what_other`.
OPENED_PAGES = frozenset(
    {"list", "transcript", "delete_conversation_confirm", "delete_confirm", "audit"}
)


class _AskFirst(Exception):
    """A link followed from another site would be recorded in the audit log (or cannot be
    known to have a session): `_other_sites` asks before opening it."""


@web.middleware
async def _other_sites(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests another site's page made a browser send (Fetch Metadata: `Sec-Fetch-Site`).
    Opening a transcript, an export or a user's page is a GET that writes an audit record in
    the reviewer's name, and App Service Authentication's cookie, which this app does not set,
    goes with requests from anywhere: an <img> or <iframe> elsewhere could read in their name.
    So every route but the sign-in and static ones refuses such a request (403) unless it is a
    top-level GET navigation (a link in Teams or an e-mail; a frame, an image, a script's
    fetch or a form post is not). A link is followed, but whatever it would record in the audit
    log (`_audit`), and a page that cannot tell whether the browser is signed in (a SameSite
    session cookie stays behind), asks first instead: a page whose link, followed from here, is
    a same-origin navigation. Nothing is recorded or sent before that. `same-site` counts as
    another site: a sibling subdomain is another app (an intranet wiki, user content), and
    SameSite cookies, even Strict ones, go with its requests. Requests without the header
    (curl, scripts, older browsers) pass: every browser that could be led to forge one sends
    it."""
    if _from_this_site(request) or request.match_info.route.name in PUBLIC_ROUTES:
        return await handler(request)
    if not _top_level_navigation(request):
        log.info(
            "admin: a request from another site was refused",
            extra={"route": _route(request), "site": request.headers["Sec-Fetch-Site"]},
        )
        raise OTHER_SITE_REFUSED
    request[FROM_ANOTHER_SITE] = True
    try:
        return await handler(request)
    except _AskFirst:
        pass
    target = request.raw_path
    if not _openable(target):
        raise OTHER_SITE_REFUSED
    return _open_page(request, target, request.match_info.route.name or "")


def _openable(target: str) -> bool:
    """Whether the page asking first may link to `target`: it repeats the address asked for, so
    it must stay a path of this site."""
    return (
        target.startswith("/admin/") and "\\" not in target and all("!" <= c <= "~" for c in target)
    )


def _open_page(
    request: web.Request, target: str, route: str, language: Language | None = None
) -> web.Response:
    """The page asking before `target` (of `route`) opens. Its language switch shows it again,
    never the target itself: switching the language is not a choice to open it."""
    opened = route if route in OPENED_PAGES else "other"
    return _render(
        request,
        "open.html",
        target=target,
        opened=opened,
        language=language,
        language_next=target,
        language_open=opened,
    )


def _top_level_navigation(request: web.Request) -> bool:
    """A GET that loads a page in a tab or window, as following a link does; not a frame, an
    image or a script's request. Chromium 76 to 79 sent no Sec-Fetch-Dest."""
    return (
        request.method in ("GET", "HEAD")
        and request.headers.get("Sec-Fetch-Mode") == "navigate"
        and request.headers.get("Sec-Fetch-Dest", "document") == "document"
    )


def _speculative(request: web.Request) -> bool:
    """A load the browser makes ahead of time, in case the page is opened: a prefetch or
    prerender (an address-bar guess, a hovered link). Recording it would put a read nobody made
    in the audit log; refused (any status but 2xx), the browser loads the page when it is
    opened. Chromium's values all start with `prefetch`; `Purpose` is the older header."""
    purposes = (request.headers.get("Sec-Purpose", ""), request.headers.get("Purpose", ""))
    return any(p.strip().lower().startswith("prefetch") for p in purposes)


def _from_this_site(request: web.Request) -> bool:
    """Whether this request is not one another site's page made a browser send: same-origin,
    `none` (a typed address, a bookmark) or no Sec-Fetch-Site at all."""
    return request.headers.get("Sec-Fetch-Site", "").strip().lower() not in OTHER_SITES


@web.middleware
async def _sign_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    context = request.app[CONTEXT]
    route_name = request.match_info.route.name
    if route_name in PUBLIC_ROUTES:
        return await handler(request)
    try:
        principal = await _principal(request, context)
    except AuthError as exc:
        log.info("admin: sign-in refused", extra={"reason": str(exc), "route": _route(request)})
        principal = None
    if principal is None or not principal.id:
        if request.get(FROM_ANOTHER_SITE):
            # A SameSite session cookie stays behind on a link from another site: the browser
            # may well be signed in. Its own navigation from the page that asks will tell.
            raise _AskFirst
        raise AdminError(401, "unauthenticated", "error_unauthenticated")
    request[PRINCIPAL] = principal
    if not principal.has(Role.REVIEWER):
        await _record_denial(request, route_name or _route(request))
        raise AdminError(403, "forbidden", "error_no_role")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        refusal = await _csrf_refusal(request, principal)
        if refusal is not None:
            raise AdminError(403, "csrf", refusal)
    return await handler(request)


# What a handler that needs a role does, as a refused request is recorded (`denied`, with the
# action attempted); a handler not named here is recorded by its own name.
ATTEMPTED_ACTIONS = {
    "reveal_page": "reveal_user",
    "api_reveal": "reveal_user",
    "revealed_page": "reveal_user",
    "delete_confirm_page": "view_user_counts",
    "delete_page": "delete_user",
    "api_delete_user": "delete_user",
    "delete_conversation_confirm_page": "view_conversation_summary",
    "delete_conversation_page": "delete_conversation",
    "api_delete_conversation": "delete_conversation",
    "export_user_page": "export_user",
    "api_export_user": "export_user",
    "api_export_conversation": "export_conversation",
    "api_export_list": "export_list",
    "audit_page": "read_audit",
    "audit_search": "read_audit",
    "api_audit": "read_audit",
    "api_export_audit": "export_audit",
}


class Denials:
    """Which people had a request refused for their role in this UTC minute (in this process):
    the first is recorded (`_record_denial`), the rest of that minute are counted and the count
    goes into their next record, so a script refused in a loop cannot flood the audit log (as
    the bot's refusals are recorded once a minute, controls/audit.py)."""

    def __init__(self) -> None:
        self._minutes: dict[str, tuple[int, int]] = {}  # actor -> (minute, not recorded)
        self._untold: dict[str, int] = {}  # actor -> not recorded in minutes that are over

    def first_this_minute(self, actor: str, now: datetime) -> int | None:
        """None when `actor` was recorded this minute already (counted); otherwise how many of
        theirs went unrecorded before, and this one is to be recorded."""
        minute = int(now.timestamp() // 60)
        for other, (at, untold) in list(self._minutes.items()):
            if at < minute:  # over: only its count is kept, for that person's next record
                del self._minutes[other]
                if untold:
                    self._untold[other] = self._untold.get(other, 0) + untold
        if actor in self._minutes:
            at, untold = self._minutes[actor]
            self._minutes[actor] = (at, untold + 1)
            return None
        self._minutes[actor] = (minute, 0)
        return self._untold.pop(actor, 0)


async def _record_denial(
    request: web.Request, attempted: str, target: str = "", **detail: Any
) -> None:
    """A request refused for the role it needs is recorded (`denied`, with the action
    attempted and its target), once per person and minute (`Denials`). Nothing is recorded for
    what another site made the browser send or a load ahead of time: nobody asked for it. The
    refusal stands whether or not this can be written (logged)."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None or request.get(FROM_ANOTHER_SITE) or _speculative(request):
        return
    context = request.app[CONTEXT]
    untold = context.denials.first_this_minute(principal.id, datetime.now(UTC))
    if untold is None:
        return
    detail = {"attempted": attempted, "route": _route(request), "method": request.method, **detail}
    if untold:
        detail["earlierNotRecorded"] = untold
    record = _audit_record(principal, _client_ip(request), "denied", target, detail)
    try:
        await context.store.append_audit(record)
    except StoreError:
        log.exception(
            "admin: a denied request could not be recorded", extra={"attempted": attempted}
        )


async def _denied_target(request: web.Request) -> str:
    """What a refused request was about, as its audit record names it: the conversation in its
    path, or the person its query, form or JSON body names (`user`), by the pseudonym an action
    on them is recorded under (`_audited_as`). "" when it names neither, or a pseudonym no key
    of ours opens."""
    conversation_id = request.match_info.get("id")
    if conversation_id:
        return conversation_id
    try:
        reference: object = _params(request).get("user")
    except BadRequest:
        return ""
    if request.method == "POST":
        try:
            if request.content_type == "application/json":
                body = await request.json()
                reference = body.get("user") if isinstance(body, dict) else None
            else:
                reference = (await request.post()).get("user")
        except (ValueError, RecursionError, LookupError):  # LookupError: an unknown charset
            return ""  # the handler would have refused the body
    context: AdminContext = request.app[CONTEXT]
    try:
        named = text_value(reference, "user").strip()
        return _audited_as(context, _person_id(context, named)) if named else ""
    except (BadRequest, AdminError, UnknownPseudonym):  # no person: not text, or not one
        return ""


def requires(role: Role) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not principal_of(request).has(role):
                attempted = ATTEMPTED_ACTIONS.get(handler.__name__, handler.__name__)
                await _record_denial(request, attempted, await _denied_target(request))
                raise AdminError(403, "forbidden", "error_role_needed", role=role.value)
            return await handler(request)

        guarded.__name__ = handler.__name__
        guarded.__doc__ = handler.__doc__
        return guarded

    return wrap


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


# --- shared helpers


def _client_ip(request: web.Request) -> str:
    settings = request.app[CONTEXT].settings
    if settings.mode is AuthMode.APPSERVICE:
        # Each proxy appends the address it saw to X-Forwarded-For, after whatever the client
        # sent itself, so only entries counted from the right are trusted: App Service's front
        # end appends one (hops 1); behind Application Gateway the gateway appends the client
        # and the front end the gateway (hops 2).
        entries = request.headers.get("X-Forwarded-For", "").split(",")
        if len(entries) >= settings.trusted_proxy_hops:
            address = _address(entries[-settings.trusted_proxy_hops])
            if address is not None:
                return address
    return request.remote or ""


def _address(entry: str) -> str | None:
    """The IP address in one X-Forwarded-For entry: `203.0.113.7`, `203.0.113.7:51234`,
    `2001:db8::7` or `[2001:db8::7]:51234` (App Service writes a port); None for anything else."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def _audit_record(
    principal: Principal,
    client_ip: str,
    action: str,
    target: str,
    detail: dict[str, Any],
    subjects: list[str] | None = None,
) -> AuditRecord:
    at = datetime.now(UTC)
    return AuditRecord(
        id=f"{at:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}",
        day=f"{at:%Y-%m-%d}",
        at=at,
        actor=principal.id,
        action=action,
        target=target,
        subjects=subjects or [],
        detail={"actorName": principal.name, "via": principal.via, **detail},
        client_ip=client_ip,
    )


async def _audit(
    request: web.Request,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    subjects: list[str] | None = None,
) -> None:
    """Append the audit record first: no record, no data. A link followed from another site
    records and sends nothing: it asks first (`_other_sites`). `subjects`: the people the
    action concerns besides `target`, by pseudonym (`_subjects`)."""
    if request.get(FROM_ANOTHER_SITE):
        raise _AskFirst
    if _speculative(request):
        raise SPECULATIVE_LOAD_REFUSED
    principal = principal_of(request)
    record = _audit_record(principal, _client_ip(request), action, target, detail or {}, subjects)
    try:
        await request.app[CONTEXT].store.append_audit(record)
    except StoreError as exc:
        log.exception("admin: audit append failed", extra={"action": action})
        raise AdminError(503, "audit_unavailable", "error_audit_unavailable") from exc


def _render(
    request: web.Request,
    template: str,
    status: int = 200,
    *,
    language: Language | None = None,
    language_next: str | None = None,
    language_open: str = "",
    **values: Any,
) -> web.Response:
    """A page in the reader's language (`_language`, or `language`). Its language switch
    returns to `language_next`: by default the page itself when it is one read with GET, else
    the list (a page a form post answered cannot be read again without posting again)."""
    context = request.app[CONTEXT]
    principal: Principal | None = request.get(PRINCIPAL)
    language = language or _language(request)
    html = context.templates.get_template(template).render(
        principal=principal,
        csrf=principal.csrf if principal else "",
        address=functools.partial(_page_address, request),
        mode=context.settings.mode.value,
        pseudonymized=context.pseudonyms.enabled,
        lang=language,
        t=PageTexts(language),
        language_names=LANGUAGE_NAMES,
        language_next=language_next or _requested_page(request) or "/admin/",
        language_open=language_open,
        **values,
    )
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    response.headers["Content-Language"] = language
    return response


def _language(request: web.Request) -> Language:
    """The reader's language: the one they chose on a page (`LANGUAGE_COOKIE`), else the one
    their browser ranks highest of ours (Accept-Language), else English."""
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    for language in LANGUAGES:
        if chosen == language:
            return language
    return language_of(request.headers.get("Accept-Language", ""))


# What a page's address must not show: App Service HTTP logging and Application Gateway access
# logs keep paths and query strings, in Log Analytics, where the audit log does not reach. The
# words searched for (`q`: often words of users' messages), a person (`user`, or the audit log's
# `target`, typed as a user id), an administrator (the audit log's `actor`) and the reason of a
# reveal go in its sealed part (`SEALED_PARAM`) instead: the filter forms post them and are
# answered with such an address, and the pages' links carry them so. A sealed part opens only
# for the person it was made for: one read from those logs opens nothing for anyone else.
SEALED_FIELDS = frozenset({"q", "user", "reason", "target", "actor"})
SEALED_PARAM = "s"
_SEALED_FOR = "for"


def _params(request: web.Request) -> dict[str, str]:
    """A page's parameters: its query (each name's first value), with what its sealed part
    holds. A sealed part that is not ours, too old, or made for someone else is a 400 that says
    to filter again. A value whose bytes are not UTF-8 is a 400 naming it: the query as aiohttp
    reads it would search for, or filter by, U+FFFD in their place."""
    raw = parse_qsl(
        request.rel_url.raw_query_string, keep_blank_values=True, errors="surrogateescape"
    )
    for name, value in raw:
        # A name that is not UTF-8 either is named as the address writes it (`%FF`).
        text_value(value, quote(name, errors="surrogateescape"))
        text_value(name, quote(name, errors="surrogateescape"))
    query = request.query
    params = {name: query[name] for name in query if name != SEALED_PARAM}
    sealed = query.get(SEALED_PARAM)
    if sealed:
        try:
            opened = request.app[CONTEXT].sealer.unseal(sealed)
        except AuthError as exc:
            raise BadRequest("error_sealed_address") from exc
        if opened.get(_SEALED_FOR) != principal_of(request).id:
            raise BadRequest("error_sealed_address")
        params.update({name: value for name, value in opened.items() if name in SEALED_FIELDS})
    return params


def _sealed_query(request: web.Request, params: Mapping[str, str]) -> str:
    """The query string of an address with these parameters, `SEALED_FIELDS` sealed for the
    person the request is from."""
    plain = {name: value for name, value in params.items() if value and name not in SEALED_FIELDS}
    hidden = {name: value for name, value in params.items() if value and name in SEALED_FIELDS}
    if hidden:
        hidden[_SEALED_FOR] = principal_of(request).id
        plain[SEALED_PARAM] = request.app[CONTEXT].sealer.seal(hidden)
    return urlencode(plain)


def _page_address(request: web.Request, path: str, params: Mapping[str, str]) -> str:
    """`path` with these parameters, sealed where they must be (`address` in templates)."""
    query = _sealed_query(request, params)
    return f"{path}?{query}" if query else path


async def _filters(request: web.Request) -> Filters:
    """The list's filters (its pages, API and export). With pseudonyms on, a user filter that
    names a user id instead of a pseudonym answers with that person's pseudonym: it is a reveal.
    A Reviewer is refused; an Admin gives a reason, as for a reveal, and it is recorded as one
    (under the pseudonym, before anything is read). The filters then echo the pseudonym, so the
    next page and the export links carry it, never the id. A pseudonym made with a previous key
    is echoed as the current key's, as the pages show that person now."""
    context = request.app[CONTEXT]
    params = _params(request)
    filters = parse_filters(params, context.pseudonyms)
    named = filters.echo.get("user", "")
    if named.startswith(PSEUDONYM_PREFIX):
        current = context.pseudonyms.current(named)
        return dataclasses.replace(filters, echo={**filters.echo, "user": current})
    if not context.pseudonyms.enabled or not named:
        return filters
    if not principal_of(request).has(Role.ADMIN):
        target = _audited_as(context, named)
        await _record_denial(request, "reveal_user", target, by="user_filter")
        raise PSEUDONYM_REQUIRED
    [reason] = _texts(params, "reason")
    reason = _reason(reason, "error_reason_filter_by_id")
    pseudonym = _audited_as(context, named)
    await _audit(request, "reveal_user", pseudonym, {"reason": reason, "by": "user_filter"})
    return dataclasses.replace(filters, echo={**filters.echo, "user": pseudonym})


def _attachment(body: str, content_type: str, filename: str) -> web.Response:
    response = web.Response(text=body, content_type=content_type, charset="utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _export_format(request: web.Request) -> str:
    value = request.query.get("format", "json")
    if value not in ("json", "csv"):
        raise BadRequest("error_export_format")
    return value


async def _transcript(request: web.Request) -> tuple[dict[str, Any], list[str]]:
    """The messages of one conversation and its summary, and whom reading them concerns
    (`_subjects`). A summary that cannot be read does not
    hide the messages: `conversation` is null, as for a conversation without a summary, and
    `summaryUnreadable` says why (the summary is logged by the conversation's reference)."""
    context = request.app[CONTEXT]
    conversation_id = request.match_info["id"]
    summary, unreadable = await transcript_summary(context.store, conversation_id)
    messages = await context.store.conversation_messages(conversation_id)
    if summary is None and not unreadable and not messages:
        raise AdminError(404, "not_found", "error_no_such_conversation")
    transcript = {
        **_transcript_head(context, conversation_id, summary, unreadable),
        "messages": [message_view(m, context.pseudonyms) for m in messages],
    }
    return transcript, _subjects(context, summary, _authors_and_raters(messages))


def _subjects(
    context: AdminContext, summary: ConversationSummary | None, people: list[str]
) -> list[str]:
    """Whom reading, exporting or deleting a conversation concerns, as its audit record names
    them (`AuditRecord.subjects`): its owner and `people` (the user ids of the authors and
    raters of the messages read, `_authors_and_raters`), each as `_audited_as` names them, so
    the record is found by the person's pseudonym (their data export, the audit log's user
    filter), also after their data is deleted."""
    owners = [summary.user_id] if summary and not is_shared_owner(summary.user_id) else []
    known = [user_id for user_id in dict.fromkeys([*owners, *people]) if user_id]
    return list(dict.fromkeys(_audited_as(context, user_id) for user_id in known))


def _authors_and_raters(messages: Sequence[Message]) -> list[str]:
    """The user ids of who wrote these messages and who rated them: in a shared conversation
    anyone in it may rate any answer (`Feedback.user_id`), and the admin reads the rating, which
    is the rater's data. Feedback stored before raters were recorded names nobody ("")."""
    return [
        user_id
        for message in messages
        for user_id in (message.user_id, message.feedback.user_id if message.feedback else "")
    ]


def _transcript_head(
    context: AdminContext,
    conversation_id: str,
    summary: ConversationSummary | None,
    unreadable: bool,
) -> dict[str, Any]:
    """A transcript's fields before its messages (the page's JSON and its export alike)."""
    return {
        "conversation": summary_view(summary, context.pseudonyms) if summary else None,
        "summaryUnreadable": unreadable,
        "conversationId": conversation_id,
    }


async def _record_list_read(
    request: web.Request,
    action: str,
    filters: Filters,
    subjects: list[str] | None = None,
    **detail: Any,
) -> None:
    """A list shows each conversation's title, its first message's first line, and a text
    search reads message text, so both are audited as a transcript view is: each request, as
    `search_conversations` (the search, before it reads) or `list_conversations` (what was
    shown), with its filters as recorded (`_audited_filters`: the user by pseudonym) and
    whether it goes on from an earlier page; `subjects`: whose conversations it shows. Every
    page is recorded: the continuation token is the store's, so a later page is no proof that
    its first one was recorded."""
    audited = _audited_filters(request.app[CONTEXT], filters)
    recorded: dict[str, Any] = {"filters": audited, **detail}
    if filters.continuation:
        recorded["continued"] = True
    await _audit(request, action, _list_target(audited), recorded, subjects)


def _owners(context: AdminContext, summaries: Sequence[ConversationSummary]) -> list[str]:
    """Whose conversations a list or its export holds, as `_audited_as` names them: a shared
    conversation's owner is no person (its authors are not read here)."""
    owners = [s.user_id for s in summaries if s.user_id and not is_shared_owner(s.user_id)]
    return list(dict.fromkeys(_audited_as(context, owner) for owner in owners))


def _search_done(filters: Filters, scanned: int, max_conversations: int) -> dict[str, Any]:
    """How far a text search read, as the list and its export say it."""
    return {
        "text": filters.text,
        "scannedConversations": scanned,
        "maxConversations": max_conversations,
        "messagesPerConversation": SEARCH_MESSAGES_PER_CONVERSATION,
    }


async def _list(request: web.Request, page: bool = False) -> tuple[Filters, dict[str, Any]]:
    """One page of the list (`page`: for the HTML page), recorded (`_record_list_read`): a
    search before anything is read, as it reads message text; the list (a search's result too)
    once its summaries are read, naming whose they are, and before anything is shown (no
    record, no result)."""
    context = request.app[CONTEXT]
    filters = await _filters(request)
    detail: dict[str, Any] = {"page": True} if page else {}
    if filters.text is not None:
        await _record_list_read(request, "search_conversations", filters, **detail)
    result = await list_conversations(context.store, filters)
    # A search's result is a list too: the search record could not name whose conversations
    # it found, so this one does, and their data export finds it.
    subjects = _owners(context, result.items)
    await _record_list_read(request, LIST_READ, filters, subjects, **detail)
    body: dict[str, Any] = {
        "items": [
            summary_view(s, context.pseudonyms, filters.query.user_ids) for s in result.items
        ],
        "continuation": result.continuation,
    }
    if filters.text is not None:
        body["search"] = _search_done(filters, result.scanned, SEARCH_MAX_CONVERSATIONS)
    return filters, body


def _reason(reason: str, missing: str) -> str:
    """The reason given, else a 400 saying `missing` (a text's key: what it is a reason for)."""
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        raise BadRequest(missing, max=MAX_REASON_CHARS)
    return reason


def _as_typed(value: str) -> str:
    """A field of a rejected form as the page shows it again: as typed (the template escapes
    it), at most MAX_TYPED_CHARS of it. It goes into the form's fields only: never into a link
    or the language switch's return address, nor a log."""
    return value[:MAX_TYPED_CHARS]


def _typed_fields(source: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The named fields of a rejected filter form (its query) as typed (`_as_typed`)."""
    return {
        name: _as_typed(value)
        for name in names
        if isinstance(value := source.get(name), str) and value
    }


# The fields of the filter forms (list and audit log) that a rejected filter shows again.
_LIST_FORM = (*LIST_FILTERS, "reason")
_AUDIT_FORM = ("since", "until", "action", "actor", "target", "user", "reason")
# The fields an error of a filter form is about, where its text does not name one (`name`).
_FILTERS_AT_FAULT = {
    "error_reason_filter_by_id": ("reason",),
    "error_reason_audit_filter_by_id": ("reason",),
    "error_reason_audit_target_by_id": ("reason",),
    "error_search_too_long": ("q",),
    "error_category_name": ("category",),
    "error_since_after_until": ("since", "until"),
    "error_audit_action_name": ("action",),
    "error_audit_target_or_user": ("target", "user"),
}


def _rejected_filters(
    request: web.Request, error: Exception, form: tuple[str, ...]
) -> tuple[AdminError, tuple[str, ...], dict[str, str]]:
    """A filter form's rejection as its page shows it: the error, the fields at fault (the
    first is focused) and what was typed. Only the caller's mistakes are shown so: a wrong
    filter (BadRequest), a pseudonym no key opens, a Reviewer naming a user id. Anything else
    (the store, the audit log) is raised again, for the error page."""
    if isinstance(error, BadRequest):
        rejected = AdminError(400, "bad_request", error.text)
    elif isinstance(error, UnknownPseudonym):
        rejected = UNKNOWN_PSEUDONYM
    elif error is PSEUDONYM_REQUIRED:
        rejected = PSEUDONYM_REQUIRED
    else:
        raise error
    try:
        params = _params(request)
    except BadRequest:  # the sealed part is the fault: what was typed plainly comes back
        params = {name: request.query[name] for name in request.query if name != SEALED_PARAM}
    typed = _typed_fields(params, form)
    name = rejected.text.values.get("name")
    if isinstance(name, str):
        at_fault: tuple[str, ...] = (name,)
    elif rejected.status in (403, 404):
        # The person named: by `target` in the audit log when it names one, else by `user`.
        at_fault = ("target",) if typed.get("target", "").strip() else ("user",)
    else:
        at_fault = _FILTERS_AT_FAULT.get(rejected.text.key, ())
    return rejected, tuple(f for f in at_fault if f in form), typed


async def _reveal(request: web.Request, reference: str, reason: str) -> tuple[str, str]:
    """The user id behind a pseudonym, and the pseudonym as the current key makes it: the
    reveal is recorded under that one (a pseudonym of a previous key names the same id)."""
    context = request.app[CONTEXT]
    reason = _reason(reason, "error_reason_reveal")
    if not reference.startswith(PSEUDONYM_PREFIX):
        raise AdminError(404, "not_found", "error_no_such_pseudonym")
    # One that no key opens is refused as everywhere else (UnknownPseudonym), unrecorded.
    user_id = _person_id(context, reference)
    pseudonym = context.pseudonyms.pseudonym(user_id)
    await _audit(request, "reveal_user", pseudonym, {"reason": reason})
    return user_id, pseudonym


def _person_id(context: AdminContext, reference: str) -> str:
    """The stored user id a pseudonym (or, unpseudonymized, the id itself) names, for an action
    on a person: a reveal, their export, their deletion. The owner of a group chat's summary
    (`shared:<conversation>`) stands for no one: erasing it as a person would delete everyone's
    messages there without naming them; the conversation's own deletion and export do."""
    user_id = context.pseudonyms.user_id(reference)
    if is_shared_owner(user_id):
        raise NOT_A_PERSON
    return user_id


def _texts(source: Mapping[str, Any], *names: str) -> list[str]:
    """The named text fields of a form, JSON body or query, checked (`text_value`)."""
    return [text_value(source.get(name), name) for name in names]


def _audited_as(context: AdminContext, user_id: str) -> str:
    """The pseudonym an action on a person's data is recorded under: the audit log outlives the
    data and should not bring the user id back (an admin can reveal it with the same key). It
    is the pseudonym of their first stored id, so the records of one person agree whichever of
    their ids was named."""
    return context.pseudonyms.of_person(user_id)


def _audit_targets(context: AdminContext, user_id: str) -> list[str]:
    """How the audit log names one person: `_audited_as` (deletions, exports, reveals of their
    pseudonym as shown) and the pseudonym of each id they are stored under (a refusal names the
    id its turn had), each under the current key and every previous one (ADMIN_PSEUDONYM_
    PREVIOUS_KEYS): what was recorded before a key rotation is still about them."""
    return [
        pseudonym
        for stored_id in person_ids(user_id)
        for pseudonym in context.pseudonyms.every_pseudonym(stored_id)
    ]


def _usage_scopes(context: AdminContext, user_id: str) -> list[str]:
    """The quota scopes one person's usage is counted under (one for both of their ids, see
    controls.quotas.user_scope; each id's own where the app's scope tells them apart)."""
    scope = context.quota_scope
    if scope is None:
        return []
    return list(dict.fromkeys(scope(stored_id) for stored_id in person_ids(user_id)))


def _audited_filters(context: AdminContext, filters: Filters) -> dict[str, str]:
    """A list's filters as recorded: the user as `_audited_as` names them, not as typed (an id
    would stay in the audit log after the person's data is deleted)."""
    recorded = dict(filters.echo)
    if "user" in recorded:
        recorded["user"] = _audited_as(context, context.pseudonyms.user_id(recorded["user"]))
    return recorded


def _list_target(audited_filters: dict[str, str]) -> str:
    """What a search or a list export is recorded about: the person its filters name (as
    `_audited_filters` records them), so that the audit log's user filter and that person's
    data export find it; nobody in particular otherwise."""
    return audited_filters.get("user", "")


@dataclass(frozen=True)
class Deletion:
    counts: dict[str, int]
    # When the second pass deletes what a turn still running elsewhere stores after this
    # (admin/erasures.py); None: none will run (none is wired, or the app is stopping).
    second_pass_due: datetime | None


async def _delete_user(request: web.Request, reference: str, confirm: str, reason: str) -> Deletion:
    """Everything stored about one person, under each id their channels gave them. Confirmed by
    repeating the user, and with a reason, as deleting a conversation has one: the audit record
    is all that is left of it. The request is recorded with the reason (`_erase`)."""
    context = request.app[CONTEXT]
    reference = reference.strip()
    if not reference:
        raise BadRequest("error_user_to_delete")
    if confirm.strip() != reference:
        raise BadRequest("error_confirm_user")
    reason = _reason(reason, "error_reason_delete_user")
    user_id = _person_id(context, reference)
    stored_ids = person_ids(user_id)

    async def erase() -> dict[str, int]:
        if context.open_conversations is not None:
            # What this process delivered to their open chats, which it keeps for a reload.
            context.open_conversations.forget_users(stored_ids)
        counts: Counter[str] = Counter()
        for stored_id in stored_ids:
            counts.update(await context.store.delete_user(stored_id))
        # Their quota usage (it holds their id): counted as `usage` when there was any.
        usage = await context.store.delete_scopes(_usage_scopes(context, user_id))
        if usage:
            counts["usage"] += usage
        return dict(counts)

    async def late(before: datetime) -> dict[str, int]:
        # The built-in Direct Line's memory of their chats was cleared by the first pass; what it
        # holds now is what they said since, which stays (as in the store).
        # Their usage stays: after the erasure it counts their turns since (their quota).
        counts: Counter[str] = Counter()
        for stored_id in stored_ids:
            counts.update(await context.store.delete_late_writes_of_user(stored_id, before))
        return dict(counts)

    target = _audited_as(context, user_id)
    erasing = functools.partial(context.recent_erasures.record, user_ids=stored_ids)
    requested = {"reason": reason}
    return await _erase(request, "delete_user", target, requested, [], erase, erasing, late)


async def _erase(
    request: web.Request,
    action: str,
    target: str,
    requested: dict[str, Any],
    subjects: list[str],
    erase: Callable[[], Awaitable[dict[str, int]]],
    erasing: Callable[[], None],
    late: Callable[[datetime], Awaitable[dict[str, int]]],
) -> Deletion:
    """A deletion (`erase`, which says what it deleted) in two passes. `erasing` records it
    for this process's turns, which store nothing of it from then on (storage/erasures.py);
    what turns elsewhere that began before the first pass store after it, the second deletes
    (`late`, given when the first began: storage/late.py), and nothing the user or the
    conversation did after it; after a first pass that failed part-way, the second runs it
    whole again. Audited as the request (with `requested`), before anything is
    deleted (a 503 here deletes nothing, because a deletion can fail part-way and still have
    removed data), then the first pass's outcome (with when the second is due) and the
    second's, all under `target`, naming `subjects` (the people it concerns besides `target`,
    known before it began) and one `erasure` id."""
    erasure = {"erasure": uuid.uuid4().hex[:12]}
    detail = {"outcome": "requested", **requested, **erasure}
    await _audit(request, action, target, detail, subjects)
    # Before this process's turns are told: a message that arrives from now on is after it.
    began = datetime.now(UTC)
    erasing()
    first_pass: list[bool] = []  # [True] once it has deleted everything

    async def second_pass() -> tuple[dict[str, int], datetime | None]:
        if first_pass:
            return await late(began), began
        return await erase(), None

    due = _schedule_second_pass(request, action, target, subjects, second_pass, erasure)
    if due is not None:
        erasure["secondPassDue"] = _iso(due)
    try:
        deleted = await erase()
    except StoreError:
        failed = {"outcome": "failed_part_way", **erasure}
        await _audit_outcome(request, action, target, failed, subjects)
        raise
    first_pass.append(True)
    outcome = {"outcome": "deleted", "deleted": deleted, **erasure}
    await _audit_outcome(request, action, target, outcome, subjects)
    return Deletion(deleted, due)


def _schedule_second_pass(
    request: web.Request,
    action: str,
    target: str,
    subjects: list[str],
    erase: Callable[[], Awaitable[tuple[dict[str, int], datetime | None]]],
    erasure: dict[str, str],
) -> datetime | None:
    """The deletion's second pass (admin/erasures.py), audited as the admin who asked for it.
    Its record says `completed` with what it deleted (nothing, unless a turn that began before
    the first pass stored something after it) and `lateWritesBefore`, when the first pass
    began (what it deleted stems from turns before then; absent when the first pass had
    failed and this one ran it whole again), `cutShort` when the shutdown ran it early, or
    `second_pass_failed`."""
    context = request.app[CONTEXT]
    if context.second_passes is None:
        return None
    principal, client_ip = principal_of(request), _client_ip(request)

    async def second_pass(cut_short: bool) -> None:
        detail: dict[str, Any] = {**erasure, "cutShort": True} if cut_short else dict(erasure)
        try:
            deleted, before = await erase()
        except StoreError:
            log.exception("admin: a deletion's second pass failed", extra=erasure)
            detail |= {"outcome": "second_pass_failed"}
        else:
            detail |= {"outcome": "completed", "deleted": deleted}
            if before is not None:
                detail["lateWritesBefore"] = before.isoformat().replace("+00:00", "Z")
            if any(deleted.values()):
                # What a turn that began before the first pass stored after it, elsewhere.
                log.info(
                    "admin: a deletion's second pass deleted late writes of earlier turns",
                    extra={**erasure, **deleted},
                )
        record = _audit_record(principal, client_ip, action, target, detail, subjects)
        try:
            await context.store.append_audit(record)
        except StoreError:
            log.error(
                "admin: the outcome of an audited action could not be recorded",
                extra={"action": action, "actor": principal.id, "target": target, **detail},
            )

    return context.second_passes.schedule(second_pass)


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


async def _existing_conversation(
    request: web.Request, conversation_id: str
) -> tuple[ConversationSummary | None, bool]:
    """The summary of a conversation the store holds (None, and whether a stored one could not be
    read, as a transcript has it); a 404 when it holds neither a summary nor a message of it."""
    store = request.app[CONTEXT].store
    summary, unreadable = await transcript_summary(store, conversation_id)
    if summary is None and not unreadable:
        pages = store.conversation_message_pages(conversation_id, 1)
        async with contextlib.aclosing(pages):
            if not await anext(pages, []):
                raise AdminError(404, "not_found", "error_no_such_conversation")
    return summary, unreadable


async def _delete_conversation(
    request: web.Request, conversation_id: str, confirm: str, reason: str
) -> Deletion:
    """One conversation, whoever wrote in it (a Teams group chat or channel thread too): its
    messages, summary and dialog state (`UserDataStore.delete_conversation`). Confirmed by
    repeating its id, and with a reason, as a reveal or an export has one: the audit record is
    all that is left of it. Deleted and audited as a user is (`_erase`), the request with the
    reason, each record naming whom it concerns (`_subjects`: the owner, and who wrote or rated
    in it); a turn of the conversation still running stores nothing of it afterwards."""
    context = request.app[CONTEXT]
    if confirm.strip() != conversation_id:
        raise BadRequest("error_confirm_conversation")
    reason = _reason(reason, "error_reason_delete_conversation")
    summary, _ = await _existing_conversation(request, conversation_id)
    # Whom it concerns, read before anything is deleted (after, nothing is left to say it): in a
    # group chat or channel thread, everyone who wrote or rated in it.
    subjects = _subjects(context, summary, await _conversation_people(context, conversation_id))
    erasing = functools.partial(context.recent_erasures.record, conversation_ids=[conversation_id])

    async def erase() -> dict[str, int]:
        if context.open_conversations is not None:
            # What this process delivered to its open chat, which it keeps for a reload.
            context.open_conversations.forget_conversation(conversation_id)
        return await context.store.delete_conversation(conversation_id)

    async def late(before: datetime) -> dict[str, int]:
        # The first pass cleared the chat's memory; what it holds now came after, and stays.
        return await context.store.delete_late_writes_of_conversation(conversation_id, before)

    requested = {"reason": reason}
    return await _erase(
        request, "delete_conversation", conversation_id, requested, subjects, erase, erasing, late
    )


async def _conversation_people(context: AdminContext, conversation_id: str) -> list[str]:
    """The user ids of everyone who wrote or rated a message of one conversation
    (`_authors_and_raters`), read a page at a time (EXPORT_PAGE_SIZE), as an export reads it:
    a long conversation is not held whole. A message that cannot be read names nobody."""
    people: dict[str, None] = {}
    pages = context.store.conversation_message_pages(conversation_id, EXPORT_PAGE_SIZE)
    async with contextlib.aclosing(pages):
        async for page in pages:
            people.update(dict.fromkeys(_authors_and_raters(page)))
    return list(people)


async def _export_user(request: web.Request, reference: str, reason: str) -> web.StreamResponse:
    """Everything stored about one person, under each id their channels gave them, as one JSON
    download (a data subject's access request). It names the user and holds their own words, so
    it takes a reason, as a reveal does; the audit records name the pseudonym.

    Streamed: the store reads a page of documents at a time (EXPORT_PAGE_SIZE) and each page is
    written out before the next is read, so the export holds a page in memory, not the person's
    whole history (a process also serves every chat). The file is the same JSON as when it was
    built whole. It begins with `contents` (export.user_export_contents: what each section
    holds) and ends with `counts`, how many items each list holds, known only at the end.

    Audited twice, as a deletion is. No record, no export: the request (with the reason) is
    recorded before anything is read or sent, and a 503 if that fails. The counts are known only
    at the end, so the outcome is a second record: `exported` with the counts; `failed` if the
    store failed before the download started (then the answer is the usual 503, nothing sent);
    `failed_part_way` if it failed after (then the download is broken off, see `_Download.abort`,
    and the record says how many documents of each kind were sent); `interrupted` (with the same
    counts) if the client went away."""
    context = request.app[CONTEXT]
    reference = reference.strip()
    if not reference:
        raise BadRequest("error_user_to_export")
    reason = _reason(reason, "error_reason_export_user")
    user_id = _person_id(context, reference)
    stored_ids = person_ids(user_id)
    target = _audited_as(context, user_id)
    await _audit(request, "export_user", target, {"outcome": "requested", "reason": reason})
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    name = f"user-{uuid.uuid5(uuid.NAMESPACE_URL, target).hex[:12]}-{stamp}.json"
    download = _Download(request, name, "application/json")
    body = export.StreamedJson()
    sent: dict[str, int] = dict.fromkeys((*USER_DATA_KINDS, "usage", "audit"), 0)

    async def write() -> None:
        download.add(
            body.begin(
                {
                    "contents": export.user_export_contents(),
                    "user": target,
                    "exportedAt": datetime.now(UTC).isoformat(),
                    "storedIds": stored_ids,
                }
            )
        )
        for kind in USER_DATA_KINDS:
            download.add(body.open_list(kind))
            for stored_id in stored_ids:
                pages = context.store.user_documents(stored_id, kind, EXPORT_PAGE_SIZE)
                async with contextlib.aclosing(pages):
                    async for page in pages:
                        for document in page:
                            download.add(body.item(document))
                        await download.flush()
                        sent[kind] += len(page)
            download.add(body.close_list())
        # Their quota usage of the last days, as the store counts it.
        download.add(body.open_list("usage"))
        for document in await context.store.scope_documents(_usage_scopes(context, user_id)):
            download.add(body.item(document))
            sent["usage"] += 1
        download.add(body.close_list())
        # What the audit log records about them (this export's request too).
        download.add(body.open_list("audit"))
        records = context.store.audit_records_about(
            _audit_targets(context, user_id), EXPORT_PAGE_SIZE
        )
        async with contextlib.aclosing(records):
            async for found in records:
                for record in found:
                    download.add(body.item(export.audit_entry(record)))
                await download.flush()
                sent["audit"] += len(found)
        download.add(body.close_list())
        # Known only now: `contents` says to look for them here.
        download.add(body.field("counts", dict(sent)))
        download.add(body.end())
        await download.flush()

    if await _stream(request, download, write, "export_user", target, {}, sent):
        # Recorded before the last chunk goes out, so that once a client has the whole file,
        # the record of it is there to read.
        await _audit_outcome(
            request, "export_user", target, {"outcome": "exported", "exported": sent}
        )
        with contextlib.suppress(_ClientGone):  # it has every byte; only the end marker was lost
            await download.finish()
    return download.response


async def _stream(
    request: web.Request,
    download: _Download,
    write: Callable[[], Awaitable[None]],
    action: str,
    target: str,
    detail: dict[str, Any],
    sent: dict[str, int],
    subjects: Sequence[str] = (),
) -> bool:
    """Runs `write`, which adds to `download` and flushes it a page at a time, counting what it
    sent in `sent`. True when it was all written: the caller records that, if it does, and
    finishes the download. Otherwise this records how it ended (`action` on `target`, `detail`
    and an outcome, naming `subjects` as they are by then: whom the action's records named, as
    `write` may name more) and the response is as it is:
    - `interrupted` (with `sent`): the client went away;
    - `failed`: it failed before the download started; re-raised, so the error middleware
      answers as for any request (a 503 for the store), nothing sent;
    - `failed_part_way` (with `sent`): it failed after; the download is broken off (`abort`),
      so the client has a broken download, never a short file that looks whole."""
    try:
        await write()
    except (_ClientGone, asyncio.CancelledError) as exc:
        # The client went away: the next write fails, or (with aiohttp's handler_cancellation,
        # as in its test server) the handler is cancelled; a server that stops cancels it too.
        outcome = {**detail, "outcome": "interrupted", "sent": sent}
        await _audit_outcome(request, action, target, outcome, list(subjects))
        if isinstance(exc, asyncio.CancelledError):
            raise
        return False
    except Exception as exc:
        if not download.started:
            failed = {**detail, "outcome": "failed"}
            await _audit_outcome(request, action, target, failed, list(subjects))
            raise
        log.error(
            "admin: a download failed part-way and was broken off",
            extra={
                "action": action,
                "error": type(exc).__name__,
                "trace": "".join(traceback.format_tb(exc.__traceback__)),
                "target": target,
                "sent": sent,
            },
        )
        outcome = {**detail, "outcome": "failed_part_way", "sent": sent}
        await _audit_outcome(request, action, target, outcome, list(subjects))
        download.abort()
        return False
    return True


class _ClientGone(Exception):
    """The client closed the connection during a download."""


class _Download:
    """An attachment streamed to the client. What is added is held until `flush`, and the status
    and headers go out with the first flush: until then a failure can still be answered with an
    error (nothing was sent); after it, only by breaking the download off (`abort`)."""

    def __init__(self, request: web.Request, filename: str, content_type: str) -> None:
        self.request = request
        self.response = web.StreamResponse()
        self.response.content_type = content_type
        self.response.charset = "utf-8"
        self.response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        # The error middleware adds these to what a handler returns, but by then a streamed
        # response's headers are long sent.
        _secure_headers(self.response, request)
        self._pending: list[str] = []

    @property
    def started(self) -> bool:
        return self.response.prepared

    def add(self, text: str) -> None:
        self._pending.append(text)

    async def flush(self) -> None:
        """Sends what was added. A write waits while the client is slow to read (aiohttp drains
        its buffer past 64 kB), so a slow download does not pile pages up in memory."""
        if not self._pending:
            return
        try:
            if not self.response.prepared:
                await self.response.prepare(self.request)
            await self.response.write("".join(self._pending).encode())
        except ConnectionError as exc:  # aiohttp: the transport is closing
            raise _ClientGone from exc
        self._pending.clear()

    async def finish(self) -> None:
        """Sends what is left, then the end of the body."""
        await self.flush()
        try:
            await self.response.write_eof()
        except ConnectionError as exc:
            raise _ClientGone from exc

    def abort(self) -> None:
        """Ends a started download so that the client sees it fail, never a short file that looks
        whole: the body is sent chunked (HTTP/1.1, no Content-Length), and closing the connection
        before its last chunk is how HTTP says it is incomplete. What was written is still
        delivered first; a front end (App Service, Application Gateway) passes the break on."""
        transport = self.request.transport
        if transport is not None:
            transport.close()


async def _audit_outcome(
    request: web.Request,
    action: str,
    target: str,
    detail: dict[str, Any],
    subjects: list[str] | None = None,
) -> None:
    """The second record of a deletion or an export, naming the `subjects` its first did. The
    request is already on record, so a failure here is logged and does not hide the action's
    own result."""
    try:
        await _audit(request, action, target, detail, subjects)
    except AdminError:
        log.error(
            "admin: the outcome of an audited action could not be recorded",
            extra={"action": action, "actor": principal_of(request).id, "target": target, **detail},
        )


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _return_target(value: object) -> str | None:
    """`value` if it may be where a sign-in returns to, else None: a path of this origin under
    /admin/ (with its query), as a browser sends it. It comes from a request (its own path, a
    `next` parameter) and goes into a Location header, so everything that could make it another
    site's (`//host`, `/\\host`, `https:`), leave /admin/ (`..`, even encoded: browsers decode
    `%2e`), or split a header (control characters) is refused, encoded or not. Not the sign-in
    routes themselves (a loop), nor the API, which answers scripts with 401 and no redirect."""
    if not isinstance(value, str) or not value or len(value) > RETURN_MAX_CHARS:
        return None
    # What a browser sends is printable ASCII: no controls, spaces or raw non-ASCII. `#` never
    # reaches a server, and a backslash is a slash to a browser.
    if not all("!" <= c <= "~" for c in value) or "\\" in value or "#" in value:
        return None
    raw_path, _, query = value.partition("?")
    path = unquote(raw_path)
    if not raw_path.startswith("/admin/") or not path.startswith("/admin/"):
        return None
    if "//" in path or "\\" in path or {".", ".."} & set(path.split("/")):
        return None
    if _CONTROL.search(path) or _CONTROL.search(unquote(query)):
        return None
    if path.lower().startswith(_NOT_RETURN_TARGETS):
        return None
    return value


def _requested_page(request: web.Request) -> str | None:
    """The page this request asked for, if a sign-in should return to it: a GET of a page
    (never the API, a form post, or the sign-in routes)."""
    if request.method != "GET" or request.match_info.route.name not in RETURN_ROUTES:
        return None
    return _return_target(request.raw_path)


def _base_url(request: web.Request) -> str:
    base = request.app[CONTEXT].settings.public_base_url
    return base.rstrip("/") if base else f"{request.scheme}://{request.host}"


# The error codes of OAuth 2.0 and OpenID Connect (RFC 6749 4.1.2.1, OIDC Core 3.1.2.6) that an
# identity provider sends back to the callback; anyone can put anything else there.
def _provider_error(request: web.Request) -> str:
    """The callback's `error` for the log: a known code, else only that there was another."""
    error = request.query.get("error")
    return "none" if error is None else oauth_error_code(error)


def _reached_over_https(request: web.Request) -> bool:
    """TLS here, or a front end that ended it says so: the first value of X-Forwarded-Proto
    (App Service sets it)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def _cookie_secure(request: web.Request) -> bool:
    # Secure cookies need https; `make run` serves plain http on loopback, where a Secure
    # cookie would never come back. Behind a TLS-terminating front end PUBLIC_BASE_URL says so,
    # or the front end's X-Forwarded-Proto. A client that writes it over plain http only loses
    # its own cookie.
    base = request.app[CONTEXT].settings.public_base_url
    return _reached_over_https(request) or base.startswith("https://")


def _set_session(
    request: web.Request, response: web.StreamResponse, subject: str, name: str, roles: Any
) -> None:
    context = request.app[CONTEXT]
    response.set_cookie(
        SESSION_COOKIE,
        context.sessions.issue(subject, name, roles),
        max_age=int(context.settings.session_hours * 3600),
        path=COOKIE_PATH,
        httponly=True,
        secure=_cookie_secure(request),
        samesite="Strict",
    )


# --- sign-in


async def login(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    mode = context.settings.mode
    if mode is AuthMode.LOCAL:
        token = request.query.get("token", "")
        if not token:
            return _signin_page(request, failed=False)
        if context.local is None or not context.local.redeem(token):
            log.warning("admin: a local sign-in link was refused", extra={"ip": request.remote})
            return _signin_page(request, failed=True)
        # Whoever holds the logged link meant to open it, even from another site (the
        # portal's log stream).
        response = _continue_to(request, _local_return(request))
        _set_session(request, response, "local-admin", "Local admin", frozenset({Role.ADMIN}))
        if RETURN_COOKIE in request.cookies:
            response.del_cookie(RETURN_COOKIE, path=COOKIE_PATH)
        startup_log.info("admin: local admin signed in")
        return response
    if mode is AuthMode.OIDC and context.oidc is not None:
        try:
            flow = await context.oidc.start(f"{_base_url(request)}/admin/auth/callback")
        except AuthError as exc:
            raise AdminError(503, "idp_unavailable", "error_idp_unavailable") from exc
        response = _redirect(flow.redirect_to)
        response.set_cookie(
            FLOW_COOKIE,
            context.flow_signer.sign(
                {
                    "state": flow.state,
                    "nonce": flow.nonce,
                    "verifier": flow.verifier,
                    "next": _return_target(request.query.get("next")) or "/admin/",
                    # Begun on this site (its sign-in button, a typed address): the page it
                    # returns to opens (`_continue_to`). Begun by another site's page, it asks
                    # first (`_other_sites`): the identity provider may sign in silently.
                    "here": _from_this_site(request),
                },
                600,
            ),
            max_age=600,
            path=COOKIE_PATH,
            httponly=True,
            secure=_cookie_secure(request),
            # Lax: the identity provider's redirect back is a cross-site top-level navigation.
            samesite="Lax",
        )
        return response
    # App Service Authentication signs people in before the request reaches us.
    return _signin_page(request, failed=False, target=_return_target(request.query.get("next")))


def _continue_to(request: web.Request, target: str) -> web.Response:
    """Where a sign-in the person meant returns to. A redirect, unless this answer is to a
    request from another site, as the identity provider's redirect back is: a redirect from it
    would arrive from another site too, without the session cookie (SameSite=Strict) and asking
    first (`_other_sites`). So it is a page of this site that goes on at once (a meta refresh,
    no script, and a link), whose navigation is this site's own."""
    if _from_this_site(request):
        return _redirect(target)
    return _render(request, "continue.html", target=target)


def _local_return(request: web.Request) -> str:
    """Where the local link returns this browser to: the page it asked for without a session
    (`RETURN_COOKIE`), checked again, else the list."""
    with contextlib.suppress(AuthError):  # none, forged, mangled or expired: the list
        signed = request.app[CONTEXT].return_signer.unsign(request.cookies.get(RETURN_COOKIE, ""))
        return _return_target(signed.get("next")) or "/admin/"
    return "/admin/"


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    if context.oidc is None:
        raise AdminError(404, "not_found", "error_not_found")
    flow: dict[str, Any] = {}
    try:
        flow = context.flow_signer.unsign(request.cookies.get(FLOW_COOKIE, ""))
        state = request.query.get("state", "")
        if not state or not hmac.compare_digest(state.encode(), str(flow["state"]).encode()):
            raise AuthError("state mismatch")
        if "code" not in request.query:
            raise AuthError(f"identity provider error: {_provider_error(request)}")
        claims = await context.oidc.redeem(
            request.query["code"],
            f"{_base_url(request)}/admin/auth/callback",
            str(flow["verifier"]),
            str(flow["nonce"]),
        )
    except (AuthError, KeyError) as exc:
        log.info("admin: OpenID sign-in failed", extra={"reason": str(exc)})
        # Trying again still leads to the page first asked for.
        return _signin_page(request, failed=True, target=_return_target(flow.get("next")))
    principal = _principal_from_claims(claims, via="session")
    target = _return_target(flow.get("next")) or "/admin/"
    response = _continue_to(request, target) if flow.get("here") is True else _redirect(target)
    _set_session(request, response, principal.id, principal.name, principal.roles)
    response.del_cookie(FLOW_COOKIE, path=COOKIE_PATH)
    return response


async def set_language(request: web.Request) -> web.StreamResponse:
    """The pages' language switch (a form, as the pages run no script): remembers the language
    in `LANGUAGE_COOKIE`, which wins over Accept-Language, and shows the page it was on again
    (`next`, a page of this site read with GET). Public, as the sign-in page has the switch too:
    it reads and records nothing. A language is no credential, so the cookie is SameSite=Lax: a
    link followed from Teams or an e-mail (the page asking before it opens) and the identity
    provider's redirect back show in it too. Still refused when another site's page sends it."""
    if not _from_this_site(request) or not _origin_allowed(request):
        raise OTHER_SITE_REFUSED
    chosen, target, opened = _texts(await request.post(), "lang", "next", "open")
    language = next((known for known in LANGUAGES if known == chosen), None)
    if language is None:
        raise BadRequest("error_language")
    if opened:
        # The page asking before a link from another site opens: asked again, in the language
        # chosen. Going on to the target would open it without the reviewer choosing to.
        if not _openable(target):
            raise OTHER_SITE_REFUSED
        response = _open_page(request, target, opened, language)
    else:
        response = _redirect(_return_target(target) or "/admin/")
    response.set_cookie(
        LANGUAGE_COOKIE,
        language,
        max_age=LANGUAGE_COOKIE_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        secure=_cookie_secure(request),
        samesite="Lax",
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    principal = principal_of(request)
    if principal.session_id and principal.session_expires is not None:
        try:
            await context.signouts.record(
                context.store, principal.session_id, principal.session_expires
            )
        except StoreError as exc:
            # The cookie stays, so that signing out again works once the store is back.
            log.warning("admin: a sign-out could not be stored")
            raise AdminError(503, "sign_out_failed", "error_sign_out_failed") from exc
    response = _redirect("/admin/login")
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- pages


async def list_page(request: web.Request) -> web.StreamResponse:
    try:
        filters, body = await _list(request, page=True)
    except (BadRequest, UnknownPseudonym, AdminError) as exc:
        # The filters again as typed, the one at fault marked, and no list: nothing was found.
        error, invalid, typed = _rejected_filters(request, exc, _LIST_FORM)
        return _render(
            request,
            "list.html",
            status=error.status,
            # Its switch shows the list: the address holds what was typed (a reason).
            language_next="/admin/",
            items=[],
            search=None,
            filters=typed,
            categories=FLAG_CATEGORIES,
            next_link=None,
            export_query="",
            deleted=None,
            filtered=False,
            error=error.text,
            invalid=invalid,
        )
    deleted = None
    with contextlib.suppress(AuthError):  # forged, mangled or old: no message
        deleted = request.app[CONTEXT].result_signer.unsign(request.query.get(DELETED_PARAM, ""))
    echo = dict(filters.echo)
    next_link = (
        _page_address(request, "/admin/", {**echo, "continuation": body["continuation"]})
        if body["continuation"]
        else None
    )
    # Switching the language shows this page again as its links name it: by the filters as
    # echoed (a user id named in the filter, a reveal, is the pseudonym there), without the
    # deletion's result.
    here = {**echo, "continuation": filters.continuation} if filters.continuation else echo
    return _render(
        request,
        "list.html",
        language_next=_return_target(_page_address(request, "/admin/", here)) or "/admin/",
        items=body["items"],
        search=body.get("search"),
        filters=echo,
        categories=FLAG_CATEGORIES,
        next_link=next_link,
        export_query=_sealed_query(request, echo),
        deleted=deleted,
        filtered=any(name in echo for name in LIST_FILTERS),
        error=None,
        invalid=(),
    )


async def transcript_page(request: web.Request) -> web.StreamResponse:
    transcript, subjects = await _transcript(request)
    await _audit(request, "view_transcript", transcript["conversationId"], {"page": True}, subjects)
    return _render(request, "transcript.html", **transcript)


@requires(Role.ADMIN)
async def reveal_page(request: web.Request) -> web.StreamResponse:
    reference, reason, back = _texts(await request.post(), "user", "reason", "conversation")
    try:
        user_id, pseudonym = await _reveal(request, reference, reason)
    except BadRequest as exc:
        # The reason (checked first): the form again, with the reason as typed. Switching the
        # language leads back to the conversation: a page a post answered cannot be read again.
        return _render(
            request,
            "reveal.html",
            status=400,
            language_next=_return_target(f"/admin/conversations/{quote(back, safe='')}")
            if back
            else None,
            reference=reference,
            reason=_as_typed(reason),
            back=back,
            error=exc.text,
        )
    # Shown by the page this redirects to, so that reloading it does not reveal (and record)
    # again. Sealed, as the person it names must not be in an address (`SEALED_FIELDS`).
    result = {"reference": pseudonym, "userId": user_id, "conversation": back}
    return _redirect(_result_address(request, "/admin/revealed", _REVEAL_RESULT, result))


_REVEAL_RESULT = "reveal"


@requires(Role.ADMIN)
async def revealed_page(request: web.Request) -> web.StreamResponse:
    """A reveal's result, from the address its form's post redirected to (`_opened_result`).
    Only for an Admin still: it shows a user id, which one demoted since may no longer see."""
    result = _opened_result(request, _REVEAL_RESULT)
    if result is None:
        return _redirect("/admin/")
    return _render(
        request,
        "reveal.html",
        reference=result["reference"],
        user_id=result["userId"],
        back=result["conversation"],
        error=None,
    )


async def list_search(request: web.Request) -> web.StreamResponse:
    """The list's filter form, sent: answered with the list's address, what it must not show
    sealed (`SEALED_FIELDS`). Nothing is read or recorded here; the list's page does that."""
    form = await request.post()
    chosen = {name: value for name in _LIST_FORM if isinstance(value := form.get(name), str)}
    return _redirect(_page_address(request, "/admin/", chosen))


@requires(Role.ADMIN)
async def audit_search(request: web.Request) -> web.StreamResponse:
    """The audit log's filter form, sent: as `list_search`."""
    form = await request.post()
    chosen = {name: value for name in _AUDIT_FORM if isinstance(value := form.get(name), str)}
    return _redirect(_page_address(request, "/admin/audit", chosen))


@requires(Role.ADMIN)
async def delete_confirm_page(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    [reference] = _texts(_params(request), "user")
    reference = reference.strip()
    if not reference:
        raise BadRequest("error_user_to_delete")
    user_id = _person_id(context, reference)
    # The page (and the deletion it confirms) names them as the current key does.
    reference = context.pseudonyms.current(reference)
    # How much a named person has stored is a read of their data, recorded as a transcript view
    # is: first (no record, no count), under their pseudonym, as their deletion will be.
    target = _audited_as(context, user_id)
    await _audit(request, "view_user_counts", target, {"by": "delete_confirm"})
    # Counted as the deletion counts them (`conversations`): every summary the user owns under
    # each of their ids, including those that cannot be read, which the list leaves out; and
    # their messages in shared conversations (someone else's), which the deletion deletes too.
    total = unreadable = shared_messages = shared_conversations = 0
    for stored_id in person_ids(user_id):
        count = await context.store.count_user_conversations(stored_id)
        total += count.total
        unreadable += count.unreadable
        shared_messages += count.shared_messages
        shared_conversations += count.shared_conversations
    return _render(
        request,
        "delete_confirm.html",
        language_next=_return_target(
            _page_address(request, "/admin/users/delete", {"user": reference})
        ),
        reference=reference,
        conversations=total,
        unreadable=unreadable,
        shared_messages=shared_messages,
        shared_conversations=shared_conversations,
        error=None,
        typed={"reason": "", "confirm": ""},
        second_pass_minutes=_second_pass_minutes(request),
    )


@requires(Role.ADMIN)
async def delete_page(request: web.Request) -> web.StreamResponse:
    reference, confirm, reason = _texts(await request.post(), "user", "confirm", "reason")
    try:
        deletion = await _delete_user(request, reference, confirm, reason)
    except BadRequest as exc:
        # The confirmation is checked first: when it matches, the reason was at fault.
        stripped = reference.strip()
        invalid = "reason" if stripped and confirm.strip() == stripped else "confirm"
        return _render(
            request,
            "delete_confirm.html",
            status=400,
            language_next=_return_target(
                _page_address(request, "/admin/users/delete", {"user": reference})
            ),
            reference=reference,
            conversations=None,
            unreadable=0,
            error=exc.text,
            invalid=invalid,
            # What was typed comes back, the field at fault marked, so only it is typed again.
            typed={"reason": _as_typed(reason), "confirm": _as_typed(confirm)},
            second_pass_minutes=_second_pass_minutes(request),
        )
    # Shown by the page this redirects to, so that reloading it does not post the deletion
    # again. Sealed, as the person it names must not be in an address (`SEALED_FIELDS`).
    result = {
        "reference": request.app[CONTEXT].pseudonyms.current(reference),
        "counts": deletion.counts,
        "secondPassDue": _iso(deletion.second_pass_due) if deletion.second_pass_due else None,
    }
    return _redirect(_result_address(request, "/admin/users/deleted", _DELETION_RESULT, result))


_DELETION_RESULT = "deletion"


def _result_address(request: web.Request, path: str, kind: str, result: dict[str, Any]) -> str:
    """The address of the page (`path`) that shows the `result` of a form's post (`kind`),
    sealed for the admin who posted it (`_opened_result`)."""
    sealed = request.app[CONTEXT].sealer.seal(
        {kind: json.dumps(result), _SEALED_FOR: principal_of(request).id}
    )
    return f"{path}?" + urlencode({SEALED_PARAM: sealed})


def _opened_result(request: web.Request, kind: str) -> dict[str, Any] | None:
    """The result of a form's post (`kind`) that this page's address carries
    (`_result_address`); None for one not made by this app for this person, of another kind,
    or older than a session."""
    try:
        opened = request.app[CONTEXT].sealer.unseal(request.query.get(SEALED_PARAM, ""))
        if opened.get(_SEALED_FOR) != principal_of(request).id:
            raise AuthError("sealed for someone else")
        result = json.loads(opened[kind])
    except (AuthError, KeyError, ValueError):
        return None
    return result if isinstance(result, dict) else None


async def deleted_page(request: web.Request) -> web.StreamResponse:
    """A user's deletion's result, from the address its form's post redirected to: sealed
    for the admin who deleted (a pseudonym and counts; no role beyond a reviewer's is asked,
    so one demoted since still sees what they did). One not made by this app for this person
    (or older than a session) shows the list instead."""
    result = _opened_result(request, _DELETION_RESULT)
    if result is None:
        return _redirect("/admin/")
    due = result.get("secondPassDue")
    return _render(
        request,
        "deleted.html",
        reference=result["reference"],
        counts=result["counts"],
        second_pass_due=datetime.fromisoformat(due) if due else None,
        second_pass_minutes=_second_pass_minutes(request),
    )


def _second_pass_minutes(request: web.Request) -> int:
    passes = request.app[CONTEXT].second_passes
    return 0 if passes is None else max(1, round(passes.delay_seconds / 60))


@requires(Role.ADMIN)
async def delete_conversation_confirm_page(request: web.Request) -> web.StreamResponse:
    """The page shows the conversation's title (its first message's first line) and owner, a
    read of people's data: recorded as the user deletion page's count is
    (`view_conversation_summary`, `by: delete_confirm`), naming whom the conversation concerns
    (`_subjects`, read first, as its deletion reads them), before anything is shown (no record,
    no page)."""
    context = request.app[CONTEXT]
    conversation_id = request.match_info["id"]
    summary, unreadable = await _existing_conversation(request, conversation_id)
    people = await _conversation_people(context, conversation_id)
    subjects = _subjects(context, summary, people)
    detail = {"by": "delete_confirm"}
    await _audit(request, "view_conversation_summary", conversation_id, detail, subjects)
    return _render_conversation_confirm(request, conversation_id, summary, unreadable)


@requires(Role.ADMIN)
async def delete_conversation_page(request: web.Request) -> web.StreamResponse:
    conversation_id = request.match_info["id"]
    confirm, reason = _texts(await request.post(), "confirm", "reason")
    try:
        deletion = await _delete_conversation(request, conversation_id, confirm, reason)
    except BadRequest as exc:
        # Still a 404 for a conversation the store does not hold.
        await _existing_conversation(request, conversation_id)
        # The confirmation is checked first: when it matches, the reason was at fault.
        invalid = "confirm" if confirm.strip() != conversation_id else "reason"
        # What was typed comes back, the field at fault marked, so only it is typed again.
        typed = {"reason": _as_typed(reason), "confirm": _as_typed(confirm)}
        # Without the conversation's summary, as the user deletion form comes back without the
        # count: showing it again would be a read, and a rejected form records nothing.
        return _render_conversation_confirm(
            request, conversation_id, None, False, 400, exc.text, invalid, typed
        )
    result: dict[str, Any] = {"conversation": conversation_id, "counts": deletion.counts}
    if deletion.second_pass_due is not None:
        result["secondPassDue"] = _iso(deletion.second_pass_due)
    token = request.app[CONTEXT].result_signer.sign(result, DELETED_SECONDS)
    return _redirect("/admin/?" + urlencode({DELETED_PARAM: token}))


def _render_conversation_confirm(
    request: web.Request,
    conversation_id: str,
    summary: ConversationSummary | None,
    unreadable: bool,
    status: int = 200,
    error: Text | None = None,
    invalid: str = "",
    typed: Mapping[str, str] | None = None,
) -> web.Response:
    """The confirmation page; with `error`, the field at fault (`invalid`) says so, and the
    fields hold what was `typed`."""
    context = request.app[CONTEXT]
    return _render(
        request,
        "conversation_delete_confirm.html",
        status=status,
        language_next=_return_target(
            f"/admin/conversations/{quote(conversation_id, safe='')}/delete"
        ),
        conversationId=conversation_id,
        conversation=summary_view(summary, context.pseudonyms) if summary else None,
        summaryUnreadable=unreadable,
        error=error,
        invalid=invalid,
        typed=typed or {"reason": "", "confirm": ""},
        second_pass_minutes=_second_pass_minutes(request),
    )


@requires(Role.ADMIN)
async def export_user_page(request: web.Request) -> web.StreamResponse:
    reference, reason, back = _texts(await request.post(), "user", "reason", "conversation")
    if reference.strip():
        try:
            _reason(reason, "error_reason_export_user")
        except BadRequest as exc:
            # The form again, with the reason as typed (and the way back to the conversation
            # when it came from one): nothing was read or recorded.
            return _render(
                request,
                "user_export.html",
                status=400,
                language_next=_return_target(f"/admin/conversations/{quote(back, safe='')}")
                if back
                else None,
                user=reference,
                export_reason=_as_typed(reason),
                back=back,
                error=exc.text,
            )
    return await _export_user(request, reference, reason)


@requires(Role.ADMIN)
async def audit_page(request: web.Request) -> web.StreamResponse:
    try:
        filters, records, continuation = await _audit_records(request, page=True)
    except (BadRequest, UnknownPseudonym, AdminError) as exc:
        # The filters again as typed, the one at fault marked, and no records.
        error, invalid, typed = _rejected_filters(request, exc, _AUDIT_FORM)
        return _render(
            request,
            "audit.html",
            status=error.status,
            # Its switch shows the log: the address holds what was typed (a reason).
            language_next="/admin/audit",
            records=[],
            next_link=None,
            later=False,
            filters=typed,
            export_query="",
            error=error.text,
            invalid=invalid,
        )
    # The next page keeps the page size the admin chose, and the filters.
    kept = {"limit": request.query["limit"]} if request.query.get("limit") else {}
    kept |= filters.echo
    next_link = (
        _page_address(request, "/admin/audit", {**kept, "continuation": continuation})
        if continuation
        else None
    )
    # A later page (or one followed by more) with nothing on it held only records that cannot
    # be read: the store skips those, and "nothing recorded" would not be true.
    later = bool(request.query.get("continuation"))
    # Switching the language shows this page again as its links name it (as the list does): a
    # user named by id is the pseudonym there, so the switch neither repeats the reveal nor
    # puts the id back in the address; a reason is not carried.
    here = {**kept, "continuation": request.query["continuation"]} if later else kept
    return _render(
        request,
        "audit.html",
        language_next=_return_target(_page_address(request, "/admin/audit", here))
        or "/admin/audit",
        records=records,
        next_link=next_link,
        later=later,
        filters=filters.echo,
        export_query=_sealed_query(request, filters.echo),
        error=None,
        invalid=(),
    )


# The audit log's filters (page, API and export), as their links carry them.
AUDIT_FILTERS = ("action", "actor", "target", "user", "since", "until")
# The most records a page of the audit log (`limit`) holds.
MAX_AUDIT_LIMIT = 200
_ACTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Reads of the audit log itself, and views of the conversation list: listed only when asked
# for (`action=read_audit`, `action=list_conversations`), or each page would start with the
# reader's own reads and the list they came from.
AUDIT_READ = "read_audit"
LIST_READ = "list_conversations"


@dataclass(frozen=True)
class AuditFilters:
    query: AuditQuery
    # As given, a user named by id as their pseudonym (links and the read's own record).
    echo: dict[str, str]
    # What the read's own record names as its target: the conversation or person looked for.
    target: str
    # The filters as the read's own record holds them, where they differ from `echo`: a target
    # typed as an id that may be a person's, by its pseudonym (links keep what was typed, so
    # that the next page and the export look for the same records).
    recorded: dict[str, str] | None = None

    @property
    def as_recorded(self) -> dict[str, str]:
        return self.echo if self.recorded is None else self.recorded


async def _audit_filters(request: web.Request) -> AuditFilters:
    """The audit log's filters: `action`, `actor` (as the log shows it: an administrator's id,
    or `system`), `target` (a conversation id or anything a record names as its target; a
    pseudonym: every record about that person, `_audit_targets`, including those that name them
    among their `subjects`), `user` (the same for a person named by pseudonym, or by user id:
    then, as the list's user filter, a reveal with a `reason`, recorded before anything is
    read), `since` and `until` (UTC days or ISO date-times, as the list takes them)."""
    context = request.app[CONTEXT]
    params = _params(request)
    for name, value in params.items():
        text_value(value, name)
    echo = {k: params[k].strip() for k in AUDIT_FILTERS if params.get(k, "").strip()}
    action = echo.get("action")
    if action is not None and not _ACTION_NAME.fullmatch(action):
        raise BadRequest("error_audit_action_name")
    if "target" in echo and "user" in echo:
        raise BadRequest("error_audit_target_or_user")
    # Before the reveal below is recorded: a filter refused for its dates reads nothing.
    since, until = date_range(params)
    targets: list[str] | None = None
    named = echo.get("target") or echo.get("user", "")
    looked_for = named
    recorded: dict[str, str] | None = None
    if named.startswith(PSEUDONYM_PREFIX):
        # A person, under each of their ids and keys (UnknownPseudonym: a 404, unrecorded).
        targets = _audit_targets(context, context.pseudonyms.user_id(named))
        looked_for = context.pseudonyms.current(named)
        echo["target" if "target" in echo else "user"] = looked_for
    elif "user" in echo:
        if context.pseudonyms.enabled:
            [reason] = _texts(params, "reason")
            reason = _reason(reason, "error_reason_audit_filter_by_id")
            looked_for = _audited_as(context, named)
            await _audit(
                request, "reveal_user", looked_for, {"reason": reason, "by": "audit_filter"}
            )
        else:
            looked_for = _audited_as(context, named)
        targets = _audit_targets(context, named)
        echo["user"] = looked_for if context.pseudonyms.enabled else named
    elif named:
        targets = [named]
        if context.pseudonyms.enabled and not await _names_a_conversation(context, named):
            # Perhaps a person's id: what is recorded about a person is under their pseudonyms,
            # and finding it by the id would show which pseudonym is theirs. So it is the user
            # filter's reveal, with a reason, recorded before anything is read, and the read is
            # recorded under the pseudonym (the log must not keep an id their erasure takes
            # away everywhere else). Links keep what was typed.
            [reason] = _texts(params, "reason")
            reason = _reason(reason, "error_reason_audit_target_by_id")
            looked_for = _audited_as(context, named)
            await _audit(
                request, "reveal_user", looked_for, {"reason": reason, "by": "audit_filter"}
            )
            targets += _audit_targets(context, named)
            recorded = {**echo, "target": looked_for}
    query = AuditQuery(
        action=action,
        except_actions=[] if action else [AUDIT_READ, LIST_READ],
        actor=echo.get("actor"),
        targets=targets,
        since=since,
        until=until,
    )
    return AuditFilters(query, echo, looked_for, recorded)


async def _names_a_conversation(context: AdminContext, target: str) -> bool:
    """Whether an audit log target names a conversation: a stored one (or one whose summary
    cannot be read), or one the log names as a target as typed (a deleted one: a person is
    only ever named by pseudonym)."""
    summary, unreadable = await transcript_summary(context.store, target)
    if summary is not None or unreadable:
        return True
    named, _ = await context.store.list_audit(1, query=AuditQuery(targets=[target]))
    return bool(named)


async def _audit_records(
    request: web.Request, page: bool = False
) -> tuple[AuditFilters, list[dict[str, Any]], str | None]:
    """One page of the audit log. Reading it is recorded too (`read_audit`, with the filters,
    each request, before anything is read): the log names who was looked up in it."""
    limit = whole_number(request.query.get("limit"), 50)
    if limit is None:
        # "-1" or "2.5" is a number too: what is wanted is said, not only what was not.
        raise BadRequest("error_limit_not_a_number", max=MAX_AUDIT_LIMIT)
    if not 1 <= limit <= MAX_AUDIT_LIMIT:
        raise BadRequest("error_limit_range", max=MAX_AUDIT_LIMIT)
    filters = await _audit_filters(request)
    token = request.query.get("continuation") or None
    detail: dict[str, Any] = {"filters": filters.as_recorded}
    if token:
        detail["continued"] = True
    if page:
        detail["page"] = True
    await _audit(request, AUDIT_READ, filters.target, detail)
    try:
        records, continuation = await request.app[CONTEXT].store.list_audit(
            limit, token, filters.query
        )
    except ValueError as exc:
        # Only a token the caller sent can be blamed; anything else is the store's own failure.
        if token is None:
            raise
        raise BadRequest("error_continuation") from exc
    return filters, [r.to_doc() for r in records], continuation


# --- JSON API


async def api_me(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    return web.json_response(
        {
            "id": principal.id,
            "name": principal.name,
            "roles": sorted(r.value for r in principal.roles),
            "via": principal.via,
            "csrfToken": principal.csrf,
            "pseudonymized": request.app[CONTEXT].pseudonyms.enabled,
        }
    )


async def api_list(request: web.Request) -> web.StreamResponse:
    _, body = await _list(request)
    return web.json_response(body)


async def api_transcript(request: web.Request) -> web.StreamResponse:
    transcript, subjects = await _transcript(request)
    await _audit(request, "view_transcript", transcript["conversationId"], subjects=subjects)
    return web.json_response(transcript)


@requires(Role.ADMIN)
async def api_export_conversation(request: web.Request) -> web.StreamResponse:
    """One transcript as a JSON or CSV download: the transcript's JSON, or a row per message.
    Streamed as a user's data export is, the messages read and sent a page at a time
    (EXPORT_PAGE_SIZE), the same file as when it was built whole. Audited before the first byte
    (the format; no count), naming the owner and the authors and raters of the first page
    (`_subjects`); a later page whose authors or raters include people not named yet is
    recorded before it is sent, as `further_subjects` naming them (and how many messages were
    sent before it), so the audit log filtered by any of them lists the export. No record, no
    data: if that record cannot be written, the download is broken off (`_stream`). A download
    that does not end well adds a record of how it ended (`_stream`), naming everyone named
    before it."""
    context = request.app[CONTEXT]
    fmt = _export_format(request)
    conversation_id = request.match_info["id"]
    summary, unreadable = await transcript_summary(context.store, conversation_id)
    pages = context.store.conversation_message_pages(conversation_id, EXPORT_PAGE_SIZE)
    async with contextlib.aclosing(pages):
        # The first page tells a conversation without messages from none at all, before
        # anything is recorded or sent.
        first: list[Message] = await anext(pages, [])
        if summary is None and not unreadable and not first:
            raise AdminError(404, "not_found", "error_no_such_conversation")
        detail: dict[str, Any] = {"format": fmt}
        # Whom it concerns: the owner, and who wrote or rated the messages of its first page; a
        # shared conversation's later authors and raters are named as their pages come (`write`).
        subjects = _subjects(context, summary, _authors_and_raters(first))
        await _audit(request, "export_conversation", conversation_id, detail, subjects)
        # Everyone named so far: a download that ends early (`_stream`) names them again.
        named = list(subjects)
        name = f"conversation-{uuid.uuid5(uuid.NAMESPACE_URL, conversation_id).hex[:12]}.{fmt}"
        content_type = "text/csv" if fmt == "csv" else "application/json"
        download = _Download(request, name, content_type)
        body = export.StreamedJson()
        sent = {"messages": 0}

        async def write() -> None:
            if fmt == "csv":
                download.add(export.csv_header(export.MESSAGE_COLUMNS))
            else:
                download.add(
                    body.begin(_transcript_head(context, conversation_id, summary, unreadable))
                )
                download.add(body.open_list("messages"))
            page = first
            while page:
                further = [
                    subject
                    for subject in _subjects(context, None, _authors_and_raters(page))
                    if subject not in named
                ]
                if further:
                    # No record, no data: recorded before the page goes out; a failure here
                    # breaks the download off (`_stream`).
                    more = {**detail, "outcome": "further_subjects", "sent": dict(sent)}
                    await _audit(request, "export_conversation", conversation_id, more, further)
                    named.extend(further)
                views = [message_view(m, context.pseudonyms) for m in page]
                if fmt == "csv":
                    rows = [export.message_row(conversation_id, view) for view in views]
                    download.add(export.csv_rows(export.MESSAGE_COLUMNS, rows))
                else:
                    for view in views:
                        download.add(body.item(view))
                await download.flush()
                sent["messages"] += len(page)
                page = await anext(pages, [])
            if fmt != "csv":
                download.add(body.close_list())
                download.add(body.end())
            await download.flush()

        if await _stream(
            request, download, write, "export_conversation", conversation_id, detail, sent, named
        ):
            with contextlib.suppress(_ClientGone):  # it has every byte but the end marker
                await download.finish()
    return download.response


@requires(Role.ADMIN)
async def api_export_list(request: web.Request) -> web.StreamResponse:
    """The filtered list as a download, up to EXPORT_MAX_CONVERSATIONS. With a text search it
    reads message text, so the search is recorded first, as a page's is (`search_conversations`,
    no record, no export); the export itself is recorded with what it holds, naming whose
    conversations those are (`_owners`), before anything is sent."""
    context = request.app[CONTEXT]
    fmt = _export_format(request)
    filters = await _filters(request)
    if filters.text is not None:
        await _record_list_read(request, "search_conversations", filters, export=fmt)
    exported = await conversations_to_export(context.store, filters, EXPORT_MAX_CONVERSATIONS)
    items = [summary_view(s, context.pseudonyms, filters.query.user_ids) for s in exported.items]
    audited = _audited_filters(context, filters)
    await _audit(
        request,
        "export_list",
        _list_target(audited),
        {
            "format": fmt,
            "filters": audited,
            "count": len(items),
            "complete": exported.complete,
        },
        _owners(context, exported.items),
    )
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    if fmt == "csv":
        response = _attachment(
            export.to_csv(export.CONVERSATION_COLUMNS, items),
            "text/csv",
            f"conversations-{stamp}.csv",
        )
    else:
        body: dict[str, Any] = {
            "filters": filters.echo,
            "limit": EXPORT_MAX_CONVERSATIONS,
            "complete": exported.complete,
            "continuation": exported.continuation,
            "items": items,
        }
        if filters.text is not None:
            body["search"] = _search_done(
                filters, exported.scanned, EXPORT_SEARCH_MAX_CONVERSATIONS
            )
        response = _attachment(
            export.to_json(body), "application/json", f"conversations-{stamp}.json"
        )
    # A CSV file has no place to say it: whether more matched, and where to go on from.
    response.headers["X-Export-Complete"] = "true" if exported.complete else "false"
    if exported.continuation:
        response.headers["X-Export-Continuation"] = exported.continuation
    return response


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    # RecursionError: JSON nested too deeply; LookupError: a charset no codec has.
    except (ValueError, RecursionError, LookupError) as exc:
        raise BadRequest("error_body_not_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("error_body_not_an_object")
    return body


@requires(Role.ADMIN)
async def api_reveal(request: web.Request) -> web.StreamResponse:
    reference, reason = _texts(await _json_body(request), "user", "reason")
    user_id, pseudonym = await _reveal(request, reference, reason)
    return web.json_response({"user": pseudonym, "userId": user_id})


@requires(Role.ADMIN)
async def api_delete_user(request: web.Request) -> web.StreamResponse:
    deletion = await _delete_user(
        request, *_texts(await _json_body(request), "user", "confirm", "reason")
    )
    body: dict[str, Any] = {"deleted": deletion.counts}
    if deletion.second_pass_due is not None:
        # Not complete yet: a turn still running elsewhere may store its answer until then.
        body["secondPassDue"] = _iso(deletion.second_pass_due)
    return web.json_response(body)


@requires(Role.ADMIN)
async def api_delete_conversation(request: web.Request) -> web.StreamResponse:
    conversation_id = request.match_info["id"]
    confirm, reason = _texts(await _json_body(request), "confirm", "reason")
    deletion = await _delete_conversation(request, conversation_id, confirm, reason)
    body: dict[str, Any] = {"conversation": conversation_id, "deleted": deletion.counts}
    if deletion.second_pass_due is not None:
        # Not complete yet: a turn still running elsewhere may store its answer until then.
        body["secondPassDue"] = _iso(deletion.second_pass_due)
    return web.json_response(body)


@requires(Role.ADMIN)
async def api_export_user(request: web.Request) -> web.StreamResponse:
    return await _export_user(request, *_texts(await _json_body(request), "user", "reason"))


@requires(Role.ADMIN)
async def api_audit(request: web.Request) -> web.StreamResponse:
    _, records, continuation = await _audit_records(request)
    return web.json_response({"items": records, "continuation": continuation})


AUDIT_EXPORT_FORMATS = {
    "json": ("application/json", "json"),
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv", "csv"),
}


@requires(Role.ADMIN)
async def api_export_audit(request: web.Request) -> web.StreamResponse:
    """The filtered audit log as a download, every record that matches (no cap): a JSON array,
    JSON lines or CSV (`export.AUDIT_COLUMNS`, as the other CSV exports: a byte order mark,
    formula cells neutralized). Streamed a page at a time (EXPORT_PAGE_SIZE) and recorded as
    a transcript export is (`export_audit`, with the filters, before the first byte; a download
    that does not end well adds a second record)."""
    fmt = request.query.get("format", "json")
    if fmt not in AUDIT_EXPORT_FORMATS:
        raise BadRequest("error_audit_export_format")
    filters = await _audit_filters(request)
    detail: dict[str, Any] = {"format": fmt, "filters": filters.as_recorded}
    await _audit(request, "export_audit", filters.target, detail)
    content_type, extension = AUDIT_EXPORT_FORMATS[fmt]
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    download = _Download(request, f"audit-{stamp}.{extension}", content_type)
    store = request.app[CONTEXT].store
    sent = {"records": 0}

    async def write() -> None:
        if fmt == "csv":
            download.add(export.csv_header(export.AUDIT_COLUMNS))
        elif fmt == "json":
            download.add("[")
        token: str | None = None
        while True:
            records, token = await store.list_audit(EXPORT_PAGE_SIZE, token, filters.query)
            docs = [record.to_doc() for record in records]
            if fmt == "csv":
                download.add(export.csv_rows(export.AUDIT_COLUMNS, map(export.audit_row, docs)))
            else:
                for doc in docs:
                    text = json.dumps(doc, ensure_ascii=False)
                    if fmt == "jsonl":
                        download.add(text + "\n")
                    else:
                        download.add(("\n" if not sent["records"] else ",\n") + text)
                    sent["records"] += 1
            if fmt == "csv":
                sent["records"] += len(docs)
            await download.flush()
            if token is None:
                break
        if fmt == "json":
            download.add("\n]\n")
        await download.flush()

    if await _stream(request, download, write, "export_audit", filters.target, detail, sent):
        with contextlib.suppress(_ClientGone):  # it has every byte but the end marker
            await download.finish()
    return download.response
