"""The one validated settings object. Nothing else in the project reads the environment.

Every field's alias is the environment variable (or `.env` key) that sets it; `.env.sample` and the
README's configuration table list them all.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent
BOTFRAMEWORK_OPENID_METADATA = "https://login.botframework.com/v1/.well-known/openidconfiguration"


class AdminAuthMode(StrEnum):
    LOCAL = "local"
    APPSERVICE = "appservice"
    OIDC = "oidc"


ENTRA_OPENID_METADATA = (
    "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
)
# Entra ID's tenant names that are not a tenant: any work account, any account, personal ones.
ENTRA_SHARED_TENANTS = frozenset({"common", "organizations", "consumers"})


class WebChatAuthMode(StrEnum):
    LOCAL = "local"
    APPSERVICE = "appservice"


ApiStyle = Literal["azure", "v1", "openai-compatible"]
DeploymentType = Literal["Standard", "GlobalStandard", "DataZoneStandard", "ProvisionedManaged"]


KEY_VAULT_REFERENCE_PREFIX = "@Microsoft.KeyVault("
# App Service hands an app setting's reference text to the app when it cannot resolve it (no
# access, vault unreachable). That text is the same on every instance and can be guessed from the
# vault's name: used as a key, it would let anyone forge sessions or call with a known key.
UNRESOLVED_KEY_VAULT_REFERENCE = (
    "is an unresolved Key Vault reference: App Service could not read the secret "
    "(check the app identity's access to the vault and the vault's private endpoint)"
)


def _is_key_vault_reference(value: str) -> bool:
    return value.lstrip().startswith(KEY_VAULT_REFERENCE_PREFIX)


class ConfigurationError(Exception):
    """A setting (or a file a setting names) the operator must fix. Its message names the setting
    or file and never quotes a setting's value, so it is safe to print as it is."""


def explain_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: where (setting alias or field path) and pydantic's message, without
    the input value (a secret, or the tail of every setting for a model-level check)."""
    lines = []
    for each in error.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in each["loc"])
        message = each["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}{where}: {message}" if where else f"{prefix}{message}")
    return lines


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_RETENTION_DAYS = 24_855


# The URL checks' messages do not name the setting: the error's location does (the setting's
# alias, or a deployment's field), so each line names it once.
def _without_user_info(value: str) -> str:
    """Endpoint URLs are logged at start-up, and DIRECT_LINE_ENDPOINT is sent to browsers (the
    page's Content-Security-Policy, the token's `domain`): `https://user:password@host` would
    publish the password. Each service's credential has a setting of its own."""
    if "@" in urlsplit(value).netloc:
        raise ValueError(
            "must not hold a user name or password (user:password@host): the URL is "
            "logged and may be shown in pages; credentials have settings of their own"
        )
    return value


# Azure OpenAI's dated API versions: a date, perhaps with `-preview` (2024-10-21,
# 2025-04-01-preview). Anything else gets a 404 from Azure, as a deployment that does not exist.
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")


def _api_version(value: str) -> str:
    if not _API_VERSION.fullmatch(value):
        raise ValueError(
            "must be an Azure OpenAI API version such as 2024-10-21 or 2025-04-01-preview"
        )
    return value


def _https_or_loopback(value: str, *, query_allowed: bool = False) -> str:
    """`query_allowed`: a URL that may carry a query of the service's (Entra ID's metadata takes
    `?appid=`); the others never have one, and one would be logged at start-up with the URL
    (a `?subscription-key=` or `?sig=` there would publish it)."""
    _without_user_info(value)
    parts = urlsplit(value)
    if (parts.query or parts.fragment) and not query_allowed:
        raise ValueError(
            "must not have a query or fragment (?... or #...): the URL is logged at "
            "start-up; keys and credentials have settings of their own"
        )
    if parts.scheme == "https" and parts.hostname:
        return value.rstrip("/")
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return value.rstrip("/")
    raise ValueError(
        "must be an https:// URL (plain http is accepted only on loopback, for simulators)"
    )


class DeploymentSpec(BaseModel):
    """One entry of DEPLOYMENTS_FILE (see README, "Model deployments")."""

    # No input values in errors: a deployment's entry is no place for a key, but one may be there.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=64)
    endpoint: str
    api: ApiStyle = "azure"
    deployment: str = Field(min_length=1)
    api_version: str = "2024-10-21"
    type: DeploymentType = "Standard"
    priority: int = 1
    model: str = "gpt-4o"
    api_key_env: str | None = None
    # Resolved from `api_key_env` when the file is loaded; never written in the file itself.
    api_key: SecretStr | None = Field(None, exclude=True)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _https_or_loopback(value)

    @field_validator("api_version", mode="before")
    @classmethod
    def _api_version(cls, value: object) -> object:
        # YAML reads an unquoted `api_version: 2024-10-21` as a date; Azure's versions are dates.
        return value.isoformat() if isinstance(value, date) else value

    @field_validator("api_version")
    @classmethod
    def _api_version_is_one(cls, value: str) -> str:
        return _api_version(value.strip())


def load_deployments(path: Path) -> list[DeploymentSpec]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"DEPLOYMENTS_FILE {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"DEPLOYMENTS_FILE {path} is not valid YAML{where}") from exc
    entries = raw.get("deployments") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"DEPLOYMENTS_FILE {path} needs a non-empty `deployments:` list")
    specs = [_deployment(path, index, entry) for index, entry in enumerate(entries)]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"DEPLOYMENTS_FILE {path}: deployment names must be unique")
    for index, spec in enumerate(specs):
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ValueError(
                    f"DEPLOYMENTS_FILE {path}: deployment {spec.name} names api_key_env "
                    f"{spec.api_key_env}, which is not set"
                )
            if _is_key_vault_reference(key):
                raise ValueError(
                    f"DEPLOYMENTS_FILE {path}: deployment {spec.name}: api_key_env "
                    f"{spec.api_key_env} {UNRESOLVED_KEY_VAULT_REFERENCE}"
                )
            specs[index] = spec.model_copy(update={"api_key": SecretStr(key)})
    return sorted(specs, key=lambda spec: spec.priority)


def _deployment(path: Path, index: int, entry: object) -> DeploymentSpec:
    name = entry.get("name") if isinstance(entry, dict) else None
    where = f"DEPLOYMENTS_FILE {path}: deployments[{index}]" + (
        f" ({name})" if isinstance(name, str) and name else ""
    )
    if isinstance(entry, dict) and "api_key" in entry:
        # The file is read by whoever deploys the app and often kept in the repository.
        raise ValueError(
            f"{where}: api_key must not be written in the file; name the environment variable "
            "that holds the key in api_key_env"
        )
    try:
        return DeploymentSpec.model_validate(entry)
    except ValidationError as exc:
        raise ValueError("; ".join(explain_validation_error(exc, f"{where}: "))) from exc


MIN_KEY_CHARS = 32


class BotAppType(StrEnum):
    MULTI_TENANT = "MultiTenant"
    SINGLE_TENANT = "SingleTenant"
    USER_ASSIGNED_MSI = "UserAssignedMSI"


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _in_canonical_case(value: object, choices: tuple[str, ...]) -> object:
    """`HIGH`, `OIDC`, `multitenant` as the one spelling the app compares with; anything else is
    left for the field's own check to refuse."""
    if not isinstance(value, str):
        return value
    wanted = value.strip().lower()
    return next((choice for choice in choices if choice.lower() == wanted), value)


def _choices(annotation: object) -> tuple[str, ...]:
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return tuple(member.value for member in annotation)
    return tuple(str(choice) for choice in get_args(annotation))


_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_DEFAULT_PORTS = {"https": 443, "http": 80}
NOT_AN_ORIGIN = (
    "is not an origin: each entry must be https://host or https://host:port (http only on "
    "loopback), with no path, query or fragment"
)


def _origin(entry: str) -> str | None:
    """The origin as a browser sends it in `Origin` (lower-case scheme and host, no default port,
    no slash): Direct Line's CORS compares it as a string. None when the entry is not one."""
    if "?" in entry or "#" in entry:
        return None
    parts = urlsplit(entry)
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        return None
    if (
        not host
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
    ):
        return None
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return None
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        host = f"[{host}]"
    elif not _HOST_NAME.match(host):
        return None
    shown_port = "" if port is None or port == _DEFAULT_PORTS[parts.scheme] else f":{port}"
    return f"{parts.scheme}://{host}{shown_port}"


# The channel ids of the clients this app is built for (botbuilder's `Channels` names them):
# Teams, the web chat widget (built-in Direct Line or Azure's: `directline`; Azure's own Web Chat
# channel: `webchat`) and the Bot Framework Emulator. An allow-list entry that is none of them
# (`teams` for `msteams`) would refuse every user of the channel it meant.
KNOWN_CHANNELS = ("msteams", "directline", "webchat", "emulator")
_SHOWN_CHANNEL = re.compile(r"^[a-z0-9._-]{1,32}$")
# An Entra tenant id as Teams (`channelData.tenant.id`) and App Service's `tenantid` claim send it.
_TENANT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NOT_A_PUBLIC_BASE_URL = (
    "must be the app's public URL: https://host or https://host:port (http only on loopback), "
    "with no path, query or fragment"
)


def _known_channel(number: int, entry: str) -> str:
    channel = entry.lower()
    if channel in KNOWN_CHANNELS:
        return channel
    # A channel id is no secret; anything that does not look like one is not repeated.
    shown = f" ({channel})" if _SHOWN_CHANNEL.match(channel) else ""
    raise ValueError(
        f"entry {number}{shown} is not a channel id of this app: use "
        f"{', '.join(KNOWN_CHANNELS)} (Teams is msteams)"
    )


# A serviceUrl's host may be a container's or machine's name with `_` (Compose services), which
# urlsplit passes on as it is: unlike an origin's, it may match.
_REPLY_HOST_NAME = re.compile(
    r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$"
)
NOT_A_REPLY_HOST = (
    "is not a host name or IP address: each entry is the host of a serviceUrl replies may go "
    "to (localhost, 10.0.0.4, ::1), with no scheme, port, path or brackets"
)


def _reply_host(number: int, entry: str) -> str:
    host = entry.lower()
    if ":" in host and "%" not in host:  # a zone id (fe80::1%eth0) never matches a URL's host
        try:
            # As the serviceUrl's host reads it: `0:0:0:0:0:0:0:1` is `::1`.
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            pass
    elif _REPLY_HOST_NAME.match(host):
        return host
    # Not repeated: the file's errors quote no setting's value.
    raise ValueError(f"entry {number} {NOT_A_REPLY_HOST}")


def _tenant_id(number: int, entry: str) -> str:
    tenant = entry.lower()
    if _TENANT_ID.match(tenant):
        return tenant
    hint = ""
    if re.search(r"[;\s]", entry):
        hint = "; separate tenant ids with commas"
    elif "." in entry:
        hint = "; a domain name is not one: channels send the tenant's id"
    raise ValueError(
        f"entry {number} is not an Entra tenant id (a GUID: the tenant's Directory (tenant) ID, "
        f"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx){hint}"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None,
        # `PORT=` in .env (or an empty app setting) keeps the default, as .env.sample says;
        # otherwise an empty HOST would bind every interface and an empty path be `.`.
        env_ignore_empty=True,
        populate_by_name=True,
        extra="ignore",
        case_sensitive=False,
        # A bad value is not repeated in errors: it may be a secret, and a model-level check
        # would otherwise quote every setting (the last ones whole).
        hide_input_in_errors=True,
        # inf passes `gt=0` and then fails every timeout it is used for.
        allow_inf_nan=False,
    )

    _deployments: list[DeploymentSpec] = PrivateAttr(default_factory=list)

    # --- server
    host: str = Field("127.0.0.1", alias="HOST")
    port: int = Field(3978, alias="PORT", ge=0, le=65535)
    public_base_url: str = Field("", alias="PUBLIC_BASE_URL")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", alias="LOG_LEVEL"
    )
    log_message_text: bool = Field(False, alias="LOG_MESSAGE_TEXT")
    # Secret-bearing (it holds the instrumentation key); empty = telemetry stays in-process.
    applicationinsights_connection_string: SecretStr = Field(
        SecretStr(""), alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )

    # --- Bot Framework identity (empty app id = anonymous mode, like the Emulator)
    microsoft_app_id: str = Field("", alias="MicrosoftAppId")
    microsoft_app_password: SecretStr = Field(SecretStr(""), alias="MicrosoftAppPassword")
    microsoft_app_type: BotAppType = Field(BotAppType.MULTI_TENANT, alias="MicrosoftAppType")
    microsoft_app_tenant_id: str = Field("", alias="MicrosoftAppTenantId")
    bot_openid_metadata_url: str = Field(
        BOTFRAMEWORK_OPENID_METADATA,
        alias="BOT_OPENID_METADATA_URL",
        validation_alias=AliasChoices(
            "BOT_OPENID_METADATA_URL", "TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL"
        ),
    )
    bot_token_issuer: str = Field("https://api.botframework.com", alias="BOT_TOKEN_ISSUER")
    bot_login_authority: str = Field(
        "https://login.microsoftonline.com", alias="BOT_LOGIN_AUTHORITY"
    )

    # --- Azure OpenAI (empty endpoint = the built-in simulator)
    azure_openai_endpoint: str = Field("", alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_deployment: str = Field("gpt-4o", alias="AZURE_OPENAI_DEPLOYMENT")
    azure_openai_api_version: str = Field("2024-10-21", alias="AZURE_OPENAI_API_VERSION")
    azure_openai_api_key: SecretStr = Field(SecretStr(""), alias="AZURE_OPENAI_API_KEY")
    azure_openai_model: str = Field("gpt-4o", alias="AZURE_OPENAI_MODEL")
    azure_client_id: str = Field("", alias="AZURE_CLIENT_ID")
    model_timeout_seconds: float = Field(60.0, alias="MODEL_TIMEOUT_SECONDS", gt=0)
    max_output_tokens: int = Field(1024, alias="MAX_OUTPUT_TOKENS", gt=0)
    history_token_budget: int = Field(6000, alias="HISTORY_TOKEN_BUDGET", gt=0)
    history_max_messages: int = Field(40, alias="HISTORY_MAX_MESSAGES", gt=0, le=500)
    max_message_chars: int = Field(8000, alias="MAX_MESSAGE_CHARS", gt=0)

    # --- content filters
    # Annotations at or above this severity flag the conversation for review even when Azure did
    # not block anything (safe | low | medium | high).
    filter_review_severity: Literal["safe", "low", "medium", "high"] = Field(
        "medium", alias="FILTER_REVIEW_SEVERITY"
    )
    # When Azure says "the contents are not filtered" (the filter itself failed): deliver the
    # answer and flag the conversation, or withhold the answer.
    filter_error_policy: Literal["deliver", "withhold"] = Field(
        "deliver", alias="FILTER_ERROR_POLICY"
    )

    # --- model deployments and routing
    deployments_file: Path | None = Field(None, alias="DEPLOYMENTS_FILE")
    router_breaker_failures: int = Field(3, alias="ROUTER_BREAKER_FAILURES", gt=0)
    router_breaker_open_seconds: float = Field(30.0, alias="ROUTER_BREAKER_OPEN_SECONDS", gt=0)
    router_default_cooldown_seconds: float = Field(
        10.0, alias="ROUTER_DEFAULT_COOLDOWN_SECONDS", ge=0
    )
    # An answer still streaming when it passes is kept as far as it got (partial). Teams streams
    # have their own limit whatever this is (bot.streaming.TEAMS_STREAM_TIME_LIMIT_SECONDS).
    model_deadline_seconds: float = Field(90.0, alias="MODEL_DEADLINE_SECONDS", gt=0)

    # --- prompts
    system_prompt_file: Path = Field(
        PROJECT_ROOT / "chat" / "prompts" / "system.md.j2", alias="SYSTEM_PROMPT_FILE"
    )
    organization_name: str = Field("Contoso", alias="ORGANIZATION_NAME")
    assistant_name: str = Field("Contoso Assistant", alias="ASSISTANT_NAME")

    # --- enterprise controls (controls/, dialogs/); quotas: 0 = unlimited
    quota_user_requests_per_minute: int = Field(30, alias="QUOTA_USER_REQUESTS_PER_MINUTE", ge=0)
    quota_user_tokens_per_day: int = Field(1_000_000, alias="QUOTA_USER_TOKENS_PER_DAY", ge=0)
    quota_tenant_tokens_per_day: int = Field(0, alias="QUOTA_TENANT_TOKENS_PER_DAY", ge=0)
    # Empty allow-list = allow all.
    allowed_tenant_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="ALLOWED_TENANT_IDS"
    )
    allowed_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="ALLOWED_CHANNELS"
    )
    # Per-tenant quotas and system prompt (YAML); validated at start-up.
    tenant_policy_file: Path | None = Field(None, alias="TENANT_POLICY_FILE")
    # The usage policy users must accept (YAML: version, text.en, text.ja); none = no consent step.
    usage_policy_file: Path | None = Field(None, alias="USAGE_POLICY_FILE")

    # --- embedded simulator (used only when AZURE_OPENAI_ENDPOINT is empty)
    simulator_ttft_ms: float = Field(300.0, alias="SIMULATOR_TTFT_MS", ge=0)
    simulator_tokens_per_second: float = Field(60.0, alias="SIMULATOR_TOKENS_PER_SECOND", ge=0)

    # --- storage (SQLite under DATA_DIR unless COSMOS_ENDPOINT is set)
    data_dir: Path = Field(PROJECT_ROOT / "data", alias="DATA_DIR")
    sqlite_path: Path | None = Field(None, alias="SQLITE_PATH")
    # Cosmos DB takes a time to live of at most 2^31 - 1 seconds (24,855 days and a bit).
    retention_days: int = Field(0, alias="RETENTION_DAYS", ge=0, le=MAX_RETENTION_DAYS)
    cosmos_endpoint: str = Field("", alias="COSMOS_ENDPOINT")
    cosmos_key: SecretStr = Field(SecretStr(""), alias="COSMOS_KEY")
    cosmos_database: str = Field("chat", alias="COSMOS_DATABASE")
    cosmos_messages_container: str = Field("messages", alias="COSMOS_MESSAGES_CONTAINER")
    cosmos_conversations_container: str = Field(
        "conversations", alias="COSMOS_CONVERSATIONS_CONTAINER"
    )
    cosmos_botstate_container: str = Field("botstate", alias="COSMOS_BOTSTATE_CONTAINER")
    cosmos_usage_container: str = Field("usage", alias="COSMOS_USAGE_CONTAINER")
    cosmos_audit_container: str = Field("audit", alias="COSMOS_AUDIT_CONTAINER")
    # None = decide by auth: on for a key-authenticated emulator, off with Entra ID (RBAC cannot
    # create containers; the infrastructure does).
    cosmos_create_containers: bool | None = Field(None, alias="COSMOS_CREATE_CONTAINERS")
    # Only for local emulators/protocol servers with self-signed certificates.
    cosmos_verify_tls: bool = Field(True, alias="COSMOS_VERIFY_TLS")

    # --- turn processing
    # Processes serving the port (forked from one parent). More than one uses more cores; state
    # that lives in one process (built-in Direct Line, local admin link, random secrets) must
    # then live outside it: see `_workers_share_no_process_state`.
    app_workers: int = Field(1, alias="APP_WORKERS", ge=1, le=32)
    turn_concurrency: int = Field(64, alias="TURN_CONCURRENCY", gt=0)
    turn_deadline_seconds: float = Field(120.0, alias="TURN_DEADLINE_SECONDS", gt=0)
    shutdown_grace_seconds: float = Field(20.0, alias="SHUTDOWN_GRACE_SECONDS", ge=0)
    dedupe_window: int = Field(10_000, alias="DEDUPE_WINDOW", gt=0)

    # --- admin review sub-app (/admin)
    admin_auth_mode: AdminAuthMode = Field(AdminAuthMode.LOCAL, alias="ADMIN_AUTH_MODE")
    admin_oidc_metadata_url: str = Field(ENTRA_OPENID_METADATA, alias="ADMIN_OIDC_METADATA_URL")
    admin_oidc_client_id: str = Field("", alias="ADMIN_OIDC_CLIENT_ID")
    admin_oidc_tenant_id: str = Field("", alias="ADMIN_OIDC_TENANT_ID")
    admin_oidc_client_secret: SecretStr = Field(SecretStr(""), alias="ADMIN_OIDC_CLIENT_SECRET")
    # Empty = random per process: sessions end on restart.
    admin_session_secret: SecretStr = Field(SecretStr(""), alias="ADMIN_SESSION_SECRET")
    admin_pseudonymize: bool = Field(True, alias="ADMIN_PSEUDONYMIZE")
    # Empty = random per process: pseudonyms change on restart.
    admin_pseudonym_key: SecretStr = Field(SecretStr(""), alias="ADMIN_PSEUDONYM_KEY")
    # Keys ADMIN_PSEUDONYM_KEY had before a rotation (comma-separated): their pseudonyms are still
    # read (filters, reveals, a person's audit records), never made.
    admin_pseudonym_previous_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, alias="ADMIN_PSEUDONYM_PREVIOUS_KEYS"
    )
    # appservice mode: proxies that append to X-Forwarded-For (2 behind Application Gateway).
    admin_trusted_proxy_hops: int = Field(1, alias="ADMIN_TRUSTED_PROXY_HOPS", ge=1, le=5)

    # --- web chat widget and Direct Line
    # local = one fixed development user; appservice = App Service Authentication (Entra ID).
    webchat_auth_mode: WebChatAuthMode = Field(WebChatAuthMode.LOCAL, alias="WEBCHAT_AUTH_MODE")
    # Empty = random per process: open web chat sessions end on restart (set it on many instances).
    webchat_token_secret: SecretStr = Field(SecretStr(""), alias="WEBCHAT_TOKEN_SECRET")
    webchat_trusted_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="WEBCHAT_TRUSTED_ORIGINS"
    )
    # Set = the page talks to Azure Bot Service's Direct Line instead of the built-in endpoint.
    direct_line_secret: SecretStr = Field(SecretStr(""), alias="DIRECT_LINE_SECRET")
    direct_line_endpoint: str = Field(
        "https://directline.botframework.com/v3/directline", alias="DIRECT_LINE_ENDPOINT"
    )

    # Trusted reply targets. In anonymous mode nothing vouches for an activity's serviceUrl,
    # so replies only go to these hosts (loopback by default: Emulator, tests, Direct Line).
    anonymous_service_url_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        alias="ANONYMOUS_SERVICE_URL_HOSTS",
    )

    @field_validator("anonymous_service_url_hosts", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        return _csv(value)

    @field_validator("anonymous_service_url_hosts")
    @classmethod
    def _reply_hosts_are_hosts(cls, value: list[str]) -> list[str]:
        # The connector compares the serviceUrl's host (lower-cased, no port, an IPv6 address
        # without brackets) with each entry: a URL, `host:port` or `LocalHost` would never match.
        hosts = [_reply_host(number, entry) for number, entry in enumerate(value, start=1)]
        return list(dict.fromkeys(hosts))

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: object) -> object:
        # Python's logging knows the names in capitals only; `info` means INFO.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "microsoft_app_type",
        "filter_review_severity",
        "filter_error_policy",
        "admin_auth_mode",
        "webchat_auth_mode",
        mode="before",
    )
    @classmethod
    def _choice_in_any_case(cls, value: object, info: ValidationInfo) -> object:
        assert info.field_name is not None
        return _in_canonical_case(value, _choices(cls.model_fields[info.field_name].annotation))

    @field_validator("webchat_trusted_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return _csv(value)

    @field_validator("webchat_trusted_origins")
    @classmethod
    def _origins_as_browsers_send_them(cls, value: list[str]) -> list[str]:
        # Compared as strings (CORS) and copied into the CSP: `HTTPS://Intranet.contoso.com/`
        # would match no browser's Origin header.
        origins: list[str] = []
        for number, entry in enumerate(value, start=1):
            origin = _origin(entry)
            if origin is None:
                raise ValueError(f"entry {number} {NOT_AN_ORIGIN}")
            if origin not in origins:
                origins.append(origin)
        return origins

    @field_validator("allowed_tenant_ids", "allowed_channels", mode="before")
    @classmethod
    def _split_allow_lists(cls, value: object) -> object:
        entries = _csv(value)
        if isinstance(value, str) and value.strip() and not entries:
            # `,` (a template's variables left empty, say) would read as an empty list, which
            # allows everyone: the opposite of what setting an allow-list is for.
            raise ValueError(
                "names no entry (only commas or spaces): an empty list allows all, so leave it"
                " empty for that, or list what is allowed"
            )
        return entries

    @field_validator("allowed_channels")
    @classmethod
    def _channels_this_app_serves(cls, value: list[str]) -> list[str]:
        channels = [_known_channel(number, entry) for number, entry in enumerate(value, start=1)]
        return list(dict.fromkeys(channels))

    @field_validator("allowed_tenant_ids")
    @classmethod
    def _tenant_ids_are_guids(cls, value: list[str]) -> list[str]:
        # Every tenant id a channel sends is a GUID: an entry that is not one matches nobody, and
        # `a;b` (one entry) would refuse every user.
        tenants = [_tenant_id(number, entry) for number, entry in enumerate(value, start=1)]
        return list(dict.fromkeys(tenants))

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url_is_an_origin(cls, value: str) -> str:
        # Joined with root paths (`/v3/directline`, `/admin/...`) into what browsers are sent,
        # and compared as an origin: `assistant.contoso.com/` would give them `assistant...`
        # without a scheme. The app serves from the root, so a path would not reach it either.
        if not value.strip():
            return ""
        origin = _origin(value.strip())
        if origin is None:
            raise ValueError(NOT_A_PUBLIC_BASE_URL)
        return origin

    @field_validator("tenant_policy_file", "usage_policy_file", mode="before")
    @classmethod
    def _empty_file_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "applicationinsights_connection_string",
        "microsoft_app_password",
        "azure_openai_api_key",
        "cosmos_key",
        "admin_oidc_client_secret",
        "admin_session_secret",
        "admin_pseudonym_key",
        "webchat_token_secret",
        "direct_line_secret",
    )
    @classmethod
    def _not_an_unresolved_key_vault_reference(cls, value: SecretStr) -> SecretStr:
        if _is_key_vault_reference(value.get_secret_value()):
            raise ValueError(UNRESOLVED_KEY_VAULT_REFERENCE)
        return value

    @field_validator("webchat_token_secret", "admin_session_secret", "admin_pseudonym_key")
    @classmethod
    def _signing_key_is_long(cls, value: SecretStr) -> SecretStr:
        # HMAC keys: a short one can be guessed. azd generates 64 characters for the admin keys.
        if value.get_secret_value() and len(value.get_secret_value()) < MIN_KEY_CHARS:
            raise ValueError(f"must be at least {MIN_KEY_CHARS} characters (or empty: random)")
        return value

    @field_validator("admin_pseudonym_previous_keys", mode="before")
    @classmethod
    def _split_previous_keys(cls, value: object) -> object:
        if isinstance(value, str) and _is_key_vault_reference(value):
            raise ValueError(UNRESOLVED_KEY_VAULT_REFERENCE)
        return _csv(value)

    @field_validator("admin_pseudonym_previous_keys")
    @classmethod
    def _previous_keys_are_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        # Each as ADMIN_PSEUDONYM_KEY is checked; an entry is named by its place, never its value.
        for number, key in enumerate(value, start=1):
            if _is_key_vault_reference(key.get_secret_value()):
                raise ValueError(f"entry {number} {UNRESOLVED_KEY_VAULT_REFERENCE}")
            if len(key.get_secret_value()) < MIN_KEY_CHARS:
                raise ValueError(f"entry {number} must be at least {MIN_KEY_CHARS} characters")
        return value

    @field_validator("system_prompt_file")
    @classmethod
    def _system_prompt_is_readable(cls, value: Path) -> Path:
        # Read only once the app builds its services: without this, a traceback from there.
        try:
            value.open("rb").close()
        except OSError as exc:
            raise ValueError(f"the file cannot be read ({exc.strerror})") from None
        return value

    @field_validator("direct_line_endpoint")
    @classmethod
    def _direct_line_is_https_or_loopback(cls, value: str) -> str:
        return _https_or_loopback(value)

    @field_validator("azure_openai_endpoint")
    @classmethod
    def _endpoint_is_https_or_loopback(cls, value: str) -> str:
        return _https_or_loopback(value) if value else value

    @field_validator("azure_openai_api_version")
    @classmethod
    def _api_version_is_one(cls, value: str) -> str:
        return _api_version(value.strip())

    @field_validator("cosmos_endpoint")
    @classmethod
    def _cosmos_is_https_or_loopback(cls, value: str) -> str:
        # The SDK's own refusal of a bad URL is a traceback that quotes it.
        return _https_or_loopback(value) if value else value

    @field_validator("bot_openid_metadata_url", "bot_login_authority", "admin_oidc_metadata_url")
    @classmethod
    def _identity_url_is_https_without_user_info(cls, value: str, info: ValidationInfo) -> str:
        # Signing keys fetched over plain http could be replaced on the way (and then any token
        # taken, its serviceUrl too: the bot's own token would go there), and the login
        # authority is sent the app's secret.
        return _https_or_loopback(value, query_allowed=info.field_name == "admin_oidc_metadata_url")

    @field_validator("bot_token_issuer")
    @classmethod
    def _token_issuer_is_https(cls, value: str) -> str:
        # Compared with every channel token's `iss` claim: anything else refuses every message.
        # Kept as written (no trailing slash removed): the claim is compared as a string.
        _https_or_loopback(value)
        return value

    @field_validator("organization_name", "assistant_name")
    @classmethod
    def _name_is_not_blank(cls, value: str) -> str:
        # In every welcome, the web chat page and the system prompt: a blank one reads
        # `こんにちは。   の社内AIアシスタント`.
        if not value.strip():
            raise ValueError("must not be blank: it is shown to users in the welcome")
        return value

    @model_validator(mode="after")
    def _bot_identity_is_complete(self) -> Settings:
        if not self.microsoft_app_id:
            return self
        if self.microsoft_app_type is BotAppType.USER_ASSIGNED_MSI:
            if self.microsoft_app_password.get_secret_value():
                raise ValueError(
                    "MicrosoftAppPassword must be empty when MicrosoftAppType is "
                    "UserAssignedMSI (the managed identity is the credential)"
                )
        elif not self.microsoft_app_password.get_secret_value():
            raise ValueError(
                f"MicrosoftAppType {self.microsoft_app_type} needs MicrosoftAppPassword"
            )
        if (
            self.microsoft_app_type is not BotAppType.MULTI_TENANT
            and not self.microsoft_app_tenant_id
        ):
            raise ValueError(
                f"MicrosoftAppType {self.microsoft_app_type} needs MicrosoftAppTenantId"
            )
        return self

    @model_validator(mode="after")
    def _deadlines_nest(self) -> Settings:
        # The turn must outlive its model calls, with time left to store the prompt's outcome
        # and tell the user why: past the turn's deadline they get an internal error instead.
        if self.model_deadline_seconds >= self.turn_deadline_seconds:
            raise ValueError(
                f"MODEL_DEADLINE_SECONDS ({self.model_deadline_seconds:g}) must be less than"
                f" TURN_DEADLINE_SECONDS ({self.turn_deadline_seconds:g})"
            )
        return self

    @model_validator(mode="after")
    def _token_limits_admit_a_message(self) -> Settings:
        # Every message reserves MAX_OUTPUT_TOKENS and at least a token of prompt
        # (controls.quotas): a daily limit no larger would refuse every message of everyone it
        # applies to. (The tenant policy file's limits are checked the same way: controls.policy.)
        for name, limit in (
            ("QUOTA_USER_TOKENS_PER_DAY", self.quota_user_tokens_per_day),
            ("QUOTA_TENANT_TOKENS_PER_DAY", self.quota_tenant_tokens_per_day),
        ):
            if 0 < limit <= self.max_output_tokens:
                raise ValueError(
                    f"{name} ({limit:,}) must be 0 (no limit) or more than MAX_OUTPUT_TOKENS "
                    f"({self.max_output_tokens:,}): every message reserves MAX_OUTPUT_TOKENS "
                    "tokens and its prompt, so no message could ever be answered"
                )
        return self

    @model_validator(mode="after")
    def _admin_oidc_is_complete(self) -> Settings:
        if self.admin_auth_mode is not AdminAuthMode.OIDC:
            return self
        if not self.admin_oidc_client_id:
            raise ValueError("ADMIN_AUTH_MODE=oidc needs ADMIN_OIDC_CLIENT_ID")
        if "{tenant}" in self.admin_oidc_metadata_url and not self.admin_oidc_tenant_id:
            raise ValueError("ADMIN_AUTH_MODE=oidc needs ADMIN_OIDC_TENANT_ID")
        if self.admin_oidc_tenant_id.strip().lower() in ENTRA_SHARED_TENANTS:
            # Their metadata vouches for tokens of every tenant (or every personal account).
            raise ValueError(
                "ADMIN_OIDC_TENANT_ID must be the admin app registration's own tenant (its "
                "Directory (tenant) ID), not common, organizations or consumers: those let "
                "users of other tenants sign in"
            )
        return self

    @model_validator(mode="after")
    def _workers_share_no_process_state(self) -> Settings:
        """Several workers answer requests at random: whatever one process keeps for a user
        must not be needed by the next request. (The order of one conversation's turns and the
        redelivery cache need nothing here: each conversation's activities go to the worker
        that owns it, bot/peers.py.)"""
        if self.app_workers == 1:
            return self
        needs = []
        if not self.uses_azure_direct_line:
            # (So WEBCHAT_TOKEN_SECRET, which only signs the built-in one's tokens, is not
            # needed: with Azure's Direct Line the page hands out Azure's tokens.)
            needs.append("DIRECT_LINE_SECRET (the built-in Direct Line keeps chats in memory)")
        if self.admin_auth_mode is AdminAuthMode.LOCAL:
            # The local one-time link is remembered per process (sign-outs are in the store).
            needs.append("ADMIN_AUTH_MODE=appservice or oidc")
        if not self.admin_session_secret.get_secret_value():
            needs.append("ADMIN_SESSION_SECRET")
        if self.admin_pseudonymize and not self.admin_pseudonym_key.get_secret_value():
            needs.append("ADMIN_PSEUDONYM_KEY")
        if needs:
            raise ValueError(f"APP_WORKERS={self.app_workers} needs " + "; ".join(needs))
        return self

    # --- derived values: one place decides, everyone else asks

    @model_validator(mode="after")
    def _deployments_file_is_valid(self) -> Settings:
        self._deployments = load_deployments(self.deployments_file) if self.deployments_file else []
        return self

    @property
    def deployments(self) -> list[DeploymentSpec]:
        """The model deployments in priority order: from DEPLOYMENTS_FILE, else the single
        AZURE_OPENAI_* deployment (empty when the built-in simulator is used)."""
        if self._deployments:
            return self._deployments
        if not self.azure_openai_endpoint:
            return []
        key = self.azure_openai_api_key.get_secret_value()
        return [
            DeploymentSpec(
                name="default",
                endpoint=self.azure_openai_endpoint,
                deployment=self.azure_openai_deployment,
                api_version=self.azure_openai_api_version,
                model=self.azure_openai_model,
                api_key=SecretStr(key) if key else None,
            )
        ]

    @property
    def uses_simulator(self) -> bool:
        return not self.azure_openai_endpoint and not self.deployments_file

    @property
    def bot_auth_enabled(self) -> bool:
        return bool(self.microsoft_app_id)

    @property
    def uses_cosmos(self) -> bool:
        return bool(self.cosmos_endpoint)

    @property
    def cosmos_should_create_containers(self) -> bool:
        if self.cosmos_create_containers is not None:
            return self.cosmos_create_containers
        return bool(self.cosmos_key.get_secret_value())

    @property
    def admin_oidc_metadata(self) -> str:
        return self.admin_oidc_metadata_url.replace("{tenant}", self.admin_oidc_tenant_id)

    @property
    def uses_azure_direct_line(self) -> bool:
        return bool(self.direct_line_secret.get_secret_value())

    @property
    def sqlite_file(self) -> Path:
        return self.sqlite_path or (self.data_dir / "chat.db")


def load_settings() -> Settings:
    """Settings for the running app: environment variables, then a `.env` file if present.
    Raises ConfigurationError, one line per problem, for what the operator must fix."""
    try:
        return Settings(_env_file=PROJECT_ROOT / ".env")  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigurationError("\n".join(explain_validation_error(exc))) from None
