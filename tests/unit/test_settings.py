from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from config import PROJECT_ROOT, Settings, explain_validation_error


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_are_the_embedded_mode() -> None:
    s = settings()
    assert s.uses_simulator and not s.uses_cosmos and not s.bot_auth_enabled
    assert s.port == 3978 and s.host == "127.0.0.1"
    assert s.sqlite_file == PROJECT_ROOT / "data" / "chat.db"


def test_an_empty_value_in_the_environment_or_env_file_keeps_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("HOST=\nDATA_DIR=\nAPP_WORKERS=\nDEPLOYMENTS_FILE=\n", encoding="utf-8")
    monkeypatch.setenv("PORT", "")
    monkeypatch.setenv("LOG_MESSAGE_TEXT", "")
    loaded = Settings(_env_file=env_file)  # type: ignore[call-arg]
    defaults = settings()
    assert (loaded.host, loaded.port, loaded.data_dir) == ("127.0.0.1", 3978, defaults.data_dir)
    assert loaded.app_workers == 1 and loaded.log_message_text is False
    assert loaded.deployments == defaults.deployments


def test_every_setting_is_documented_in_readme_and_env_sample() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    sample = (PROJECT_ROOT / ".env.sample").read_text(encoding="utf-8")
    for field in Settings.model_fields.values():
        assert f"`{field.alias}`" in readme, field.alias
        assert re.search(rf"^#? ?{re.escape(str(field.alias))}=", sample, re.M), field.alias


@pytest.mark.parametrize("endpoint", ["http://contoso.openai.azure.com", "ftp://x", "not a url"])
def test_model_endpoint_must_be_https_except_loopback(endpoint: str) -> None:
    with pytest.raises(ValidationError, match="AZURE_OPENAI_ENDPOINT"):
        settings(AZURE_OPENAI_ENDPOINT=endpoint)
    assert settings(AZURE_OPENAI_ENDPOINT="http://127.0.0.1:8000/").azure_openai_endpoint == (
        "http://127.0.0.1:8000"
    )


def test_bot_identity_must_be_complete() -> None:
    with pytest.raises(ValidationError, match="needs MicrosoftAppPassword"):
        settings(MicrosoftAppId="app")
    with pytest.raises(ValidationError, match="needs MicrosoftAppTenantId"):
        settings(MicrosoftAppId="app", MicrosoftAppPassword="p", MicrosoftAppType="SingleTenant")
    with pytest.raises(ValidationError, match="must be empty"):
        settings(
            MicrosoftAppId="app",
            MicrosoftAppPassword="p",
            MicrosoftAppType="UserAssignedMSI",
            MicrosoftAppTenantId="t",
        )
    msi = settings(
        MicrosoftAppId="app", MicrosoftAppType="UserAssignedMSI", MicrosoftAppTenantId="t"
    )
    assert msi.bot_auth_enabled


def test_the_model_deadline_must_end_before_the_turns() -> None:
    with pytest.raises(ValidationError, match=r"MODEL_DEADLINE_SECONDS \(120\) must be less than"):
        settings(MODEL_DEADLINE_SECONDS=120)
    with pytest.raises(ValidationError, match="TURN_DEADLINE_SECONDS"):
        settings(TURN_DEADLINE_SECONDS=60)
    assert settings(MODEL_DEADLINE_SECONDS=30, TURN_DEADLINE_SECONDS=60).turn_deadline_seconds == 60


def test_the_log_level_is_one_that_logging_knows_in_any_case() -> None:
    assert settings(LOG_LEVEL="warning").log_level == "WARNING"
    with pytest.raises(ValidationError, match="LOG_LEVEL"):
        settings(LOG_LEVEL="VERBOSE")


def test_secrets_are_not_shown_in_repr() -> None:
    s = settings(AZURE_OPENAI_API_KEY="sk-very-secret", COSMOS_KEY="cosmos-secret")
    assert "sk-very-secret" not in repr(s) and "cosmos-secret" not in repr(s)


@pytest.mark.parametrize(
    "name", ["ADMIN_SESSION_SECRET", "ADMIN_PSEUDONYM_KEY", "DIRECT_LINE_SECRET", "COSMOS_KEY"]
)
def test_an_unresolved_key_vault_reference_is_refused_as_a_secret(name: str) -> None:
    # What App Service passes on when it cannot read the secret: guessable, the same everywhere.
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-abc.vault.azure.net/secrets/some-name/)"
    with pytest.raises(ValidationError, match="unresolved Key Vault reference"):
        settings(**{name: reference})


def test_comma_separated_hosts(tmp_path: Path) -> None:
    assert settings(ANONYMOUS_SERVICE_URL_HOSTS="a, b,,c").anonymous_service_url_hosts == [
        "a",
        "b",
        "c",
    ]


WORKER_SAFE = {
    "APP_WORKERS": 2,
    "DIRECT_LINE_SECRET": "direct-line-secret-value",
    "ADMIN_AUTH_MODE": "appservice",
    "ADMIN_SESSION_SECRET": "s" * 32,
    "ADMIN_PSEUDONYM_KEY": "p" * 32,
}


def test_several_workers_need_every_per_process_state_set_from_outside() -> None:
    assert settings(**WORKER_SAFE).app_workers == 2
    for name in ("DIRECT_LINE_SECRET", "ADMIN_SESSION_SECRET"):
        with pytest.raises(ValidationError, match=f"APP_WORKERS=2 needs {name}"):
            settings(**{**WORKER_SAFE, name: ""})
    with pytest.raises(ValidationError, match="needs ADMIN_AUTH_MODE=appservice or oidc"):
        settings(**{**WORKER_SAFE, "ADMIN_AUTH_MODE": "local"})
    # Sign-outs are kept in the store, which every worker shares.
    extra = {"ADMIN_OIDC_CLIENT_ID": "client", "ADMIN_OIDC_TENANT_ID": "tenant"}
    assert settings(**{**WORKER_SAFE, **extra, "ADMIN_AUTH_MODE": "oidc"}).app_workers == 2
    assert settings(**{**WORKER_SAFE, "ADMIN_PSEUDONYMIZE": False, "ADMIN_PSEUDONYM_KEY": ""})
    with pytest.raises(ValidationError, match="needs DIRECT_LINE_SECRET"):
        settings(APP_WORKERS=2)


def test_several_workers_on_azures_direct_line_need_no_web_chat_token_secret() -> None:
    """That key signs only the built-in Direct Line's tokens, which several workers cannot use;
    the Azure deployment does not set it."""
    assert not settings(**WORKER_SAFE).webchat_token_secret.get_secret_value()


def test_the_built_in_direct_line_may_reply_to_the_interface_host_names() -> None:
    from app import _anonymous_reply_hosts

    # Its replies come back to this app on HOST: refused there, web chat would get no answer.
    assert "192.0.2.10" in _anonymous_reply_hosts(settings(HOST="192.0.2.10"))
    every_interface = settings(HOST="0.0.0.0")  # noqa: S104 (its replies use 127.0.0.1)
    assert _anonymous_reply_hosts(every_interface) == ["127.0.0.1", "localhost", "::1"]
    on_azure = settings(HOST="192.0.2.10", DIRECT_LINE_SECRET="direct-line-secret-value")
    assert "192.0.2.10" not in _anonymous_reply_hosts(on_azure)


def test_an_error_quotes_no_value_of_any_setting() -> None:
    secret = "DLsite.Azure-abcdefghijklmnop-QRSTUVWXYZ0123456789"
    with pytest.raises(ValidationError) as raised:
        # A model-level check sees every setting: pydantic would quote them all.
        settings(DIRECT_LINE_SECRET=secret, MODEL_DEADLINE_SECONDS=150)
    assert "QRSTUVWXYZ" not in str(raised.value) and "input_value" not in str(raised.value)
    with pytest.raises(ValidationError) as raised:
        settings(WEBCHAT_TOKEN_SECRET="ShortSecretXYZ123")
    assert "XYZ123" not in str(raised.value)


def test_load_settings_says_each_problem_in_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from config import ConfigurationError, load_settings

    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("WEBCHAT_TOKEN_SECRET", "ShortSecretXYZ123")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    lines = str(raised.value).splitlines()
    assert lines == [
        "PORT: Input should be a valid integer, unable to parse string as an integer",
        "WEBCHAT_TOKEN_SECRET: must be at least 32 characters (or empty: random)",
    ]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_durations_are_finite(value: str) -> None:
    with pytest.raises(ValidationError, match="MODEL_TIMEOUT_SECONDS"):
        settings(MODEL_TIMEOUT_SECONDS=value)


@pytest.mark.parametrize("name", ["ADMIN_SESSION_SECRET", "ADMIN_PSEUDONYM_KEY"])
def test_admin_keys_are_as_long_as_the_token_secret(name: str) -> None:
    with pytest.raises(ValidationError, match=rf"{name}\n.*at least 32 characters"):
        settings(**{name: "a" * 31})
    # What azd generates for the Azure deployment: 64 letters and digits.
    generated = "Zx9" * 21 + "q"
    assert getattr(settings(**{name: generated}), name.lower()).get_secret_value() == generated
    assert not getattr(settings(**{name: ""}), name.lower()).get_secret_value()


def test_an_unresolved_key_vault_reference_is_refused_as_the_telemetry_connection() -> None:
    reference = "@Microsoft.KeyVault(VaultName=kv-abc;SecretName=appinsights)"
    with pytest.raises(ValidationError, match="unresolved Key Vault reference"):
        settings(APPLICATIONINSIGHTS_CONNECTION_STRING=reference)


def test_a_missing_system_prompt_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"SYSTEM_PROMPT_FILE\n.*cannot be read"):
        settings(SYSTEM_PROMPT_FILE=tmp_path / "missing.md.j2")


def deployments_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deployments.yaml"
    path.write_text(text, encoding="utf-8")
    return path


EAST = "deployments:\n  - name: east\n    endpoint: https://east.openai.azure.com\n"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("    deployment: d\n    colour: blue\n", "colour: Extra inputs are not permitted"),
        ("    deployment: d\n    priority: first\n", "priority: Input should be a valid integer"),
    ],
)
def test_a_deployment_error_names_the_file_and_the_deployment(
    tmp_path: Path, entry: str, problem: str
) -> None:
    path = deployments_file(tmp_path, EAST + entry)
    with pytest.raises(ValidationError) as raised:
        settings(DEPLOYMENTS_FILE=path)
    assert f"DEPLOYMENTS_FILE {path}: deployments[0] (east): {problem}" in str(raised.value)


def test_a_deployment_without_an_endpoint_is_named_by_its_place_and_name(tmp_path: Path) -> None:
    path = deployments_file(
        tmp_path, EAST + "    deployment: d\n  - name: west\n    deployment: d\n"
    )
    with pytest.raises(ValidationError) as raised:
        settings(DEPLOYMENTS_FILE=path)
    assert f"DEPLOYMENTS_FILE {path}: deployments[1] (west): endpoint: Field required" in str(
        raised.value
    )


def test_a_deployments_file_that_is_not_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = deployments_file(tmp_path, "deployments:\n  - name: [east\n")
    with pytest.raises(ValidationError) as raised:
        settings(DEPLOYMENTS_FILE=path)
    assert f"DEPLOYMENTS_FILE {path} is not valid YAML at line 3" in str(raised.value)
    assert "<unicode string>" not in str(raised.value)


def test_a_key_is_never_taken_from_the_deployments_file(tmp_path: Path) -> None:
    key = "sk-FileKeyZZZ9876543210abcdef"
    path = deployments_file(tmp_path, EAST + f"    deployment: d\n    api_key: {key}\n")
    with pytest.raises(ValidationError, match="api_key must not be written in the file") as raised:
        settings(DEPLOYMENTS_FILE=path)
    assert "9876543210" not in str(raised.value)


def test_a_deployments_key_that_is_an_unresolved_key_vault_reference_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = deployments_file(tmp_path, EAST + "    deployment: d\n    api_key_env: EAST_KEY\n")
    monkeypatch.setenv("EAST_KEY", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/s/k)")
    with pytest.raises(ValidationError, match="EAST_KEY is an unresolved Key Vault reference"):
        settings(DEPLOYMENTS_FILE=path)
    monkeypatch.setenv("EAST_KEY", "a-real-key")
    [east] = settings(DEPLOYMENTS_FILE=path).deployments
    assert east.api_key is not None and east.api_key.get_secret_value() == "a-real-key"


def test_an_unexpected_error_at_start_up_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import app

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug, not a setting")

    monkeypatch.setattr(app, "serve", broken)
    monkeypatch.setattr(app, "configure_logging", lambda level: None)
    with pytest.raises(RuntimeError, match="a bug"):
        app.main()

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(app, "serve", refused)
    with pytest.raises(PermissionError):
        app.main()


@pytest.mark.parametrize("tenant", ["common", "organizations", "Organizations", "CONSUMERS"])
def test_the_admin_tenant_must_be_one_tenant_not_entras_shared_names(
    monkeypatch: pytest.MonkeyPatch, tenant: str
) -> None:
    from config import ConfigurationError, load_settings

    monkeypatch.setenv("ADMIN_AUTH_MODE", "oidc")
    monkeypatch.setenv("ADMIN_OIDC_CLIENT_ID", "admin-client-1")
    monkeypatch.setenv("ADMIN_OIDC_TENANT_ID", tenant)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    # One line naming the setting; the names it lists are the refused ones, not the value.
    assert str(raised.value).splitlines() == [
        "ADMIN_OIDC_TENANT_ID must be the admin app registration's own tenant (its Directory "
        "(tenant) ID), not common, organizations or consumers: those let users of other "
        "tenants sign in"
    ]
    one = settings(
        ADMIN_AUTH_MODE="oidc",
        ADMIN_OIDC_CLIENT_ID="admin-client-1",
        ADMIN_OIDC_TENANT_ID="7f3c2a91-5b6d-4e8f-9a0b-1c2d3e4f5a6b",
    )
    assert "/7f3c2a91-5b6d-4e8f-9a0b-1c2d3e4f5a6b/v2.0/" in one.admin_oidc_metadata


@pytest.mark.parametrize(
    ("name", "written", "canonical"),
    [
        ("FILTER_REVIEW_SEVERITY", "HIGH", "high"),
        ("FILTER_ERROR_POLICY", "Withhold", "withhold"),
        ("ADMIN_AUTH_MODE", "AppService", "appservice"),
        ("WEBCHAT_AUTH_MODE", "AppService", "appservice"),
        ("MicrosoftAppType", "multitenant", "MultiTenant"),
        ("MicrosoftAppType", " SINGLETENANT ", "SingleTenant"),
    ],
)
def test_a_choice_is_taken_in_any_case_and_kept_in_its_canonical_spelling(
    name: str, written: str, canonical: str
) -> None:
    identity = {"MicrosoftAppId": "app", "MicrosoftAppPassword": "p", "MicrosoftAppTenantId": "t"}
    loaded = settings(**{**identity, name: written})
    field = next(key for key, info in Settings.model_fields.items() if info.alias == name)
    value = getattr(loaded, field)
    assert value == canonical and str(value) == canonical


def test_admin_oidc_in_capitals_is_the_oidc_mode_with_its_checks() -> None:
    with pytest.raises(ValidationError, match="ADMIN_AUTH_MODE=oidc needs ADMIN_OIDC_CLIENT_ID"):
        settings(ADMIN_AUTH_MODE="OIDC")


def test_a_choice_that_is_none_of_them_is_still_refused() -> None:
    with pytest.raises(ValidationError, match="FILTER_REVIEW_SEVERITY"):
        settings(FILTER_REVIEW_SEVERITY="severe")


def test_trusted_origins_are_kept_as_browsers_send_them() -> None:
    loaded = settings(
        WEBCHAT_TRUSTED_ORIGINS=(
            "https://intranet.contoso.com/, HTTPS://Portal.Contoso.com, "
            "https://wiki.contoso.com:443, https://apps.contoso.com:8443/, "
            "http://localhost:8080, https://intranet.contoso.com"
        )
    )
    assert loaded.webchat_trusted_origins == [
        "https://intranet.contoso.com",
        "https://portal.contoso.com",
        "https://wiki.contoso.com",
        "https://apps.contoso.com:8443",
        "http://localhost:8080",
    ]


@pytest.mark.parametrize(
    "entry",
    [
        "intranet2.contoso.com",
        "http://intranet.contoso.com",
        "https://intranet.contoso.com/chat",
        "https://intranet.contoso.com/?x=1",
        "https://intranet.contoso.com#top",
        "https://*.contoso.com",
        "https://user@intranet.contoso.com",
        "https://intranet.contoso.com:99999",
        "ftp://intranet.contoso.com",
        "https://",
    ],
)
def test_a_trusted_origin_that_is_not_an_origin_is_refused_naming_the_setting_only(
    entry: str,
) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(WEBCHAT_TRUSTED_ORIGINS=f"https://ok.contoso.com,{entry}")
    message = str(raised.value)
    assert "WEBCHAT_TRUSTED_ORIGINS" in message and "entry 2 is not an origin" in message
    assert "intranet" not in message and "input_value" not in message


@pytest.mark.parametrize("endpoint", ["not-a-url", "http://cosmos.contoso.com", "ftp://x"])
def test_cosmos_endpoint_must_be_https_except_loopback(endpoint: str) -> None:
    with pytest.raises(ValidationError, match=r"COSMOS_ENDPOINT\n.*must be an https:// URL"):
        settings(COSMOS_ENDPOINT=endpoint)
    assert settings(COSMOS_ENDPOINT="https://127.0.0.1:8081/").cosmos_endpoint == (
        "https://127.0.0.1:8081"
    )


def test_an_allowed_channel_this_app_has_no_such_id_for_is_refused_naming_it() -> None:
    # `teams` instead of `msteams` would answer every Teams user "not available in this app".
    with pytest.raises(ValidationError) as raised:
        settings(ALLOWED_CHANNELS="teams,directline")
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith("ALLOWED_CHANNELS: entry 1 (teams) is not a channel id")
    assert "msteams, directline, webchat, emulator" in problem


def test_allowed_channels_are_taken_in_any_case_once_each() -> None:
    allowed = settings(ALLOWED_CHANNELS="MSTeams, directline,webchat,emulator,msteams")
    assert allowed.allowed_channels == ["msteams", "directline", "webchat", "emulator"]


def test_a_channel_entry_that_does_not_look_like_an_id_is_not_repeated() -> None:
    with pytest.raises(ValidationError) as raised:
        settings(ALLOWED_CHANNELS="msteams,Secret42Value=xyz")
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith("ALLOWED_CHANNELS: entry 2 is not a channel id")
    assert "Secret42" not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("tenant-a;tenant-b", "entry 1 is not an Entra tenant id"),
        (
            "72f988bf-86f1-41af-91ab-2d7cd011db47;11111111-2222-3333-4444-555555555555",
            "separate tenant ids with commas",
        ),
        (
            "72f988bf-86f1-41af-91ab-2d7cd011db47 11111111-2222-3333-4444-555555555555",
            "separate tenant ids with commas",
        ),
        ("72f988bf-86f1-41af-91ab-2d7cd011db47,contoso", "entry 2 is not an Entra tenant id"),
        ("contoso.onmicrosoft.com", "a domain name is not one"),
        ("{72f988bf-86f1-41af-91ab-2d7cd011db47}", "entry 1 is not an Entra tenant id"),
    ],
)
def test_an_allowed_tenant_that_is_not_a_tenant_id_is_refused_naming_the_entry(
    value: str, says: str
) -> None:
    # Channels send tenant ids as GUIDs: anything else matches nobody, and `a;b` refuses all.
    with pytest.raises(ValidationError) as raised:
        settings(ALLOWED_TENANT_IDS=value)
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith("ALLOWED_TENANT_IDS: ") and says in problem, problem


@pytest.mark.parametrize("name", ["ALLOWED_TENANT_IDS", "ALLOWED_CHANNELS"])
@pytest.mark.parametrize("value", [",", " , ,", ", "])
def test_an_allow_list_of_only_commas_is_refused_not_read_as_allowing_all(
    name: str, value: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(**{name: value})
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith(f"{name}: names no entry (only commas or spaces)"), problem
    assert settings(**{name: " "}).model_dump()[name.lower()] == []


def test_allowed_tenant_ids_are_guids_in_any_case_once_each() -> None:
    allowed = settings(
        ALLOWED_TENANT_IDS="72F988BF-86F1-41AF-91AB-2D7CD011DB47, "
        "11111111-2222-3333-4444-555555555555,72f988bf-86f1-41af-91ab-2d7cd011db47"
    )
    assert allowed.allowed_tenant_ids == [
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "11111111-2222-3333-4444-555555555555",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "assistant.contoso.com/",
        "assistant.contoso.com",
        "http://assistant.contoso.com",
        "ftp://assistant.contoso.com",
        "https://",
        "https://assistant.contoso.com/chat",
        "https://assistant.contoso.com/?x=1",
        "https://assistant.contoso.com/#top",
        "https://admin:Secret42Value@assistant.contoso.com",
        "https://assistant.contoso.com:notaport",
    ],
)
def test_a_public_base_url_that_is_not_the_apps_https_origin_is_refused_unquoted(
    value: str,
) -> None:
    # Pages are sent `<PUBLIC_BASE_URL>/v3/directline` and admin links: without a scheme the
    # browser gets a host it cannot reach (`wsstant.contoso.com/...` as the stream URL).
    with pytest.raises(ValidationError) as raised:
        settings(PUBLIC_BASE_URL=value)
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith("PUBLIC_BASE_URL: must be the app's public URL"), problem
    assert "Secret42" not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("https://Assistant.Contoso.com/", "https://assistant.contoso.com"),
        ("https://assistant.contoso.com:443", "https://assistant.contoso.com"),
        ("https://assistant.contoso.com:8443/", "https://assistant.contoso.com:8443"),
        ("http://localhost:3978/", "http://localhost:3978"),
        ("http://127.0.0.1:3978", "http://127.0.0.1:3978"),
        ("", ""),
    ],
)
def test_a_public_base_url_is_kept_as_its_origin_without_a_trailing_slash(
    value: str, kept: str
) -> None:
    assert settings(PUBLIC_BASE_URL=value).public_base_url == kept


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AZURE_OPENAI_ENDPOINT", "https://u:Secret42Value@contoso.openai.azure.com"),
        ("DIRECT_LINE_ENDPOINT", "https://svc:Secret42Value@directline.example/v3/directline"),
        ("COSMOS_ENDPOINT", "https://acct:Secret42Value@contoso.documents.azure.com:443/"),
        ("COSMOS_ENDPOINT", "http://Secret42Value@127.0.0.1:8081"),
        ("BOT_OPENID_METADATA_URL", "https://u:Secret42Value@login.botframework.com/v1/x"),
        ("TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL", "https://u:Secret42Value@login.example/x"),
        ("BOT_LOGIN_AUTHORITY", "https://:Secret42Value@login.microsoftonline.com"),
        ("ADMIN_OIDC_METADATA_URL", "https://u:Secret42Value@login.example/{tenant}/v2.0"),
    ],
)
def test_an_endpoint_with_a_user_name_or_password_is_refused_naming_the_setting_only(
    name: str, value: str
) -> None:
    # The endpoints are logged at start-up and DIRECT_LINE_ENDPOINT is sent to browsers.
    with pytest.raises(ValidationError) as raised:
        settings(**{name: value})
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith(f"{name}: must not hold a user name or password"), problem
    assert "Secret42" not in str(raised.value) and "input_value" not in str(raised.value)


@pytest.mark.parametrize(
    "version", ["2024-13", "latest", "v1", "2024-10-21x", "", "2025-04-01-beta"]
)
def test_a_model_api_version_that_is_none_of_azures_is_refused_naming_the_setting(
    version: str,
) -> None:
    """Azure answers a wrong api-version as it answers a deployment that does not exist (404):
    caught at start-up, not by every user's first question."""
    with pytest.raises(ValidationError) as raised:
        settings(AZURE_OPENAI_API_VERSION=version)
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith("AZURE_OPENAI_API_VERSION: must be an Azure OpenAI API"), problem


@pytest.mark.parametrize("version", ["2024-10-21", "2025-04-01-preview", " 2024-10-21 "])
def test_azures_api_versions_are_taken(version: str) -> None:
    assert settings(AZURE_OPENAI_API_VERSION=version).azure_openai_api_version == version.strip()


def test_a_deployments_api_version_that_is_none_of_azures_names_the_deployment(
    tmp_path: Path,
) -> None:
    path = deployments_file(tmp_path, EAST + "    deployment: d\n    api_version: '2024-1-5'\n")
    with pytest.raises(ValidationError) as raised:
        settings(DEPLOYMENTS_FILE=path)
    assert f"DEPLOYMENTS_FILE {path}: deployments[0] (east): api_version: must be" in (
        str(raised.value)
    )


def test_a_deployment_endpoint_with_a_password_is_refused_naming_the_deployment_only(
    tmp_path: Path,
) -> None:
    path = deployments_file(
        tmp_path,
        "deployments:\n  - name: east\n    endpoint: https://u:Secret42Value@east.example\n"
        "    deployment: d\n",
    )
    with pytest.raises(ValidationError) as raised:
        settings(DEPLOYMENTS_FILE=path)
    assert f"DEPLOYMENTS_FILE {path}: deployments[0] (east): endpoint: must not" in str(
        raised.value
    )
    assert "Secret42" not in str(raised.value)


@pytest.mark.parametrize(
    "name", ["BOT_OPENID_METADATA_URL", "BOT_LOGIN_AUTHORITY", "ADMIN_OIDC_METADATA_URL"]
)
def test_an_identity_url_must_be_https_except_on_loopback(name: str) -> None:
    """Signing keys fetched over plain http could be swapped on the way, and the login
    authority is sent the app's secret."""
    with pytest.raises(ValidationError) as raised:
        settings(**{name: "http://login.example.net/meta"})
    [problem] = explain_validation_error(raised.value)
    assert "must be an https:// URL" in problem, problem
    assert settings(**{name: "http://127.0.0.1:9/meta"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AZURE_OPENAI_ENDPOINT", "https://contoso.openai.azure.com/?subscription-key=Secret42"),
        ("COSMOS_ENDPOINT", "https://acct.documents.azure.com:443/?sig=Secret42"),
        ("DIRECT_LINE_ENDPOINT", "https://directline.example/v3/directline#Secret42"),
        ("BOT_LOGIN_AUTHORITY", "https://login.microsoftonline.com?code=Secret42"),
    ],
)
def test_an_endpoint_with_a_query_is_refused_naming_the_setting_only(name: str, value: str) -> None:
    """Endpoints are logged at start-up: a key put in a query would be published there."""
    with pytest.raises(ValidationError) as raised:
        settings(**{name: value})
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith(f"{name}: must not have a query or fragment"), problem
    assert "Secret42" not in str(raised.value)


def test_the_admin_identity_providers_metadata_may_have_a_query() -> None:
    """Entra ID's metadata takes `?appid=` for an app with its own signing keys."""
    url = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration?appid=1"
    assert settings(ADMIN_OIDC_METADATA_URL=url).admin_oidc_metadata_url == url


def test_retention_is_at_most_what_cosmos_db_can_keep_an_item() -> None:
    assert settings(RETENTION_DAYS=24855).retention_days * 86400 <= 2**31 - 1
    with pytest.raises(ValidationError, match=r"RETENTION_DAYS\n.*less than or equal to 24855"):
        settings(RETENTION_DAYS=30000)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("AZURE_OPENAI_ENDPOINT", "not-a-url", "must be an https:// URL"),
        ("COSMOS_ENDPOINT", "not-a-url", "must be an https:// URL"),
        ("DIRECT_LINE_ENDPOINT", "not-a-url", "must be an https:// URL"),
        ("BOT_OPENID_METADATA_URL", "not-a-url", "must be an https:// URL"),
        ("TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL", "not-a-url", "must be an https:// URL"),
        ("BOT_LOGIN_AUTHORITY", "not-a-url", "must be an https:// URL"),
        ("AZURE_OPENAI_API_VERSION", "latest", "must be an Azure OpenAI API version"),
        ("AZURE_OPENAI_ENDPOINT", "https://u:p@contoso.openai.azure.com", "must not hold a user"),
        ("COSMOS_ENDPOINT", "https://acct.documents.azure.com/?sig=x", "must not have a query"),
    ],
)
def test_an_endpoint_error_names_the_setting_once(name: str, value: str, problem: str) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(**{name: value})
    [said] = explain_validation_error(raised.value)
    assert said.startswith(f"{name}: {problem}"), said
    # Either spelling of the metadata URL names the setting: still once.
    named = "OPENID_METADATA_URL" if "OPENID" in name else name
    assert said.count(named) == 1, said


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("LocalHost, 127.0.0.1,::1", ["localhost", "127.0.0.1", "::1"]),
        ("DirectLine.Contoso.com,directline.contoso.com", ["directline.contoso.com"]),
        (
            "10.0.0.4,fd00::A:1,bot-connector,emulator_host",
            ["10.0.0.4", "fd00::a:1", "bot-connector", "emulator_host"],
        ),
        # As urlsplit reads `http://[0:0:0:0:0:0:0:1]:3978`'s host.
        ("0:0:0:0:0:0:0:1,FD00:0::A:1", ["::1", "fd00::a:1"]),
    ],
)
def test_anonymous_reply_hosts_are_kept_as_the_connector_compares_them(
    value: str, kept: list[str]
) -> None:
    """The connector compares a serviceUrl's host, lower-cased and without its port."""
    assert settings(ANONYMOUS_SERVICE_URL_HOSTS=value).anonymous_service_url_hosts == kept


@pytest.mark.parametrize(
    ("value", "entry"),
    [
        ("localhost,https://evil.com/path", 2),
        ("http://127.0.0.1", 1),
        ("127.0.0.1:3978", 1),
        ("localhost,[::1]", 2),
        ("local host", 1),
        ("contoso.com/bot", 1),
        ("-bad-.example", 1),
        ("user@localhost", 1),
        ("::1,fe80::1%eth0", 2),
    ],
)
def test_an_anonymous_reply_host_that_is_no_host_is_refused_naming_its_place(
    value: str, entry: int
) -> None:
    # It could never match a serviceUrl's host: replies meant for it would all be refused.
    with pytest.raises(ValidationError) as raised:
        settings(ANONYMOUS_SERVICE_URL_HOSTS=value)
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith(
        f"ANONYMOUS_SERVICE_URL_HOSTS: entry {entry} is not a host name or IP address"
    ), problem
    assert "evil" not in problem and "input_value" not in str(raised.value)


@pytest.mark.parametrize("name", ["ORGANIZATION_NAME", "ASSISTANT_NAME"])
@pytest.mark.parametrize("value", ["", "   ", "\u3000", " \t"])
def test_a_blank_organization_or_assistant_name_is_refused(name: str, value: str) -> None:
    # The welcome would read `こんにちは。   の社内AIアシスタント`.
    with pytest.raises(ValidationError) as raised:
        settings(**{name: value})
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith(f"{name}: must not be blank"), problem


@pytest.mark.parametrize(
    "value", ["not a url", "api.botframework.com", "http://api.botframework.com", "https://"]
)
def test_a_bot_token_issuer_that_is_no_https_url_is_refused(value: str) -> None:
    # Compared with every channel token's `iss`: anything else refuses every message.
    with pytest.raises(ValidationError) as raised:
        settings(BOT_TOKEN_ISSUER=value)
    [problem] = explain_validation_error(raised.value)
    assert problem.startswith("BOT_TOKEN_ISSUER: must be an https:// URL"), problem


@pytest.mark.parametrize(
    "value", ["https://api.botframework.us", "https://sts.windows.net/72f988bf/"]
)
def test_a_bot_token_issuer_is_kept_as_written(value: str) -> None:
    # Tokens' `iss` is compared as a string: Entra's issuers end with a slash.
    assert settings(BOT_TOKEN_ISSUER=value).bot_token_issuer == value
