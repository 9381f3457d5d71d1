"""Outbound calls to a channel's connector service (replies, updates), on one shared session.

botbuilder's ConnectorClient is built per turn and sends through `requests` in a thread pool on a
new TCP connection each time; this client keeps one aiohttp session with keep-alive for every
serviceUrl, and one cached outbound token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
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
_SEND_BACKOFF_SECONDS = 0.5
_SEND_RETRY_BUDGET_SECONDS = 20.0
# How long one request to the connector may take before its answer is given up.
REPLY_TIMEOUT_SECONDS = 15.0


class ConnectorError(Exception):
    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


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

    async def close(self) -> None: ...


class NoToken:
    """Anonymous mode: replies carry no token (the Emulator and the built-in Direct Line)."""

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
            return token

    async def close(self) -> None:
        return None


class ManagedIdentityToken:
    """UserAssignedMSI bots: the managed identity is the bot's credential."""

    def __init__(self, client_id: str) -> None:
        from azure.identity.aio import ManagedIdentityCredential

        self._credential = ManagedIdentityCredential(client_id=client_id)

    async def token(self) -> str | None:
        # azure-identity caches the token and refreshes it before expiry.
        access = await self._credential.get_token(BOTFRAMEWORK_SCOPE)
        return str(access.token)

    async def close(self) -> None:
        await self._credential.close()


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
