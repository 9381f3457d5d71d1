"""Policy files and allow-lists, validated at start-up: a bad file stops the app with a clear
message instead of being half-applied.

`TENANT_POLICY_FILE` (YAML) holds per-tenant overrides::

    tenants:
      "72f988bf-86f1-41af-91ab-2d7cd011db47":
        tokens_per_day: 5000000          # the whole tenant, per UTC day
        user_tokens_per_day: 200000      # each user of that tenant
        user_requests_per_minute: 10
        system_prompt_file: prompts/fabrikam.md.j2   # relative to this file

`USAGE_POLICY_FILE` (YAML) is the usage policy users must accept before their first model call::

    version: "2026-11"
    text:
      en: "..."
      ja: "..."
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)


class PolicyFileError(ValueError):
    """A policy file is missing, unreadable or invalid; the message says which and where."""


def normalize_tenant(tenant_id: str) -> str:
    # Entra tenant ids are GUIDs; channels send them in either case.
    return tenant_id.strip().lower()


# What a channel sends as the tenant (normalized): a policy under any other key (a domain name,
# a GUID with a character missing) would never apply, and its tenant would silently get the
# defaults. config.py checks ALLOWED_TENANT_IDS the same way.
_TENANT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict: YAML's `true` would otherwise be taken as 1 (a limit of one message a minute).
    tokens_per_day: int | None = Field(None, ge=0, strict=True)
    user_tokens_per_day: int | None = Field(None, ge=0, strict=True)
    user_requests_per_minute: int | None = Field(None, ge=0, strict=True)
    system_prompt_file: Path | None = None


class TenantPolicies(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)

    def for_tenant(self, tenant_id: str) -> TenantPolicy | None:
        return self.tenants.get(normalize_tenant(tenant_id)) if tenant_id else None

    def prompt_templates(self) -> dict[str, Path]:
        """Tenant id -> system prompt template, for tenants that have their own."""
        return {
            tenant: policy.system_prompt_file
            for tenant, policy in self.tenants.items()
            if policy.system_prompt_file is not None
        }


def _version(value: Any) -> Any:
    # YAML has already turned an unquoted `1.10` into the number 1.1 (and `2026-11-01` into a
    # date, `yes` into true): users would be shown another version than the file's, and going
    # from 1.1 to 1.10 would ask no one again. A whole number is text by now
    # (`load_usage_policy` puts back what the file writes), unless it came from elsewhere.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(
            f'YAML reads it as {_yaml_kind(value)}, not as text: quote it, e.g. version: "1.10"'
        )
    return value


def _yaml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, date):
        return "a date"
    return "nothing" if value is None else "a list or mapping"


_LANGUAGES = {"en": "English", "ja": "Japanese"}
# Zero-width characters, which `str.strip` keeps: a text of only these shows nothing.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def _blank(value: str) -> bool:
    """Whether a text shows nothing: only spaces (full-width ones too) and zero-width characters."""
    return not value.strip().strip(_INVISIBLE).strip()


class PolicyText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    en: str = Field(min_length=1)
    ja: str = Field(min_length=1)

    @field_validator("en", "ja")
    @classmethod
    def _not_blank(cls, value: str, info: ValidationInfo) -> str:
        # Users would be asked to accept a policy that says nothing. (str.strip also takes the
        # full-width space of Japanese text.)
        if _blank(value):
            language = _LANGUAGES[info.field_name or ""]
            raise ValueError(f"the {language} text is blank (only spaces)")
        return value


class UsagePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, BeforeValidator(_version)] = Field(min_length=1)
    text: PolicyText

    @field_validator("version")
    @classmethod
    def _version_not_blank(cls, value: str) -> str:
        if _blank(value):
            raise ValueError("the version is blank (only spaces)")
        if not value.isprintable():
            # It is shown to users and recorded with each acceptance, on one line.
            raise ValueError("the version holds a line break or another control character")
        return value

    def text_for(self, language: str) -> str:
        return self.text.ja if language == "ja" else self.text.en


def _read_yaml(path: Path, setting: str) -> Any:
    return _parse_yaml(_read_text(path, setting), path, setting)


def _read_text(path: Path, setting: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(f"{setting}: cannot read {path}: {exc.strerror}") from exc


def _parse_yaml(raw: str, path: Path, setting: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise PolicyFileError(f"{setting}: {path} is not valid YAML{where}") from exc


def _explain(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or '(top level)'}: "
        f"{e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
    )


def load_tenant_policies(path: Path | None, max_output_tokens: int = 0) -> TenantPolicies:
    """`max_output_tokens`: every message reserves that many tokens and its prompt, so a daily
    token limit no larger (not 0, which is no limit) could never admit one and is refused."""
    if path is None:
        return TenantPolicies()
    setting = "TENANT_POLICY_FILE"
    data = _read_yaml(path, setting)
    try:
        policies = TenantPolicies.model_validate(data or {})
    except ValidationError as exc:
        raise PolicyFileError(f"{setting}: {path} is invalid: {_explain(exc)}") from exc
    tenants: dict[str, TenantPolicy] = {}
    for tenant, policy in policies.tenants.items():
        key = normalize_tenant(tenant)
        if not key:
            raise PolicyFileError(f"{setting}: {path} has an empty tenant id")
        if not _TENANT_ID.fullmatch(key):
            hint = "; a domain name is not one: channels send the tenant's id" if "." in key else ""
            raise PolicyFileError(
                f"{setting}: {path}: tenants.{tenant} is not an Entra tenant id (a GUID: the "
                f"tenant's Directory (tenant) ID, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx){hint}"
            )
        if key in tenants:
            raise PolicyFileError(f"{setting}: {path} lists tenant {tenant} twice")
        for field in ("tokens_per_day", "user_tokens_per_day"):
            limit = getattr(policy, field)
            if limit and limit <= max_output_tokens:
                raise PolicyFileError(
                    f"{setting}: {path}: tenants.{tenant}.{field} ({limit:,}) must be 0 (no "
                    f"limit) or more than MAX_OUTPUT_TOKENS ({max_output_tokens:,}): every "
                    "message reserves MAX_OUTPUT_TOKENS tokens and its prompt, so no message "
                    "could ever be answered"
                )
        template = policy.system_prompt_file
        if template is not None:
            template = template if template.is_absolute() else path.parent / template
            if not template.is_file():
                raise PolicyFileError(
                    f"{setting}: {path}: tenants.{tenant}.system_prompt_file: "
                    f"{template} does not exist"
                )
            policy = policy.model_copy(update={"system_prompt_file": template.resolve()})
        tenants[key] = policy
    return TenantPolicies(tenants=tenants)


def load_usage_policy(path: Path | None) -> UsagePolicy | None:
    """None when no file is configured: then there is no consent step."""
    if path is None:
        return None
    setting = "USAGE_POLICY_FILE"
    raw = _read_text(path, setting)
    data = _parse_yaml(raw, path, setting)
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool):
        data["version"] = _version_as_written(raw)
    try:
        return UsagePolicy.model_validate(data)
    except ValidationError as exc:
        raise PolicyFileError(f"{setting}: {path} is invalid: {_explain(exc)}") from exc


def _version_as_written(raw: str) -> str:
    """The top-level `version` as the file writes it. YAML reads a whole number in other forms
    than plain digits (`010` is 8, an octal; `1_000` is 1000): users would be shown, and consent
    recorded for, a version the file does not name."""
    document = yaml.compose(raw, Loader=yaml.SafeLoader)
    written = ""
    for key, value in document.value if isinstance(document, yaml.MappingNode) else []:
        # The last one wins, as when YAML reads the file.
        if isinstance(key, yaml.ScalarNode) and key.value == "version":
            written = value.value
    return written


@dataclass(frozen=True)
class AccessPolicy:
    """Allow-lists of Entra tenant ids and channel ids; an empty list allows everything."""

    allowed_tenants: frozenset[str] = frozenset()
    allowed_channels: frozenset[str] = frozenset()

    @classmethod
    def of(cls, tenants: Iterable[str], channels: Iterable[str]) -> AccessPolicy:
        return cls(
            frozenset(normalize_tenant(t) for t in tenants if t.strip()),
            frozenset(c.strip().lower() for c in channels if c.strip()),
        )

    def refusal(self, tenant_id: str, channel_id: str) -> str | None:
        """The refusal event for a message from elsewhere, or None when it may go on."""
        if self.allowed_channels and channel_id.lower() not in self.allowed_channels:
            return "channel_refused"
        if self.allowed_tenants and normalize_tenant(tenant_id) not in self.allowed_tenants:
            return "tenant_refused"
        return None


@dataclass(frozen=True)
class PolicyFiles:
    """What the policy files say, read once at start-up."""

    tenants: TenantPolicies
    usage: UsagePolicy | None
