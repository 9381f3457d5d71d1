"""Outbound calls to a channel's connector service (replies, updates), on one shared session.

botbuilder's ConnectorClient is built per turn and sends through `requests` in a thread pool on a
new TCP connection each time; this client keeps one aiohttp session with keep-alive for every
serviceUrl, and one cached outbound token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import re
import time
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp

from config import BotAppType, Settings

log = logging.getLogger(__name__)

BOTFRAMEWORK_SCOPE = "https://api.botframework.com/.default"
_TOKEN_REFRESH_MARGIN_SECONDS = 300
# A message the channel refused for now is sent again, backing off exponentially with jitter and
# never sooner than its Retry-After, as Microsoft asks of Teams bots (which also names 412, 502
# and 504). A 502/504 may hide a message that was taken; a rare second copy beats a lost answer.
# The waits stay within a budget that fits the time a turn has left after its model deadline
# (TURN_DEADLINE_SECONDS - MODEL_DEADLINE_SECONDS: 30 s by default); a channel that asks for
# longer gets no early retry, which it would refuse again.
# A message whose connection failed before it went out in full (refused, reset) is sent once
# more within the same budget: the channel cannot have taken it. One that went out and then
# timed out or lost its connection is never sent again: the Bot Connector API has no
# idempotency key, so a second POST of a message the channel took shows it twice.
_SEND_ATTEMPTS = 5
_RETRYABLE_SEND_STATUS = frozenset({412, 429, 502, 503, 504})
# Of those, the answers that may come for a message the channel took all the same (a gateway
# between, or a precondition checked after the write); 429 and 503 refuse before taking it.
_MAYBE_TAKEN_STATUS = frozenset({412, 502, 504})
_SEND_BACKOFF_SECONDS = 0.5
_SEND_RETRY_BUDGET_SECONDS = 20.0
# How long one request to the connector may take before its answer is given up.
REPLY_TIMEOUT_SECONDS = 15.0
# Where the adapter puts the ConnectorClient in a turn's `turn_state` (as botbuilder's own
# adapters put theirs), for the reply channels' check before the model is called.
CONNECTOR_KEY = "bot.connector.ConnectorClient"
# The identity provider's answers that refuse the bot's credentials: OAuth 2.0 (RFC 6749 5.2)
# says 400 or 401 (Entra ID: invalid_client for a wrong or expired secret, unauthorized_client
# for an unknown app id, invalid_request for an unknown tenant). A 429 or 5xx may pass.
_REFUSING_STATUS = frozenset({400, 401, 403})
# How often, at most, a refused outbound token is logged again (with how many refusals since).
REFUSAL_LOG_SECONDS = 60.0


class ConnectorError(Exception):
    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        # Set by `send` on the refusal of a message sent again after an answer that may hide
        # that the channel took it (502, 504, 412): that status. The channel may refuse the
        # copy because it has the message (Teams: a stream's final, once the stream ended).
        self.resent_after: int | None = None


class OutboundTokenRefused(ConnectorError):
    """The identity provider refused the bot's own credentials for its outbound token
    (MicrosoftAppId / MicrosoftAppPassword, or the managed identity): no reply can reach any
    user until the configuration is fixed."""

    def __init__(self, status: int | None) -> None:
        super().__init__(
            "the bot's outbound token was refused: check MicrosoftAppId and its credential",
            status,
        )


class ConnectorUnreachable(ConnectorError):
    """The request never went out in full: the connection was refused, reset or timed out
    before that, so the channel cannot have taken it. `resendable`: a refused or reset
    connection, which a second try may find working (not a timeout, which has used the time
    up, nor a TLS failure, which would fail again)."""

    def __init__(self, message: str, *, resendable: bool) -> None:
        super().__init__(message)
        self.resendable = resendable


class ReplyUnconfirmed(ConnectorError):
    """The request went out in full, but the channel's answer never came: it timed out
    (`cause` "timeout") or the connection dropped after it was sent ("connection_dropped"),
    `elapsed_seconds` after the request started. The channel has most likely taken it."""

    def __init__(self, message: str, *, cause: str, elapsed_seconds: float) -> None:
        super().__init__(message)
        self.cause = cause
        self.elapsed_seconds = elapsed_seconds


class TokenSource(Protocol):
    async def token(self) -> str | None: ...

    @property
    def refused(self) -> bool:
        """Whether the latest token request was refused (OutboundTokenRefused)."""
        ...

    async def close(self) -> None: ...


class NoToken:
    """Anonymous mode: replies carry no token (the Emulator and the built-in Direct Line)."""

    refused = False

    async def token(self) -> str | None:
        return None

    async def close(self) -> None:
        return None


class ClientSecretToken:
    """OAuth2 client credentials for the bot's app registration, cached until near expiry."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        tenant = (
            "botframework.com"
            if settings.microsoft_app_type is BotAppType.MULTI_TENANT
            else settings.microsoft_app_tenant_id
        )
        self._url = f"{settings.bot_login_authority.rstrip('/')}/{tenant}/oauth2/v2.0/token"
        self._session = session
        self._client_id = settings.microsoft_app_id
        self._secret = settings.microsoft_app_password
        self._cached: tuple[str, float] | None = None
        self._lock = asyncio.Lock()
        hint = (
            "check MicrosoftAppId and MicrosoftAppPassword: a client secret of the app "
            "registration that is wrong, expired or deleted (rotated in Entra ID but not here), "
            "or an app id that is not the registration's"
        )
        if settings.microsoft_app_type is not BotAppType.MULTI_TENANT:
            hint += ", or a MicrosoftAppTenantId that is not its tenant"
        self._refusals = TokenRefusalLog("MicrosoftAppPassword", hint, self._client_id)

    @property
    def refused(self) -> bool:
        return self._refusals.refused_now

    async def token(self) -> str | None:
        cached = self._cached
        if cached and cached[1] - _TOKEN_REFRESH_MARGIN_SECONDS > time.time():
            return cached[0]
        async with self._lock:
            cached = self._cached
            if cached and cached[1] - _TOKEN_REFRESH_MARGIN_SECONDS > time.time():
                return cached[0]
            form = {
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._secret.get_secret_value(),
                "scope": BOTFRAMEWORK_SCOPE,
            }
            try:
                async with self._session.post(
                    self._url, data=form, timeout=aiohttp.ClientTimeout(total=15)
                ) as response:
                    if response.status in _REFUSING_STATUS:
                        error, codes = idp_error(await _json_or_none(response))
                        self._refusals.refused(response.status, error, codes)
                        raise OutboundTokenRefused(response.status)
                    if response.status != 200:
                        raise ConnectorError("token request refused", response.status)
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise ConnectorError("token endpoint unreachable") from exc
            # A 200 without a usable token (a proxy's page, a changed format) is a refusal too.
            try:
                token = str(body["access_token"])
                expires_at = time.time() + float(body.get("expires_in", 3600))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ConnectorError("token endpoint answered without a token") from exc
            self._cached = (token, expires_at)
            self._refusals.accepted()
            return token

    async def close(self) -> None:
        self._refusals.close()


class ManagedIdentityToken:
    """UserAssignedMSI bots: the managed identity is the bot's credential."""

    def __init__(self, client_id: str) -> None:
        from azure.identity.aio import ManagedIdentityCredential

        self._credential = ManagedIdentityCredential(client_id=client_id)
        self._refusals = TokenRefusalLog(
            "managed identity",
            "check MicrosoftAppId: the client id of a user-assigned managed identity that is "
            "assigned to this app, and that the bot's Azure Bot resource names",
            client_id,
        )

    @property
    def refused(self) -> bool:
        return self._refusals.refused_now

    async def token(self) -> str | None:
        from azure.core.exceptions import ClientAuthenticationError

        # azure-identity caches the token and refreshes it before expiry.
        try:
            access = await self._credential.get_token(BOTFRAMEWORK_SCOPE)
        except ClientAuthenticationError as exc:
            # The identity endpoint answered, and refused (no such identity here); one that
            # could not be reached, or failed, raises too, with no such status.
            if exc.status_code not in _REFUSING_STATUS:
                raise
            error, codes = idp_error(_azure_error_body(exc))
            self._refusals.refused(exc.status_code, error, codes)
            raise OutboundTokenRefused(exc.status_code) from None
        self._refusals.accepted()
        return str(access.token)

    async def close(self) -> None:
        self._refusals.close()
        await self._credential.close()


class TokenRefusalLog:
    """ERROR lines for the bot's outbound token refused by the identity provider. Every reply to
    every user fails then, so one line each would flood the log: the first refusal is logged at
    once, later ones within REFUSAL_LOG_SECONDS are only counted, and one line at the end of
    that time says how many there were. Codes only: never the secret, the token, or the
    provider's description (which may echo request details). `refused_now`: whether the latest
    token request was refused (/readyz says so)."""

    def __init__(
        self,
        credential: str,
        hint: str,
        app_id: str,
    ) -> None:
        self._credential = credential
        self._hint = hint
        self._app_id = app_id
        self._interval = REFUSAL_LOG_SECONDS  # read here, so that a test can shorten it
        self._repeated = 0
        self._timer: asyncio.TimerHandle | None = None
        self.refused_now = False

    def refused(self, status: int | None, error: str, codes: str) -> None:
        self.refused_now = True
        if self._timer is not None:
            self._repeated += 1
            return
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._summarize)
        log.error(
            "the identity provider refused the bot's outbound Bot Framework token (%s): "
            "no reply can reach any user; %s",
            self._credential,
            self._hint,
            extra={
                "event": "outbound_token_refused",
                "credential": self._credential,
                "app_id": self._app_id,
                "status": status,
                "error": error,
                "error_codes": codes,
            },
        )

    def accepted(self) -> None:
        self.refused_now = False

    def close(self) -> None:
        """The refusals counted but not yet logged are logged now (shutdown)."""
        self._summarize()

    def _summarize(self) -> None:
        timer, self._timer = self._timer, None
        if timer is None:
            return
        timer.cancel()
        repeated, self._repeated = self._repeated, 0
        if repeated:
            log.error(
                "the bot's outbound Bot Framework token (%s) was refused %d more times within "
                "%g s of the line before; %s",
                self._credential,
                repeated,
                self._interval,
                self._hint,
                extra={
                    "event": "outbound_token_refused_repeated",
                    "credential": self._credential,
                    "app_id": self._app_id,
                    "count": repeated,
                },
            )


# An Entra ID error number ("AADSTS7000215"), as its error_description starts.
_AADSTS = re.compile(r"AADSTS\d{1,9}")
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


def idp_error(body: object) -> tuple[str, str]:
    """The identity provider's error code (`invalid_client`) and Entra ID's AADSTS numbers
    ("AADSTS7000215", comma-separated) from a refusal's JSON body; "" for either when absent."""
    if not isinstance(body, dict):
        return "", ""
    error = body.get("error")
    code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else ""
    numbers = body.get("error_codes")
    found = (
        [f"AADSTS{n}" for n in numbers if isinstance(n, int) and not isinstance(n, bool)]
        if isinstance(numbers, list)
        else []
    )
    description = body.get("error_description")
    if not found and isinstance(description, str):
        found = _AADSTS.findall(description)
    return code, ",".join(list(dict.fromkeys(found))[:5])


async def _json_or_none(response: aiohttp.ClientResponse) -> object:
    try:
        return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


def _azure_error_body(exc: Exception) -> object:
    """The JSON body of an azure-core error's response, if it has one that can be read."""
    response = getattr(exc, "response", None)
    try:
        return json.loads(response.text()) if response is not None else None
    except Exception:  # a response that cannot be read has no codes to give
        return None


class ConnectorClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenSource,
        allowed_hosts: list[str] | None,
        timeout_seconds: float | None = None,
    ) -> None:
        self._session = session
        self._tokens = tokens
        # None = any host (auth mode: the JWT's serviceurl claim vouched for it).
        self._allowed_hosts = allowed_hosts
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds or REPLY_TIMEOUT_SECONDS)

    @property
    def credentials_refused(self) -> bool:
        """Whether the latest outbound token request was refused (OutboundTokenRefused)."""
        return self._tokens.refused

    async def ready_to_reply(self) -> bool:
        """Gets (or reuses) the outbound token before a reply is worth preparing: raises
        OutboundTokenRefused when the bot's credentials are refused, so no reply can go out.
        Any other failure may pass before the reply goes out, which then tries again: False
        (True: the token is in hand)."""
        try:
            await self._outbound_token()
        except OutboundTokenRefused:
            raise
        except ConnectorError:
            return False
        return True

    def service_url_allowed(self, service_url: str) -> bool:
        if not reply_target_shaped(service_url):
            return False
        hostname = urlsplit(service_url).hostname
        return self._allowed_hosts is None or hostname in self._allowed_hosts

    async def send(
        self,
        service_url: str,
        conversation_id: str,
        activity: dict[str, Any],
        reply_to_id: str | None = None,
    ) -> dict[str, Any]:
        path = f"v3/conversations/{quote(conversation_id, safe='')}/activities"
        if reply_to_id:
            path += f"/{quote(reply_to_id, safe='')}"
        if activity.get("type") != "message":
            return await self._call("POST", service_url, path, activity)
        # A message (an answer or a notice) is worth a wait; typing and stream updates are not
        # retried: the next update carries the text.
        give_up_at = time.monotonic() + _SEND_RETRY_BUDGET_SECONDS
        resent_unreached = False
        maybe_taken: int | None = None
        for attempt in range(_SEND_ATTEMPTS):
            backoff = _SEND_BACKOFF_SECONDS * 2**attempt * random.uniform(0.8, 1.2)  # noqa: S311
            try:
                return await self._call("POST", service_url, path, activity)
            except ConnectorUnreachable as exc:
                # Nothing reached the channel: one more try cannot show the message twice.
                if not exc.resendable or resent_unreached or attempt + 1 == _SEND_ATTEMPTS:
                    raise
                if time.monotonic() + backoff > give_up_at:
                    raise
                resent_unreached = True
                log.info(
                    "the channel could not be reached; trying once more",
                    extra={"error": str(exc), "wait_seconds": round(backoff, 1)},
                )
                await asyncio.sleep(backoff)
            except ConnectorError as exc:
                exc.resent_after = maybe_taken
                # A ReplyUnconfirmed has no status: it is never sent again.
                if exc.status not in _RETRYABLE_SEND_STATUS or attempt + 1 == _SEND_ATTEMPTS:
                    raise
                wait = max(backoff, exc.retry_after or 0.0)
                if time.monotonic() + wait > give_up_at:
                    raise
                log.info(
                    "the channel refused a message; retrying",
                    extra={"status": exc.status, "wait_seconds": round(wait, 1)},
                )
                if exc.status in _MAYBE_TAKEN_STATUS:
                    maybe_taken = exc.status
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def update(
        self, service_url: str, conversation_id: str, activity_id: str, activity: dict[str, Any]
    ) -> dict[str, Any]:
        path = (
            f"v3/conversations/{quote(conversation_id, safe='')}"
            f"/activities/{quote(activity_id, safe='')}"
        )
        return await self._call("PUT", service_url, path, activity)

    async def delete(self, service_url: str, conversation_id: str, activity_id: str) -> None:
        path = (
            f"v3/conversations/{quote(conversation_id, safe='')}"
            f"/activities/{quote(activity_id, safe='')}"
        )
        await self._call("DELETE", service_url, path, None)

    async def _call(
        self, method: str, service_url: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        if not self.service_url_allowed(service_url):
            raise ConnectorError("serviceUrl is not a trusted reply target")
        url = f"{service_url.rstrip('/')}/{path}"
        headers = {}
        token = await self._outbound_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Whether the request went out in full tells a failure the channel cannot have seen
        # from one it may have acted on: it can only act on a whole request.
        upload = aiohttp.UploadTracker()
        started = time.monotonic()
        try:
            async with self._session.request(
                method,
                url,
                json=body,
                headers=headers,
                timeout=self._timeout,
                upload_tracker=upload,
            ) as response:
                if response.status >= 400:
                    raise ConnectorError(
                        f"{method} to the channel failed with {response.status}",
                        response.status,
                        _retry_after(response.headers.get("Retry-After")),
                    )
                return await _taken(method, response)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            failure = type(exc).__name__
            if _went_out_in_full(upload):
                cause = "timeout" if isinstance(exc, TimeoutError) else "connection_dropped"
                raise ReplyUnconfirmed(
                    f"{method} to the channel went out, then {failure}",
                    cause=cause,
                    elapsed_seconds=time.monotonic() - started,
                ) from exc
            raise ConnectorUnreachable(
                f"{method} to the channel failed: {failure}",
                resendable=isinstance(exc, aiohttp.ClientConnectionError)
                and not isinstance(exc, TimeoutError | aiohttp.ClientSSLError),
            ) from exc

    async def _outbound_token(self) -> str | None:
        """Any failure to get a token is a refused delivery: the reply channels turn a
        ConnectorError into DeliveryFailed, so the turn still stores its answer. The token source
        is pluggable (azure-identity raises its own errors), hence the broad except."""
        try:
            return await self._tokens.token()
        except ConnectorError:
            raise
        except Exception as exc:
            # The type only: an identity error's text may carry endpoints or request details.
            log.warning("no outbound token for the channel", extra={"error": type(exc).__name__})
            raise ConnectorError(f"no outbound token: {type(exc).__name__}") from exc


async def _taken(method: str, response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The answer of a request the channel took (2xx): its id, when its body can be read. One
    that cannot (cut short, not JSON) is still taken: it was shown, and must not count as
    refused."""
    if response.content_length == 0 or response.status == 204:
        return {}
    try:
        payload = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.info(
            "the channel took a request; its answer could not be read",
            extra={"method": method, "status": response.status, "error": type(exc).__name__},
        )
        return {}
    return payload if isinstance(payload, dict) else {}


def _went_out_in_full(upload: aiohttp.UploadTracker) -> bool:
    """Whether the whole request was handed to the connection (it may still have been lost
    on the way: the channel may have it, not must). Unfinished or failed: it was not."""
    done = upload.upload_complete
    return done.done() and not done.cancelled() and done.exception() is None


# A URL that parsers may read differently (WHATWG reads a backslash as a slash, so
# `http://evil\@127.0.0.1/` is evil's for some and loopback's for others).
_NOT_IN_A_SERVICE_URL = frozenset("?#@\\")


def reply_target_shaped(service_url: str) -> bool:
    """Whether `service_url` has a channel's serviceUrl shape: http(s), a host, an optional port
    and path (Teams: `https://smba.trafficmanager.net/amer/`), and nothing else. A reply goes to
    the serviceUrl with the connector's path appended (`_call`): a query there would swallow
    that path, so `http://host/api/messages?x=` makes every reply a new activity at that URL
    (the bot's own endpoint: it answers its own replies). Bot Framework serviceUrls never have
    a query, fragment, user info, whitespace or control characters."""
    if any(c in _NOT_IN_A_SERVICE_URL or c.isspace() or not c.isprintable() for c in service_url):
        return False
    parts = urlsplit(service_url)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def points_at(service_url: str, address: tuple[str, int]) -> bool:
    """Whether `service_url` reaches the listener at `address` (its host and port) from this
    machine: on that port, at that host, a loopback or unspecified address, or `localhost`."""
    parts = urlsplit(service_url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    host = (parts.hostname or "").rstrip(".")
    if port != address[1]:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    ip = _ip_or_none(host)
    return ip is not None and (ip.is_loopback or ip.is_unspecified or ip == _ip_or_none(address[0]))


def _ip_or_none(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address (an IPv4-mapped IPv6 one as its IPv4 address; without an IPv6 zone)."""
    try:
        ip = ipaddress.ip_address(value.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by the Bot Connector)."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
