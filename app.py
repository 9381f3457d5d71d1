"""The app factory: builds clients, routes and sub-apps. Wiring only; `python app.py` runs it.

Resources open in dependency order through aiohttp cleanup contexts (HTTP session -> Azure
credential -> model endpoint -> model client -> store -> services) and close in reverse: the turn
queue drains before the store and model clients it uses are closed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import gc
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_runner import GracefulExit
from pydantic import SecretStr

from admin import AdminSettings, AuthMode, create_admin_app
from admin.erasures import SecondPasses
from admin.pseudonyms import Pseudonyms
from admin.web import LOCAL_LINK_LOGGER
from bot.adapter import ChannelAdapter
from bot.auth import ChannelAuthenticator, SigningKeys, accepted_issuers
from bot.connector import (
    ClientSecretToken,
    ConnectorClient,
    ManagedIdentityToken,
    NoToken,
    TokenSource,
)
from bot.handler import AssistantBot, conversation_key
from bot.peers import PeerLinks, WorkerGroup
from bot.request_telemetry import request_spans
from bot.routes import MessagesEndpoint
from bot.teams import BotProfile
from bot.turns import SHUTDOWN_NOTICE_SECONDS, TurnQueue
from chat.kept import KEEP_SECONDS, KeptWrites
from chat.model import COGNITIVE_SERVICES_SCOPE, ChatModel, Deployment, DeploymentClient
from chat.prompts import PromptBuilder, PromptTemplateError
from chat.router import DeploymentRouter
from chat.service import ChatService, FilterPolicy
from chat.telemetry import ChatTelemetry, correlation_id, tag_turn_log_records
from chat.tokens import TokenCounter
from config import (
    AdminAuthMode,
    BotAppType,
    ConfigurationError,
    DeploymentSpec,
    Settings,
    WebChatAuthMode,
    load_settings,
)
from controls.audit import RefusalLog
from controls.clock import Clock, utc_now
from controls.policy import (
    AccessPolicy,
    PolicyFileError,
    PolicyFiles,
    TenantPolicies,
    load_tenant_policies,
    load_usage_policy,
)
from controls.quotas import QuotaLimits, Quotas, user_scope
from dialogs.gate import ConversationGate, GateConfig
from dialogs.guard import QuotaGuard
from storage.base import Store, StoreError, StoreUnavailable
from storage.erasures import RecentErasures
from storage.ids import safe_id
from storage.sqlite import SqliteStore
from webchat import DIRECT_LINE, connector_host, setup_webchat
from webchat.directline import CHANNEL_ID as BUILTIN_CHANNEL_ID

log = logging.getLogger("app")

SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", aiohttp.ClientSession)
CREDENTIAL = web.AppKey("credential", object)
MODEL_ENDPOINT = web.AppKey("model_endpoint", str)
MODEL = web.AppKey("model", ChatModel)
ROUTER = web.AppKey("router", DeploymentRouter)
STORE = web.AppKey("store", Store)
POLICIES = web.AppKey("policies", PolicyFiles)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
QUOTAS = web.AppKey("quotas", Quotas)
TURNS = web.AppKey("turns", TurnQueue)
MESSAGES = web.AppKey("messages_endpoint", MessagesEndpoint)
CONNECTOR = web.AppKey("connector", ConnectorClient)
TELEMETRY = web.AppKey("telemetry", ChatTelemetry)
# The admin's user pseudonyms (same key): refusal audit records name users by them.
PSEUDONYMS = web.AppKey("pseudonyms", Pseudonyms)
# Users this process erased lately: its turns store nothing of theirs after that.
ERASURES = web.AppKey("erasures", RecentErasures)
# Each erasure's second pass, for the turns of other processes (admin/erasures.py).
SECOND_PASSES = web.AppKey("second_passes", SecondPasses)
READINESS_TIMEOUT_SECONDS = 5.0
# After a turn's deadline: time for the notice, the error record and the summary to go out.
TURN_NOTICE_GRACE_SECONDS = 30.0
# After the longest a turn can last anywhere (the queue's deadline, below): time for a store
# write sent just before it to land, before an erasure's second pass looks.
ERASURE_SECOND_PASS_MARGIN_SECONDS = 30.0
# Wraps the opened store (tests and the soak inject faults through it: tests/faults.py).
STORE_WRAPPER: web.AppKey[Callable[[Store], Store]] = web.AppKey("store_wrapper")
WORKER_GROUP = web.AppKey("worker_group", WorkerGroup)
PEERS = web.AppKey("peers", PeerLinks)
RETENTION_PURGE_SECONDS = 3600


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    store_wrapper: Callable[[Store], Store] | None = None,
    workers: WorkerGroup | None = None,
) -> web.Application:
    # A span per request (named by its route, never its path or query), except the platform's
    # probes of /healthz, which would crowd sampled telemetry out.
    app = web.Application(
        client_max_size=256 * 1024, middlewares=[request_spans(untraced=("/healthz",))]
    )
    app[SETTINGS] = settings
    app[TELEMETRY] = ChatTelemetry()
    # Policy files are read now: a bad file stops the app here, loudly, before it serves.
    app[POLICIES] = PolicyFiles(
        load_tenant_policies(settings.tenant_policy_file, settings.max_output_tokens),
        load_usage_policy(settings.usage_policy_file),
    )
    app[CLOCK] = clock or utc_now  # quotas and consent; tests move time
    if store_wrapper is not None:
        app[STORE_WRAPPER] = store_wrapper
    if workers is not None and workers.count > 1:
        app[WORKER_GROUP] = workers
    app.cleanup_ctx.extend(
        [
            _http_session,
            _azure_credential,
            _model_endpoint,
            _model,
            _store,
            _second_passes,
            _services,
        ]
    )
    app.router.add_post("/api/messages", _messages)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    admin_settings = _admin_settings(settings)
    app[PSEUDONYMS] = Pseudonyms(
        admin_settings.pseudonym_key,
        admin_settings.pseudonymize,
        admin_settings.previous_pseudonym_keys,
    )
    # The store opens in a cleanup context, after this: the admin reads it per request.
    app[ERASURES] = RecentErasures()
    # A turn's write the store refused is written again for a while after the turn (chat.kept):
    # on another instance it may land that much later.
    app[SECOND_PASSES] = SecondPasses(
        settings.turn_deadline_seconds
        + TURN_NOTICE_GRACE_SECONDS
        + KEEP_SECONDS
        + ERASURE_SECOND_PASS_MARGIN_SECONDS
    )
    # A user's quota usage is exported and erased with the rest of their data.
    admin = create_admin_app(
        lambda: app[STORE],
        admin_settings,
        app[PSEUDONYMS],
        erasures=app[ERASURES],
        second_passes=app[SECOND_PASSES],
        quota_scope=user_scope,
        open_conversations=BuiltinChatsInMemory(app),
    )
    # Before the sub-app, whose prefix would take `/admin` too.
    app.router.add_get("/admin", _to_admin)
    app.add_subapp("/admin/", admin)
    # The chat page, the Direct Line token endpoint and the built-in Direct Line.
    usage_policy = app[POLICIES].usage
    setup_webchat(app, settings, MESSAGES, usage_policy.version if usage_policy else None)
    return app


async def _to_admin(request: web.Request) -> NoReturn:
    """`/admin` as typed: the admin pages are under `/admin/`."""
    query = request.rel_url.raw_query_string
    raise web.HTTPPermanentRedirect("/admin/" + (f"?{query}" if query else ""))


class BuiltinChatsInMemory:
    """The admin's `OpenConversations` (admin/erasures.py): the built-in Direct Line keeps what it
    delivered to each open chat (its last 500 activities, for a reload), and a deletion forgets
    it there. In this process only: another instance keeps its own chats until they are idle."""

    def __init__(self, app: web.Application) -> None:
        # Read when a deletion runs: the built-in Direct Line is set up after the admin.
        self._app = app

    def forget_conversation(self, conversation_id: str) -> None:
        self._app[DIRECT_LINE].conversations.forget_where(
            lambda c: safe_id(conversation_key(BUILTIN_CHANNEL_ID, c.id)) == conversation_id
        )

    def forget_users(self, user_ids: Sequence[str]) -> None:
        erased = set(user_ids)
        self._app[DIRECT_LINE].conversations.forget_where(lambda c: c.owner.user_id in erased)


def _anonymous_reply_hosts(settings: Settings) -> list[str]:
    """Where replies may go without channel auth: the configured hosts, and the one the built-in
    Direct Line's replies come back to this app at (the interface HOST names, if not loopback)."""
    hosts = list(settings.anonymous_service_url_hosts)
    own = connector_host(settings.host)
    if not settings.uses_azure_direct_line and own not in hosts:
        hosts.append(own)
    return hosts


def _local_url(settings: Settings) -> str:
    """Where this process listens, as a URL (an IPv6 host in brackets). With PORT=0 `main` has
    chosen the port before anything is built, so this is the real one."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def _admin_settings(settings: Settings) -> AdminSettings:
    session_secret = settings.admin_session_secret.get_secret_value().encode()
    pseudonym_key = settings.admin_pseudonym_key.get_secret_value().encode()
    defaults = AdminSettings()
    return AdminSettings(
        mode=AuthMode(settings.admin_auth_mode.value),
        public_base_url=settings.public_base_url,
        link_base_url=settings.public_base_url or _local_url(settings),
        oidc_metadata_url=settings.admin_oidc_metadata,
        oidc_client_id=settings.admin_oidc_client_id,
        oidc_tenant_id=settings.admin_oidc_tenant_id,
        oidc_client_secret=settings.admin_oidc_client_secret.get_secret_value(),
        session_secret=session_secret or defaults.session_secret,
        pseudonymize=settings.admin_pseudonymize,
        pseudonym_key=pseudonym_key or defaults.pseudonym_key,
        pseudonym_key_ephemeral=not pseudonym_key,
        previous_pseudonym_keys=tuple(
            key.get_secret_value().encode() for key in settings.admin_pseudonym_previous_keys
        ),
        trusted_proxy_hops=settings.admin_trusted_proxy_hops,
    )


# --- resources, in dependency order


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=60)
    ) as session:
        app[HTTP] = session
        yield


async def _azure_credential(app: web.Application) -> AsyncIterator[None]:
    """Entra ID for Azure OpenAI and Cosmos DB, only when some Azure service needs it."""
    settings = app[SETTINGS]
    needs_credential = any(spec.api_key is None for spec in settings.deployments) or (
        settings.uses_cosmos and not settings.cosmos_key.get_secret_value()
    )
    if not needs_credential:
        yield
        return
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    credential: Any
    if settings.azure_client_id:
        credential = ManagedIdentityCredential(client_id=settings.azure_client_id)
        log.info("Azure credential: managed identity (user-assigned)")
    else:
        credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        log.info("Azure credential: DefaultAzureCredential")
    app[CREDENTIAL] = credential
    try:
        yield
    finally:
        await credential.close()


async def _model_endpoint(app: web.Application) -> AsyncIterator[None]:
    """The configured Azure OpenAI endpoint, or the built-in simulator started right here."""
    settings = app[SETTINGS]
    if not settings.uses_simulator:
        app[MODEL_ENDPOINT] = settings.azure_openai_endpoint
        yield
        return
    from simulator import SimulatorConfig, run_simulator

    runner, url = await run_simulator(
        SimulatorConfig(
            time_to_first_token_ms=settings.simulator_ttft_ms,
            tokens_per_second=settings.simulator_tokens_per_second,
            model=settings.azure_openai_model,
        )
    )
    app[MODEL_ENDPOINT] = url
    try:
        yield
    finally:
        await runner.cleanup()


async def _model(app: web.Application) -> AsyncIterator[None]:
    """One SDK client per deployment behind the router, which owns retries and spill-over."""
    settings = app[SETTINGS]
    token_provider = None
    if CREDENTIAL in app:
        from azure.identity.aio import get_bearer_token_provider

        token_provider = get_bearer_token_provider(app[CREDENTIAL], COGNITIVE_SERVICES_SCOPE)  # type: ignore[arg-type]
    specs = settings.deployments or [
        DeploymentSpec(
            name="simulator",
            endpoint=app[MODEL_ENDPOINT],
            deployment=settings.azure_openai_deployment,
            model=settings.azure_openai_model,
            api_key=SecretStr("simulator"),  # the local simulator accepts any key
        )
    ]
    clients = [
        DeploymentClient(
            Deployment(
                name=spec.name,
                endpoint=spec.endpoint,
                deployment=spec.deployment,
                model=spec.model,
                api=spec.api,
                api_version=spec.api_version,
                type=spec.type,
                priority=spec.priority,
                api_key=spec.api_key.get_secret_value() if spec.api_key else None,
            ),
            token_provider,
            settings.model_timeout_seconds,
        )
        for spec in specs
    ]
    router = DeploymentRouter(
        clients,
        breaker_failures=settings.router_breaker_failures,
        breaker_open_seconds=settings.router_breaker_open_seconds,
        default_cooldown_seconds=settings.router_default_cooldown_seconds,
        deadline_seconds=settings.model_deadline_seconds,
        telemetry=app[TELEMETRY],
    )
    app[MODEL] = router
    app[ROUTER] = router
    try:
        yield
    finally:
        await router.close()


async def _store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store: Store
    if settings.uses_cosmos:
        from storage.cosmos import CosmosConfig, CosmosStore

        credential: Any = app.get(CREDENTIAL)
        store = CosmosStore(CosmosConfig.from_settings(settings), credential=credential)
    else:
        store = SqliteStore(settings.sqlite_file, retention_days=settings.retention_days)
    try:
        await store.open()
    except StoreError as exc:
        if not settings.uses_cosmos:
            # The store's one line names the file and what is wrong (locked, full, damaged);
            # LOG_LEVEL=DEBUG still shows where SQLite said so.
            log.debug("the SQLite store could not be opened", exc_info=True)
            raise StartupFailure(str(exc)) from None
        raise StartupFailure(_cosmos_start_failure(exc)) from None
    wrapper = app.get(STORE_WRAPPER)
    app[STORE] = wrapper(store) if wrapper is not None else store
    try:
        yield
    finally:
        try:
            # At least STORE_CLOSE_SECONDS, even when the writes before used up their time.
            async with asyncio.timeout(max(_close_time_left(app), STORE_CLOSE_SECONDS)):
                await store.close()
        except TimeoutError:
            log.error("the store did not close in the time shutdown allows: left as it was")


async def _second_passes(app: web.Application) -> AsyncIterator[None]:
    """Erasures' second passes still pending at shutdown run when the services have closed
    (the turn queue drained: this process's turns store nothing more) and before the store
    closes: early, so a turn still running on another instance may store after them (the
    audit records say `cutShort`)."""
    yield
    await app[SECOND_PASSES].close(_close_time_left(app) - STORE_CLOSE_SECONDS)


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store: Store = app[STORE]
    model: ChatModel = app[MODEL]
    # The turns' writes the store refused after the user was answered (chat.kept): the chat
    # service writes them again; a rating or `/feedback` of such an answer waits for it there.
    kept = KeptWrites(store, store)
    quotas, gate = _controls(app, kept)
    chat = ChatService(
        messages=store,
        summaries=store,
        model=model,
        # The window is counted with the first deployment's tokenizer; spill-over targets of
        # another family are close enough for a budget (they report their real usage).
        counter=TokenCounter(
            settings.deployments[0].model if settings.deployments else settings.azure_openai_model
        ),
        prompts=_prompts(settings, app[POLICIES].tenants.prompt_templates()),
        token_budget=settings.history_token_budget,
        max_history_messages=settings.history_max_messages,
        max_output_tokens=settings.max_output_tokens,
        max_message_chars=settings.max_message_chars,
        filters=FilterPolicy(
            review_severity=settings.filter_review_severity,
            error_policy=settings.filter_error_policy,
        ),
        log_message_text=settings.log_message_text,
        telemetry=app[TELEMETRY],
        guard=QuotaGuard(quotas),
        turn_deadline_seconds=settings.turn_deadline_seconds,
        erasures=app[ERASURES],
        kept=kept,
    )
    _check_history_budget(settings, chat.largest_system_prompt())
    _check_daily_token_limits(settings, app[POLICIES].tenants, chat.smallest_turn)
    tokens: TokenSource
    authenticator: ChannelAuthenticator | None = None
    signing_keys: SigningKeys | None = None
    if settings.bot_auth_enabled:
        if settings.microsoft_app_type is BotAppType.USER_ASSIGNED_MSI:
            tokens = ManagedIdentityToken(settings.microsoft_app_id)
        else:
            tokens = ClientSecretToken(app[HTTP], settings)
        signing_keys = SigningKeys(app[HTTP], settings.bot_openid_metadata_url)
        await signing_keys.start()
        authenticator = ChannelAuthenticator(
            signing_keys,
            settings.microsoft_app_id,
            accepted_issuers(settings.bot_token_issuer, settings.microsoft_app_tenant_id),
        )
    else:
        tokens = NoToken()
    connector = ConnectorClient(
        app[HTTP],
        tokens,
        allowed_hosts=None if settings.bot_auth_enabled else _anonymous_reply_hosts(settings),
    )
    app[CONNECTOR] = connector
    # The chat service ends a turn at its deadline and tells the user; the queue's own limit
    # is the backstop for anything else, late enough to leave that notice time to go out.
    # A shutdown past its grace period ends the turns in progress the same way (interrupt:
    # the bot's, below, which ends those still in the gate too).
    queue = TurnQueue(
        settings.turn_concurrency,
        settings.dedupe_window,
        settings.turn_deadline_seconds + TURN_NOTICE_GRACE_SECONDS,
        interrupt=lambda: bot.interrupt_turns(),
    )
    app[TURNS] = queue
    group = app.get(WORKER_GROUP)
    peers = (
        PeerLinks(group, lambda raw: app[MESSAGES].accept_forwarded(raw))
        if group is not None
        else None
    )
    bot = AssistantBot(
        chat,
        store,
        BotProfile(settings.assistant_name, settings.organization_name),
        gate,
        turns_settled=queue.wait_conversation,
    )
    app[MESSAGES] = MessagesEndpoint(
        ChannelAdapter(connector),
        bot,
        queue,
        connector,
        authenticator,
        peers,
    )
    if peers is not None:
        app[PEERS] = peers
        await peers.start()
    purge = asyncio.create_task(_purge_periodically(store), name="retention-purge")
    _log_configuration(app)
    try:
        yield
    finally:
        # A stop signal drained the queue already, before the port closed
        # (_stop_once_on_signal); this drain is for any other stop (tests, an embedding runner).
        # Siblings still hand over activities while this worker drains, and until the peer
        # links close below: they are refused (503, the channel retries), not lost.
        await queue.drain(settings.shutdown_grace_seconds)
        app[MESSAGES].close()
        if peers is not None:
            await peers.close()
        # The drained turns settled their quota as they finished; what is still pending is
        # written now, before the store closes, as are the turns' writes still kept: side by
        # side, within what closing has left for writes (CLOSE_SECONDS).
        writes_within = _close_time_left(app) - STORE_CLOSE_SECONDS
        await asyncio.gather(chat.close(writes_within), quotas.close(writes_within))
        purge.cancel()
        await asyncio.gather(purge, return_exceptions=True)
        if signing_keys is not None:
            await signing_keys.stop()
        await tokens.close()


def _close_time_left(app: web.Application) -> float:
    """What is left of CLOSE_SECONDS, counted from when the turn queue was done draining."""
    now = asyncio.get_running_loop().time()
    queue = app.get(TURNS)
    drained_at = queue.drained_at if queue is not None and queue.drained_at is not None else now
    return drained_at + CLOSE_SECONDS - now


def _controls(app: web.Application, kept: KeptWrites) -> tuple[Quotas, ConversationGate]:
    """Quotas, rate limits, tenant/channel policy, consent and commands (controls/, dialogs/)."""
    settings, store, clock = app[SETTINGS], app[STORE], app[CLOCK]
    # A refusal about a user is recorded under the user's admin pseudonym, as the admin pages
    # show it and a deletion is recorded.
    refusals = RefusalLog(store, clock, name_user=app[PSEUDONYMS].of_person)
    limits = QuotaLimits(
        user_requests_per_minute=settings.quota_user_requests_per_minute,
        user_tokens_per_day=settings.quota_user_tokens_per_day,
        tenant_tokens_per_day=settings.quota_tenant_tokens_per_day,
    )
    # Quota accounting in one store write per turn (controls.quotas): the gate's request count
    # reserves an upper bound of the turn's tokens (prompt budget + max output), settled later.
    # Every estimate is a non-empty prompt plus max output tokens: no turn is smaller.
    quotas = Quotas(
        store,
        refusals,
        limits,
        app[POLICIES].tenants,
        clock,
        upfront_tokens=settings.history_token_budget + settings.max_output_tokens,
        smallest_turn_tokens=settings.max_output_tokens,
    )
    app[QUOTAS] = quotas
    config = GateConfig(
        access=AccessPolicy.of(settings.allowed_tenant_ids, settings.allowed_channels),
        usage_policy=app[POLICIES].usage,
        organization_name=settings.organization_name,
        max_message_chars=settings.max_message_chars,
    )
    gate = ConversationGate(
        store, quotas, refusals, config, clock, erasures=app[ERASURES], kept=kept
    )
    return quotas, gate


async def _purge_periodically(store: Store) -> None:
    while True:
        try:
            await store.purge_expired()
        except Exception:
            log.warning("retention purge failed; will retry", exc_info=True)
        await asyncio.sleep(RETENTION_PURGE_SECONDS)


def _log_configuration(app: web.Application) -> None:
    group = app.get(WORKER_GROUP)
    level = logging.INFO if group is None or group.announces else logging.DEBUG
    settings = app[SETTINGS]
    model = (
        f"built-in Azure OpenAI simulator at {app[MODEL_ENDPOINT]} (no real model is called)"
        if settings.uses_simulator
        else "; ".join(
            f"{spec.name}: {spec.endpoint} deployment {spec.deployment} ({spec.api} API, "
            f"{spec.type}, priority {spec.priority}, "
            f"{'API key' if spec.api_key else 'Entra ID'})"
            for spec in settings.deployments
        )
    )
    store = (
        f"Cosmos DB {settings.cosmos_endpoint} database {settings.cosmos_database} "
        f"({'key' if settings.cosmos_key.get_secret_value() else 'Entra ID'})"
        if settings.uses_cosmos
        else f"SQLite at {settings.sqlite_file}"
    )
    auth = (
        f"Bot Framework JWT ({settings.microsoft_app_type}, app id {settings.microsoft_app_id})"
        if settings.bot_auth_enabled
        else "anonymous (no MicrosoftAppId: like the Bot Framework Emulator; replies only "
        f"to {', '.join(settings.anonymous_service_url_hosts)})"
    )
    log.log(level, "model: %s", model)
    log.log(level, "store: %s", store)
    log.log(level, "channel auth: %s", auth)
    _log_controls(app, level)


def _log_controls(app: web.Application, level: int) -> None:
    """What decides who may chat and what is kept, so that a mistake shows in the first lines
    of the log: never a secret, never message text. Tenant ids are counted here (a list of
    customers' tenants can be long); DEBUG names them."""
    settings = app[SETTINGS]
    tenants = settings.allowed_tenant_ids
    channels = settings.allowed_channels
    log.log(
        level,
        "access: tenants %s; channels %s",
        f"{len(tenants)} allowed (ALLOWED_TENANT_IDS)"
        if tenants
        else "all (ALLOWED_TENANT_IDS empty)",
        f"{', '.join(channels)} (ALLOWED_CHANNELS)" if channels else "all (ALLOWED_CHANNELS empty)",
    )
    if tenants:
        log.debug("access: allowed tenants %s", ", ".join(tenants))
    usage = app[POLICIES].usage
    log.log(
        level,
        "usage policy: %s",
        f"version {usage.version!r}, accepted before the first question (USAGE_POLICY_FILE)"
        if usage is not None
        else "none, no consent step (USAGE_POLICY_FILE empty)",
    )
    overrides = len(app[POLICIES].tenants.tenants)
    log.log(
        level,
        "quotas: per user %s messages a minute and %s tokens a day; per tenant %s tokens a day; %s",
        _limit(settings.quota_user_requests_per_minute),
        _limit(settings.quota_user_tokens_per_day),
        _limit(settings.quota_tenant_tokens_per_day),
        f"{overrides} tenant(s) with their own limits or prompt (TENANT_POLICY_FILE)"
        if overrides
        else "no per-tenant overrides",
    )
    log.log(
        level,
        "data: conversations %s; message text %s",
        f"deleted {settings.retention_days} day{'s' if settings.retention_days != 1 else ''}"
        " after their last write (RETENTION_DAYS)"
        if settings.retention_days
        else "kept forever (RETENTION_DAYS=0)",
        "written to the log (LOG_MESSAGE_TEXT=true)"
        if settings.log_message_text
        else "never logged",
    )
    webchat = (
        "App Service Authentication"
        if settings.webchat_auth_mode is WebChatAuthMode.APPSERVICE
        else "local (one development user, for make run only)"
    )
    log.log(
        level,
        "sign-in: web chat %s, through %s; admin %s",
        webchat,
        "Azure's Direct Line" if settings.uses_azure_direct_line else "the built-in Direct Line",
        ADMIN_SIGN_IN[settings.admin_auth_mode],
    )


ADMIN_SIGN_IN = {
    AdminAuthMode.LOCAL: "local (a one-time link in this log)",
    AdminAuthMode.APPSERVICE: "App Service Authentication",
    AdminAuthMode.OIDC: "Entra ID tokens checked by the app (oidc)",
}


def _limit(value: int) -> str:
    return f"{value:,}" if value else "unlimited"


# --- handlers


async def _messages(request: web.Request) -> web.StreamResponse:
    return await request.app[MESSAGES].handle(request)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """Ready = the store answers (for SQLite: its file is still the one opened, and writes are
    not failing in a row), at least one model deployment is usable and its host accepts a TCP
    connection (no model call), and the app is not draining. Details stay generic: this
    endpoint is unauthenticated."""
    app = request.app
    checks: dict[str, str] = {}
    # Alongside the store's check: an unreachable host may take the connect timeout to say so.
    model_ready = asyncio.ensure_future(app[ROUTER].ready())
    try:
        await asyncio.wait_for(app[STORE].ping(), timeout=READINESS_TIMEOUT_SECONDS)
        checks["store"] = "ok"
    except StoreUnavailable:
        checks["store"] = "unavailable"  # the store said why, once
    except Exception:
        log.warning("readiness: the store did not answer", exc_info=True)
        checks["store"] = "unavailable"
    checks["model"] = "ok" if await model_ready else "unavailable"
    checks["turns"] = "ok" if app[TURNS].accepting else "draining"
    ready = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": checks}
    connector = app.get(CONNECTOR)
    if connector is not None and connector.credentials_refused:
        # Said, but not a reason to be unready: the bot's own credentials are refused on every
        # instance alike, which no restart or other instance fixes (App Service's health check
        # would only replace instances in a loop). The ERROR log says what to check.
        body["warnings"] = ["outbound_token_refused"]
    return web.json_response(body, status=200 if ready else 503)


# --- running


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; structured fields from `extra=` are kept as fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        turn = correlation_id.get()
        if turn is not None:
            entry["correlation_id"] = turn
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ParserRefusals(logging.Filter):
    """aiohttp logs a request its HTTP parser refused (a 400: a raw non-ASCII byte in the URL,
    as curl sends a Japanese search, or a header over 8 KB) at ERROR with the exception, whose
    text quotes the request line or the header: the words searched for, a session cookie, a
    token. Anyone can send such requests. This logs each without the request, at INFO, at most
    once a minute, with the count of those not logged since (`untold`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._next_at = 0.0
        self._untold = 0

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        if not isinstance(refused, HttpProcessingError):
            return True
        now = self._clock()
        if now < self._next_at:
            self._untold += 1
            return False
        self._next_at = now + 60.0
        record.msg, record.args = "the HTTP parser refused a request", ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.event = "http_request_refused"
        record.error = type(refused).__name__
        record.status = refused.code
        record.untold, self._untold = self._untold, 0
        return True


def quiet_parser_refusals() -> None:
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserRefusals) for f in server.filters):
        server.addFilter(ParserRefusals())


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    quiet_noisy_loggers()
    quiet_parser_refusals()
    # The admin's one-time sign-in link is a credential: for whoever runs the app, on stderr
    # only, never up to the root logger, whose Application Insights handler would export it.
    link = logging.getLogger(LOCAL_LINK_LOGGER)
    link.handlers = [handler]
    link.propagate = False


EXPORTER_STORAGE_LOGGER = "azure.monitor.opentelemetry.exporter._storage"
_VANISHED_FILE = "Path %s does not exist or is inaccessible."


def _not_a_vanished_retry_file(record: logging.LogRecord) -> bool:
    """The exporters (traces, logs, metrics) keep the batches they could not send in one
    folder, and each measures the folder now and then: a file another one renamed or removed
    between listing and measuring is logged as an ERROR, though nothing failed."""
    return record.msg != _VANISHED_FILE


def quiet_noisy_loggers() -> None:
    # The SDKs log request details (including URLs with ids) at INFO; keep them quiet. urllib3
    # and asyncio too: at DEBUG they describe the telemetry exporter's own HTTP requests, which
    # would reach Application Insights as traces, even when the app is idle.
    for noisy in ("azure", "openai", "httpx", "httpx2", "aiohttp.access", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # While Application Insights cannot be reached, the telemetry pipeline warns about every
    # retried batch and dropped item, and a warning raised while the log handler exports a
    # record re-enters that handler, which reports it in a plain-text line of its own.
    for pipeline in ("azure.monitor.opentelemetry.exporter", "opentelemetry"):
        logging.getLogger(pipeline).setLevel(logging.ERROR)
    logging.getLogger(EXPORTER_STORAGE_LOGGER).addFilter(_not_a_vanished_retry_file)
    # msrest (botbuilder's models) warns of each unknown key or enum value of what a sender
    # posted, quoting it: text anyone can choose, once per request. Activities are read by
    # bot.wire, and what msrest refuses is a 400 of the app's own.
    logging.getLogger("msrest").setLevel(logging.ERROR)


# The fewest tokens the history budget must leave for the user's message beside the system
# prompt: a paragraph. With less, most questions would be refused as too long, every turn.
MIN_MESSAGE_ROOM_TOKENS = 200


def _check_history_budget(settings: Settings, largest_system_prompt: int) -> None:
    needed = largest_system_prompt + MIN_MESSAGE_ROOM_TOKENS
    if settings.history_token_budget < needed:
        raise ConfigurationError(
            f"HISTORY_TOKEN_BUDGET: {settings.history_token_budget} tokens leave too little room"
            f" for a message beside the system prompt ({largest_system_prompt} tokens at most,"
            f" of SYSTEM_PROMPT_FILE or a tenant's template): set it to at least {needed}"
        )


def _check_daily_token_limits(
    settings: Settings, policies: TenantPolicies, smallest_turn: Callable[[str], int]
) -> None:
    """A daily token limit that is not 0 (no limit) must admit the smallest turn, of the
    default system prompt or of a tenant's own template: with less, every message would be
    refused, for good. (config.py checks the part it can know: more than MAX_OUTPUT_TOKENS.)"""
    where = {
        "user_tokens_per_day": "QUOTA_USER_TOKENS_PER_DAY",
        "tokens_per_day": "QUOTA_TENANT_TOKENS_PER_DAY",
    }
    defaults = {
        "user_tokens_per_day": settings.quota_user_tokens_per_day,
        "tokens_per_day": settings.quota_tenant_tokens_per_day,
    }
    for tenant, policy in [("", None), *policies.tenants.items()]:
        needed = smallest_turn(tenant)
        for field, setting in where.items():
            own = getattr(policy, field) if policy is not None else None
            limit = defaults[field] if own is None else own
            if not limit or limit >= needed:
                continue
            named = setting if own is None else f"TENANT_POLICY_FILE: tenants.{tenant}.{field}"
            of = f" for tenant {tenant}" if tenant and own is None else ""
            raise ConfigurationError(
                f"{named}: {limit:,} tokens a day admit no message{of}: the smallest takes"
                f" {needed:,} (MAX_OUTPUT_TOKENS, the system prompt and the message itself);"
                f" set it to 0 (no limit) or at least {needed:,}"
            )


def _prompts(settings: Settings, tenant_templates: dict[str, Path]) -> PromptBuilder:
    try:
        return PromptBuilder(
            settings.system_prompt_file,
            settings.organization_name,
            settings.assistant_name,
            tenant_templates,
        )
    except PromptTemplateError as exc:
        # SYSTEM_PROMPT_FILE, or a tenant's template in TENANT_POLICY_FILE: the path says which.
        raise ConfigurationError(str(exc)) from None


# Parts of the Azure Monitor distro the app turns off (the exporter reads these from the
# environment; an operator's own value is kept). Statsbeat sends the SDK's usage to Microsoft's
# own instrumentation keys, and the control plane calls settings.sdk.monitor.azure.com every
# hour: neither is the configured Application Insights (DESIGN.md, "Zero egress"). SDK stats
# (counts of items sent and dropped) shut down at exit on their own, out of _flush_telemetry's
# reach, and wait 30 s there for an endpoint that does not answer.
TELEMETRY_ENVIRONMENT = {
    # Application Insights' cloud role (the Application Map's node), "unknown_service" otherwise.
    "OTEL_SERVICE_NAME": "chat-assistant",
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
}
# The distro's client library instrumentations, on by default: each exports a library's HTTP
# calls as dependencies named by their raw URLs, which hold ids (a Cosmos DB item's link holds a
# user or conversation id), and counts an answer the app expects, such as a 404 read, as a
# failure. The app's own spans (turn, store.*, chat.*) time those calls and name no one.
LIBRARY_INSTRUMENTATIONS = ("azure_sdk", "requests", "urllib", "urllib3", "httpx", "httpx2")
# How long stopping waits for the exporters to hand over what they still hold. An endpoint that
# does not answer would hold the exit for the exporter's read timeout (azure-core's 300 s),
# far past SHUTDOWN_GRACE_SECONDS; what is not handed over by then is lost.
TELEMETRY_FLUSH_SECONDS = 5.0
# After the grace period and the notices of the turns it cut short (SHUTDOWN_NOTICE_SECONDS): how
# long closing takes at most, however the store answers. Within it: what the cancelled turns get
# to end (bot.turns.CANCELLED_WAIT_SECONDS), the requests still in flight (HTTP_CLOSE_SECONDS),
# the writes closing makes (quota settlements, turns' kept writes, erasures' early second passes)
# until STORE_CLOSE_SECONDS before its end, and the store's own close. What the store has not
# taken by then is given up, and logged.
CLOSE_SECONDS = 5.0
STORE_CLOSE_SECONDS = 1.0
# Requests still in flight once the turns drained (an admin page waiting for the store, an
# export): they had the grace period, the port listening; after this long they are cancelled, and
# given as long again to end (aiohttp's shutdown_timeout).
HTTP_CLOSE_SECONDS = 1.0
# Time a stopping worker has to close and flush its telemetry before the parent kills it. App
# Service must wait as long (WEBSITES_CONTAINER_STOP_TIME_LIMIT in infra/modules/appservice.bicep:
# grace + 20 s).
WORKER_CLOSE_SECONDS = CLOSE_SECONDS + TELEMETRY_FLUSH_SECONDS


def configure_telemetry(settings: Settings) -> None:
    """Export spans, metrics and logs to Application Insights when a connection string is set;
    otherwise the OpenTelemetry API stays a no-op and nothing leaves the process."""
    connection_string = settings.applicationinsights_connection_string.get_secret_value()
    if not connection_string:
        log.info("telemetry: off (no APPLICATIONINSIGHTS_CONNECTION_STRING)")
        return
    for name, value in TELEMETRY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    from azure.monitor.opentelemetry import configure_azure_monitor

    try:
        configure_azure_monitor(
            connection_string=connection_string,
            instrumentation_options={name: {"enabled": False} for name in LIBRARY_INSTRUMENTATIONS},
            # Live Metrics polls its own endpoint every second, idle or not, and logs an error
            # with a traceback every few seconds while it cannot.
            enable_live_metrics=False,
        )
    except ValueError:
        # The exporter's own message may quote the string, which holds the instrumentation key.
        raise ConfigurationError(
            "APPLICATIONINSIGHTS_CONNECTION_STRING: not a valid connection string (copy it from"
            " the Application Insights resource's overview)"
        ) from None
    # Application Insights' log handler exports a record's fields, never the JSON formatter's:
    # the turn's correlation id must be on the record itself.
    tag_turn_log_records()
    # The SDK shuts its providers down at exit with no bound on an endpoint that does not answer;
    # _flush_telemetry does it instead, bounded.
    for provider in _telemetry_providers():
        atexit.unregister(provider.shutdown)
    log.info("telemetry: Azure Monitor (Application Insights)")


# What an operator gets for a setting to fix, as for a command-line usage error.
CONFIGURATION_ERROR_EXIT_CODE = 2
# A service the app needs failed at start-up: not a setting, so a later start may work.
STARTUP_FAILURE_EXIT_CODE = 1


class StartupFailure(Exception):
    """A service the app depends on could not be used at start-up (an outage, a firewall, a
    missing role). The message names the setting that points at it, never a value or secret."""


def _cosmos_start_failure(exc: StoreError) -> str:
    # The store's messages are its own (never the SDK's, which may quote a document).
    account = "the Cosmos DB account at COSMOS_ENDPOINT"
    if exc.failure == "auth":
        return f"{account}: no Entra ID token for it ({exc})"
    if exc.failure == "unreachable":
        return f"{account} could not be reached ({exc})"
    return f"{account} could not be used: {exc}"


def main() -> None:
    # Only errors in what the operator set are cut to one line each (their messages name the
    # setting or file and quote no value); anything else keeps its traceback.
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        _stop_for_configuration(str(exc))
    configure_logging(settings.log_level)
    reserved: socket.socket | None = None
    try:
        if settings.port == 0:
            # Chosen now, not by each bind: the start-up line, the admin link and every
            # worker need the one real port.
            reserved = _reserve_port(settings.host)
            settings = settings.model_copy(update={"port": reserved.getsockname()[1]})
        log.info(
            "starting on %s with %d worker(s)%s",
            _local_url(settings),
            settings.app_workers,
            " (PORT=0: a free port chosen by the system)" if reserved is not None else "",
        )
        serve(
            lambda workers: create_app(settings, workers=workers),
            settings,
            port_reserved=reserved is not None,
        )
    except StartupFailure as exc:
        _stop_for_startup_failure(str(exc))
    except (ConfigurationError, PolicyFileError, OSError) as exc:
        problems = _configuration_problems(exc, settings)
        if problems is None:
            raise
        _stop_for_configuration(problems)
    finally:
        if reserved is not None:
            reserved.close()


def _reserve_port(host: str) -> socket.socket:
    """A free port on HOST, held by a bound socket that never listens until the app stops: no
    other process can take it meanwhile, and the app's own sockets join it with SO_REUSEPORT
    (a socket that does not listen gets no connections)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    reserved = socket.socket(family, kind, proto)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # As asyncio binds `::`: IPv6 only, so 0.0.0.0 stays free for whoever else.
            reserved.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        reserved.bind(address)
    except BaseException:
        reserved.close()
        raise
    return reserved


def _configuration_problems(exc: BaseException, settings: Settings) -> str | None:
    """What the operator must fix, when that is what stopped the start (no value quoted)."""
    if isinstance(exc, ConfigurationError | PolicyFileError):
        return str(exc)
    if isinstance(exc, socket.gaierror):
        return "HOST: not an IP address, and no address is known by that name"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return "HOST: not an address of this machine (no interface has it)"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"PORT: port {settings.port} is already in use on HOST (another process listens there)"
        )
    return None


def _stop_for_configuration(problems: str) -> NoReturn:
    for line in problems.splitlines():
        sys.stderr.write(f"configuration error: {line}\n")
    raise SystemExit(CONFIGURATION_ERROR_EXIT_CODE)


def _stop_for_startup_failure(problem: str) -> NoReturn:
    sys.stderr.write(f"start-up failed: {problem}\n")
    raise SystemExit(STARTUP_FAILURE_EXIT_CODE)


# Young-generation collections every 20,000 net allocations instead of 700: a turn allocates
# thousands of short-lived objects, and each collection has a fixed cost.
GC_YOUNG_THRESHOLD = 20_000


async def _settle_garbage_collector(app: web.Application) -> None:
    """Once started: everything alive now (modules, clients, tokenizer tables) lives as long as
    the process, so it is frozen out of the collector's sight. A full collection then walks only
    what turns left behind; without this it walked every startup object and stopped the process
    for over 100 ms under load (measured in bench/)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def serve(
    build: Callable[[WorkerGroup | None], web.Application],
    settings: Settings,
    *,
    port_reserved: bool = False,
) -> None:
    """Run until SIGINT/SIGTERM; then drain the turn queue within SHUTDOWN_GRACE_SECONDS while
    still listening (new activities get a 503), and only then close the port and every client.
    With APP_WORKERS > 1 a parent process forks the workers, and each binds the port itself
    and builds its own app after the fork, so no event loop, thread or connection crosses
    it. `port_reserved`: the port is held by a socket with SO_REUSEPORT (`_reserve_port`)."""
    if settings.app_workers == 1:
        configure_telemetry(settings)
        try:
            _run(build(None), settings, reuse_port=port_reserved)
        finally:
            _flush_telemetry()
    else:
        Workers(build, settings).run()


def _run(
    app: web.Application, settings: Settings, *, worker: bool = False, reuse_port: bool = False
) -> None:
    app.on_startup.append(_settle_garbage_collector)
    # Our own stop signal handlers, not aiohttp's: theirs let a second signal cut the drain.
    app.on_startup.append(_stop_once_on_signal)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            reuse_port=worker or reuse_port or None,
            print=None,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=HTTP_CLOSE_SECONDS,
        )


async def _stop_once_on_signal(app: web.Application) -> None:
    """The same stop may come twice: Ctrl-C pressed again while the app drains, a supervisor
    that repeats its SIGTERM; and a worker gets Ctrl-C both from the terminal (it reaches the
    whole process group) and from the parent, which passes it on. The first starts the
    graceful stop; later ones must not cut its drain short (SIGKILL still stops at once).

    The turns drain while the app still listens, and only then does aiohttp's own stop begin
    (GracefulExit): that stop closes the listening socket first, and the built-in Direct Line's
    replies come back to this very port (webchat/connector.py), so a drain behind a closed
    socket loses every web chat answer. Listening on also lets /readyz say "draining" and
    refuse new activities with a 503 the channel retries, where it would find nobody there."""
    loop = asyncio.get_running_loop()
    grace = app[SETTINGS].shutdown_grace_seconds
    queue = app[TURNS]
    drain: asyncio.Task[None] | None = None

    async def drain_then_stop() -> None:
        try:
            await queue.drain(grace)
        except Exception:
            log.exception("draining the turns failed; stopping anyway")
        # Raised from a callback, as aiohttp's own signal handler does: it leaves the loop and
        # web.run_app runs the runner's cleanup (sites, on_shutdown, cleanup contexts).
        loop.call_soon(_raise_graceful_exit)

    def on_signal(signum: int) -> None:
        # Both signals can be waiting in the same loop iteration: only the first one stops.
        nonlocal drain
        if drain is not None:
            log.info(
                "already stopping: finishing the turns in flight",
                extra={"signal": signum, "at_most_seconds": grace},
            )
            return
        # At once, not when the task first runs: nothing may be accepted after the signal.
        queue.stop_accepting()
        log.info(
            "stopping: finishing the turns in flight before closing the port",
            extra={"signal": signum, "turns": queue.in_flight, "at_most_seconds": grace},
        )
        drain = loop.create_task(drain_then_stop(), name="drain-before-stop")

    for each in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(each, on_signal, each)


def _raise_graceful_exit() -> None:
    raise GracefulExit


class Workers:
    """The parent of APP_WORKERS processes listening on the same port with SO_REUSEPORT: the
    kernel spreads new connections over them by hash (one socket shared by all would let
    whichever worker wakes first take a whole burst), and each conversation's turns go to one
    of them (bot/peers.py, over Unix sockets in a directory made here). Connections still
    queued on a worker that dies are reset; channels retry. A dead worker is replaced under
    the same number; SIGTERM or SIGINT stops them all (each drains its own turns), a worker
    still draining after the grace period is killed, and the parent exits non-zero if any
    worker failed."""

    # A worker that dies this soon after it started, this many times in a row, will not start.
    QUICK_EXIT_SECONDS = 10.0
    QUICK_EXITS_TO_GIVE_UP = 3
    STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

    def __init__(
        self, build: Callable[[WorkerGroup | None], web.Application], settings: Settings
    ) -> None:
        self._build = build
        self._settings = settings
        self._sockets = _socket_directory()  # removed by run()
        self._running: dict[int, tuple[int, float]] = {}  # pid -> (worker number, started at)
        self._stop_deadline: float | None = None
        self._quick_exits = 0
        self._failed = False
        self._configuration_problems: str | None = None
        self._startup_failure: str | None = None
        # Set once a worker is replaced: the start-up block was written by the first worker.
        self._replacing = False

    def run(self) -> None:
        try:
            self._serve_workers()
        finally:
            shutil.rmtree(self._sockets, ignore_errors=True)
        # Said once, by the parent, as with one process: every worker would meet it again.
        if self._configuration_problems is not None:
            _stop_for_configuration(self._configuration_problems)
        if self._startup_failure is not None:
            _stop_for_startup_failure(self._startup_failure)
        if self._failed:
            raise SystemExit(1)

    def _serve_workers(self) -> None:
        # What the parent loaded (modules, tables) is shared with the workers until written:
        # frozen, the collector in a worker never touches (and so never copies) those pages.
        gc.collect()
        gc.freeze()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for number in range(self._settings.app_workers):
            self._start(number)
        while self._running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                self._kill_late_workers()
                time.sleep(0.1)
                continue
            number, started = self._running.pop(pid, (-1, 0.0))
            code = os.waitstatus_to_exitcode(status)
            if number < 0:
                continue
            if code == CONFIGURATION_ERROR_EXIT_CODE and self._configuration_problems is None:
                problems = self._problems_file(number)
                with contextlib.suppress(OSError):
                    self._configuration_problems = problems.read_text(encoding="utf-8")
                if self._configuration_problems is not None:
                    # A restart would meet the same setting: stop them all instead.
                    self._stop(signal.SIGTERM, None)
                    continue
            if code == STARTUP_FAILURE_EXIT_CODE and self._startup_failure is None:
                with contextlib.suppress(OSError):
                    self._startup_failure = self._failure_file(number).read_text(encoding="utf-8")
                if self._startup_failure is not None:
                    # The service is down for every worker alike: quick restarts would only
                    # repeat it. Whoever runs the app (App Service, a supervisor) starts it
                    # again later.
                    self._stop(signal.SIGTERM, None)
                    continue
            if self._stop_deadline is not None:
                # Killed by the stop signal itself: it came before the worker was serving.
                stopped = code in (0, -signal.SIGTERM, -signal.SIGINT)
                self._failed = self._failed or not stopped
                continue
            quick = time.monotonic() - started < self.QUICK_EXIT_SECONDS
            self._quick_exits = self._quick_exits + 1 if quick else 0
            if self._quick_exits >= self.QUICK_EXITS_TO_GIVE_UP:
                log.error("workers keep exiting at start (last exit code %d): stopping", code)
                self._failed = True
                self._stop(signal.SIGTERM, None)
                continue
            log.error("worker %d exited with code %d; starting a new one", number, code)
            self._replacing = True
            self._start(number)

    def _start(self, number: int) -> None:
        # Signals wait until the child has its own handlers and the parent knows the child.
        signal.pthread_sigmask(signal.SIG_BLOCK, self.STOP_SIGNALS)
        pid = os.fork()
        if pid:
            self._running[pid] = (number, time.monotonic())
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.STOP_SIGNALS)
            return
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.STOP_SIGNALS)
            configure_telemetry(self._settings)
            announces = number == 0 and not self._replacing
            group = WorkerGroup(self._sockets, number, self._settings.app_workers, announces)
            _run(self._build(group), self._settings, worker=True)
        except StartupFailure as exc:
            code = STARTUP_FAILURE_EXIT_CODE
            with contextlib.suppress(OSError):
                self._failure_file(number).write_text(str(exc), encoding="utf-8")
        except BaseException as exc:
            problems = _configuration_problems(exc, self._settings)
            if problems is None:
                log.exception("worker %d failed", number)
                code = 1
            else:
                code = CONFIGURATION_ERROR_EXIT_CODE
                # Handed to the parent (the socket directory is private to the app's user).
                with contextlib.suppress(OSError):
                    self._problems_file(number).write_text(problems, encoding="utf-8")
        finally:
            _flush_telemetry()
            logging.shutdown()
            os._exit(code)  # not the parent's atexit handlers: they are not this process's

    def _problems_file(self, number: int) -> Path:
        return self._sockets / f"worker-{number}.configuration-error"

    def _failure_file(self, number: int) -> Path:
        return self._sockets / f"worker-{number}.start-up-failure"

    def _stop(self, signum: int, frame: object) -> None:
        if self._stop_deadline is not None:
            return
        grace = self._settings.shutdown_grace_seconds + SHUTDOWN_NOTICE_SECONDS
        self._stop_deadline = time.monotonic() + grace + WORKER_CLOSE_SECONDS
        for pid in list(self._running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _kill_late_workers(self) -> None:
        if self._stop_deadline is None or time.monotonic() < self._stop_deadline:
            return
        for pid, (number, _) in self._running.items():
            log.error("worker %d still running after the grace period: killed", number)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._failed = True
        self._stop_deadline = float("inf")


def _socket_directory() -> Path:
    """A directory for the workers' Unix sockets that only this user may open (mkdtemp makes it
    0700). A socket's path holds at most 107 bytes: a longer TMPDIR is passed over for /tmp."""
    directory = Path(tempfile.mkdtemp(prefix="assistant-workers-"))
    if len(str(directory / "worker-999.sock").encode()) <= 107:
        return directory
    directory.rmdir()
    return Path(tempfile.mkdtemp(prefix="assistant-workers-", dir="/tmp"))


def _telemetry_providers() -> list[Any]:
    """The SDK providers configure_telemetry installed (none when telemetry is off)."""
    from opentelemetry import _logs, metrics, trace

    providers = (
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
        _logs.get_logger_provider(),
    )
    return [provider for provider in providers if callable(getattr(provider, "shutdown", None))]


def _flush_telemetry() -> None:
    """Hand what the exporters still hold over and shut them down, waiting at most
    TELEMETRY_FLUSH_SECONDS: when the process stops (a worker ends with os._exit, which runs no
    atexit). Each provider shuts down in a daemon thread of its own, so one whose endpoint hangs
    neither holds the others back nor keeps the process alive."""

    def shut_down(provider: Any) -> None:
        with contextlib.suppress(Exception):
            provider.shutdown()

    deadline = time.monotonic() + TELEMETRY_FLUSH_SECONDS
    threads = [
        threading.Thread(target=shut_down, args=(provider,), name="telemetry-flush", daemon=True)
        for provider in _telemetry_providers()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


if __name__ == "__main__":
    main()
