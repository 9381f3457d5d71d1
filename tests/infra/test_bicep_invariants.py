"""Invariants of the infrastructure in infra/: private data services, content filters on every
model deployment, least-privilege roles, no secrets in outputs, app settings that config.py reads,
admin keys shared by every instance through Key Vault.

Each invariant is checked on the real templates and, to prove the check can fail, on a copy with
one deliberate mistake."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from unittest import mock

import infra_model as im
import pytest

MainCheck = Callable[[Mapping[str, im.Template]], list[str]]


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return im.read_texts()


@pytest.fixture(scope="module")
def model(texts: dict[str, str]) -> dict[str, im.Template]:
    return im.parse_texts(texts)


def settings_names() -> set[str]:
    """Environment names config.Settings reads: each field's alias, validation alias(es) or name."""
    try:
        config = importlib.import_module("config")
    except ModuleNotFoundError:  # config.py not written yet: the names issue 9 lists
        return im.REQUIRED_APP_SETTINGS - im.PLATFORM_SETTINGS
    names: set[str] = set()
    for field_name, info in config.Settings.model_fields.items():
        names.add(info.alias or field_name.upper())
        choices = getattr(info.validation_alias, "choices", None)
        if isinstance(info.validation_alias, str):
            names.add(info.validation_alias)
        elif choices:
            names.update(c for c in choices if isinstance(c, str))
    return names


def mutate(texts: Mapping[str, str], file: str, old: str, new: str) -> dict[str, im.Template]:
    assert old in texts[file], f"mutation anchor not found in {file}: {old!r}"
    changed = dict(texts)
    changed[file] = texts[file].replace(old, new, 1)
    return im.parse_texts(changed)


def test_every_bicep_file_parses_with_checkovs_parser(texts: dict[str, str]) -> None:
    assert {
        "main.bicep",
        "modules/cosmos.bicep",
        "modules/openai.bicep",
        "modules/keyvault.bicep",
    } <= texts.keys()
    im.parse_texts(texts)  # raises on any syntax pycep (and so checkov) cannot read


def test_parameters_file_names_only_main_parameters(
    texts: dict[str, str], model: dict[str, im.Template]
) -> None:
    parameters = json.loads((im.INFRA_DIR / "main.parameters.json").read_text(encoding="utf-8"))[
        "parameters"
    ]
    assert set(parameters) <= set(model["main.bicep"].parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"


def test_azure_yaml_deploys_the_bot_to_app_service() -> None:
    text = (im.INFRA_DIR.parent / "azure.yaml").read_text(encoding="utf-8")
    assert "provider: bicep" in text
    assert "host: appservice" in text
    assert "language: py" in text
    assert "'azd-service-name': 'bot'" in (im.INFRA_DIR / "modules" / "appservice.bicep").read_text(
        encoding="utf-8"
    )


def test_the_app_service_package_leaves_out_local_secrets_and_data_but_not_the_chat_bundle() -> (
    None
):
    """azd zips the working tree less .webappignore: a developer's .env, the local chat store and
    azd's generated keys must stay behind; the bundle the app serves must go (node_modules does
    not, so azure.yaml's prepackage hook copies it into webchat/vendor first)."""
    from webchat.page import BUNDLE

    root = im.INFRA_DIR.parent
    ignored = {
        line.strip()
        for line in (root / ".webappignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", "data/", ".azure/", ".git/", "node_modules/", ".venv/"} <= ignored
    assert not any(line.startswith("!") for line in ignored), "no re-includes: keep it simple"
    shipped = [BUNDLE.relative_to(root).as_posix(), "app.py", "webchat/page.py", "requirements.txt"]
    for path in shipped:
        parts = path.split("/")
        prefixes = {"/".join(parts[:n]) + "/" for n in range(1, len(parts))} | {path}
        assert not prefixes & ignored, f"{path} would be left out of the package"
    assert "prepackage:" in (root / "azure.yaml").read_text(encoding="utf-8")
    assert "run: make webchat-bundle" in (root / "azure.yaml").read_text(encoding="utf-8")
    assert "\nwebchat-bundle: $(WEBCHAT_BUNDLE)" in (root / "Makefile").read_text(encoding="utf-8")
    assert "WEBCHAT_BUNDLE := " + BUNDLE.relative_to(root).as_posix() in (
        root / "Makefile"
    ).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "check",
    [
        im.check_data_services_private,
        im.check_content_filter,
        im.check_roles,
        im.check_outputs,
        im.check_web_app_hardening,
        im.check_cosmos_containers,
        im.check_gateway_waf_passes_chat_messages,
        im.check_cosmos_data_roles,
        im.check_key_vault_grants,
        im.check_gateway_certificate_grant,
        im.check_scoped_app_roles,
        im.check_keyless_telemetry,
    ],
)
def test_invariant_holds(model: dict[str, im.Template], check: MainCheck) -> None:
    assert check(model) == []


def test_app_settings_are_the_names_config_reads(model: dict[str, im.Template]) -> None:
    assert im.check_app_settings(model, settings_names()) == []


def test_every_instance_gets_the_same_admin_keys_from_key_vault(
    model: dict[str, im.Template],
) -> None:
    assert im.check_shared_admin_keys(model, im.read_parameters_file()) == []


def model_family_name(model_name: str) -> str:
    tokens = pytest.importorskip("chat.tokens")
    return str(tokens.model_family(model_name).name)


def test_the_app_counts_tokens_with_the_deployed_models_tokenizer(
    model: dict[str, im.Template],
) -> None:
    assert im.check_model_setting(model, model_family_name) == []


def test_every_sign_in_mode_the_parameters_allow_starts_the_app(
    model: dict[str, im.Template],
) -> None:
    config = pytest.importorskip("config")
    assert im.check_auth_modes(model, config.Settings) == []


def test_the_appservice_sign_in_modes_need_app_service_authentication(
    model: dict[str, im.Template],
) -> None:
    assert im.check_appservice_mode_needs_its_authentication(model) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (  # asked for appservice, without authClientId: the headers would be anyone's
            "var effectiveAdminAuthMode = ((toLower(adminAuthMode) == 'local') || empty("
            "authClientId))",
            "var effectiveAdminAuthMode = ((toLower(adminAuthMode) == 'local') || (empty("
            "adminAuthMode) && empty(authClientId)))",
            "passes adminAuthMode that can be appservice without authClientId",
        ),
        (
            "var effectiveWebchatAuthMode = ((toLower(webchatAuthMode) == 'local') || empty("
            "authClientId)) ? 'local' : 'appservice'",
            "var effectiveWebchatAuthMode = (toLower(webchatAuthMode) == 'local') ? 'local' : "
            "'appservice'",
            "passes webchatAuthMode that can be appservice without authClientId",
        ),
    ],
)
def test_appservice_mode_check_catches(
    old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_appservice_mode_needs_its_authentication(
        mutate(texts, "main.bicep", old, new)
    )
    assert any(expected in p for p in problems), problems


def test_trusted_proxy_hops_count_the_gateway(model: dict[str, im.Template]) -> None:
    assert im.check_trusted_proxy_hops(model) == []


def test_behind_the_gateway_the_app_knows_its_public_url(model: dict[str, im.Template]) -> None:
    assert im.check_public_url_behind_gateway(model) == []


def test_the_app_listens_where_app_service_forwards(model: dict[str, im.Template]) -> None:
    assert im.check_listen_address(model) == []


def stop_margin_needed() -> float:
    """What the app does after SHUTDOWN_GRACE_SECONDS: the notices of the turns it cut short, then
    closing and the telemetry flush (as long as the parent of APP_WORKERS waits for a worker)."""
    app = pytest.importorskip("app")
    return float(app.SHUTDOWN_NOTICE_SECONDS + app.WORKER_CLOSE_SECONDS)


def test_app_service_waits_for_the_drain_and_its_notices_before_killing_the_app(
    model: dict[str, im.Template],
) -> None:
    assert im.check_stop_time_limit(model, stop_margin_needed()) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "    name: 'WEBSITES_CONTAINER_STOP_TIME_LIMIT'\n",
            "    name: 'WEBSITES_CONTAINER_STOP_TIMELIMIT'\n",
            "is not set in every deployment variant",
        ),
        ("shutdownGraceSeconds + 20))", "shutdownGraceSeconds + 5))", "after the grace period"),
        # Exactly what the app needs: App Service's kill would race the app's last deadline.
        ("shutdownGraceSeconds + 20))", "shutdownGraceSeconds + 15))", "after the grace period"),
        ("string(min(120, shutdownGraceSeconds", "string(min(300, shutdownGraceSeconds", "capped"),
        ("string(min(120, shutdownGraceSeconds + 20))", "'40'", "expected string(min(120"),
    ],
)
def test_stop_time_limit_check_catches(
    old: str, new: str, problem: str, texts: dict[str, str]
) -> None:
    broken = mutate(texts, "modules/appservice.bicep", old, new)
    problems = im.check_stop_time_limit(broken, stop_margin_needed())
    assert any(problem in p for p in problems), problems


def test_operator_settings_survive_a_provision(model: dict[str, im.Template]) -> None:
    assert im.check_operator_settings(model, im.read_parameters_file()) == []


def test_the_gateway_ip_is_an_output(model: dict[str, im.Template]) -> None:
    assert im.check_gateway_ip_output(model) == []


def test_operator_parameters_allow_what_config_allows(model: dict[str, im.Template]) -> None:
    config = pytest.importorskip("config")
    assert im.check_operator_bounds(model, config.Settings) == []


def test_app_workers_parameters_allow_what_config_allows(model: dict[str, im.Template]) -> None:
    config = pytest.importorskip("config")
    metadata = config.Settings.model_fields["app_workers"].metadata
    low = next(m.ge for m in metadata if hasattr(m, "ge"))
    high = next(m.le for m in metadata if hasattr(m, "le"))
    expected = [
        {"type": "min_value", "argument": low},
        {"type": "max_value", "argument": high},
    ]
    for file in ("main.bicep", "modules/appservice.bicep"):
        decorators = model[file].parameters["appWorkers"]["decorators"]
        assert [d for d in decorators if d["type"] in ("min_value", "max_value")] == expected


def test_an_unset_azd_variable_keeps_configs_default(model: dict[str, im.Template]) -> None:
    config = pytest.importorskip("config")
    assert im.check_operator_defaults(model, im.read_parameters_file(), config.Settings) == []


def test_inbound_ranges_come_from_the_azd_environment_too(model: dict[str, im.Template]) -> None:
    assert im.check_inbound_ranges_from_environment(model, im.read_parameters_file()) == []


def deploy_doc_variables() -> dict[str, str]:
    """azd variable -> its row in docs/deploy.md's table of the variables the templates read."""
    doc = (im.INFRA_DIR.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows[cells[0].strip("`")] = line
    return rows


def test_the_deploy_doc_lists_every_azd_variable_with_its_default() -> None:
    rows = deploy_doc_variables()
    for variable, (param, default) in im.azd_variables(im.read_parameters_file()).items():
        assert variable in rows, f"docs/deploy.md has no row for {variable} ({param})"
        cells = [c.strip() for c in rows[variable].strip().strip("|").split("|")]
        if default:
            assert cells[1] == f"`{default}`", (variable, cells[1])
        elif default == "":
            assert cells[1].startswith("empty"), (variable, cells[1])


# --- the checks catch mistakes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "modules/cosmos.bicep",
            "publicNetworkAccess: 'Disabled'",
            "publicNetworkAccess: 'Enabled'",
            "publicNetworkAccess is 'Enabled'",
        ),
        (
            "modules/openai.bicep",
            "disableLocalAuth: true",
            "disableLocalAuth: false",
            "disableLocalAuth is False",
        ),
        (
            "modules/keyvault.bicep",
            "groupId: 'vault'",
            "groupId: 'vaults'",
            "has no unconditional private endpoint (vault)",
        ),
        (
            "modules/cosmos.bicep",
            "module cosmosEndpoint 'private-endpoint.bicep' = {",
            "module cosmosEndpoint 'private-endpoint.bicep' = if (false) {",
            "has no unconditional private endpoint (Sql)",
        ),
        (
            "modules/network.bicep",
            "  'privatelink.openai.azure.com'\n"
            "  'privatelink.vaultcore.azure.net'\n], enableAppGateway",
            "  'privatelink.vaultcore.azure.net'\n], enableAppGateway",
            "privatelink.openai.azure.com is not always created",
        ),
    ],
)
def test_private_access_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_data_services_private(mutate(texts, file, old, new))
    assert any(expected in p for p in problems), problems


def test_content_filter_check_catches_a_deployment_without_policy(texts: dict[str, str]) -> None:
    broken = mutate(texts, "modules/openai.bicep", "    raiPolicyName: contentFilter.name\n", "")
    assert any("raiPolicyName" in p for p in im.check_content_filter(broken))


def test_content_filter_check_catches_an_unblocked_category(texts: dict[str, str]) -> None:
    broken = mutate(
        texts,
        "modules/openai.bicep",
        "    name: 'Indirect Attack'\n    blocking: true",
        "    name: 'Indirect Attack'\n    blocking: false",
    )
    assert any("Indirect Attack" in p for p in im.check_content_filter(broken))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'",
            "var openAiUserRoleId = 'b24988ac-6180-42a0-ab88-20f7382dd24c'",
            "assigns Contributor",
        ),
        (
            "var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'",
            "var openAiUserRoleId = 'a97b65f3-24c7-4388-baec-2e87135dc908'",
            "outside the allowed set",
        ),
    ],
)
def test_role_check_catches_broad_roles(
    old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_roles(mutate(texts, "modules/openai.bicep", old, new))
    assert any(expected in p for p in problems), problems


def test_role_check_catches_a_missing_cosmos_data_role(texts: dict[str, str]) -> None:
    broken = mutate(
        texts,
        "modules/cosmos.bicep",
        "var dataContributorRoleId = '00000000-0000-0000-0000-000000000002'",
        "var dataContributorRoleId = '00000000-0000-0000-0000-000000000001'",
    )
    assert any("Cosmos" in p for p in im.check_roles(broken))


def test_role_check_catches_the_app_identity_given_to_another_parameter(
    texts: dict[str, str],
) -> None:
    broken = mutate(
        texts,
        "main.bicep",
        "principalId: gatewayIdentity.outputs.principalId",
        "principalId: appIdentity.outputs.principalId",
    )
    assert any(
        "gatewayCertificateReader: app identity principal passed as principalId" in p
        for p in im.check_roles(broken)
    )


METRICS_PUBLISHER_SCOPE = (
    "  scope: appInsights\n  properties: {\n    roleDefinitionId: subscriptionResourceId("
    "'Microsoft.Authorization/roleDefinitions', metricsPublisherRoleId)"
)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (  # on the workspace instead of the component
            "modules/monitoring.bicep",
            METRICS_PUBLISHER_SCOPE,
            METRICS_PUBLISHER_SCOPE.replace("scope: appInsights", "scope: workspace"),
            "grants Monitoring Metrics Publisher on 'workspace'",
        ),
        (  # no scope: the whole resource group
            "modules/monitoring.bicep",
            METRICS_PUBLISHER_SCOPE,
            METRICS_PUBLISHER_SCOPE.replace("  scope: appInsights\n", ""),
            "only on a Microsoft.Insights/components resource",
        ),
        (  # on the Azure OpenAI account
            "modules/openai.bicep",
            "var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'",
            "var openAiUserRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'",
            "modules/openai.bicep:appOpenAiUser grants Monitoring Metrics Publisher on 'account'",
        ),
        (  # to API Management's identity
            "modules/apim.bicep",
            "var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'",
            "var openAiUserRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'",
            "gatewayOpenAiUser grants Monitoring Metrics Publisher to a principal other than",
        ),
        (
            "modules/monitoring.bicep",
            "    principalId: appPrincipalId\n    principalType: 'ServicePrincipal'\n",
            "    principalId: appPrincipalId\n",
            "grants Monitoring Metrics Publisher without principalType ServicePrincipal",
        ),
        (  # another role on the component: the app no longer holds the publisher role
            "modules/monitoring.bicep",
            "var metricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'",
            "var metricsPublisherRoleId = '4633458b-17de-408a-b874-0445c86b69e6'",
            "the app identity does not hold Monitoring Metrics Publisher",
        ),
    ],
)
def test_metrics_publisher_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_scoped_app_roles(mutate(texts, file, old, new))
    assert any(expected in p for p in problems), problems
    assert any(expected in p for p in im.check_roles(mutate(texts, file, old, new))), problems


AUTHENTICATION_SETTING = (
    "    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'\n"
    "    value: 'Authorization=AAD;ClientId=${identityClientId}'\n"
)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "modules/appservice.bicep",
            AUTHENTICATION_SETTING,
            AUTHENTICATION_SETTING.replace("${identityClientId}", "${tenantId}"),
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING must be",
        ),
        (  # no authentication string: the exporter would send with the instrumentation key
            "modules/appservice.bicep",
            AUTHENTICATION_SETTING,
            AUTHENTICATION_SETTING.replace(
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "APPINSIGHTS_AUTHENTICATION_STRING"
            ),
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING must be",
        ),
        (  # only in one variant
            "modules/appservice.bicep",
            "    value: 'Authorization=AAD;ClientId=${identityClientId}'\n",
            "    value: behindAppGateway ? 'Authorization=AAD;ClientId=${identityClientId}' : ''\n",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING must be",
        ),
        (  # the app module gets another identity's client id
            "main.bicep",
            "identityClientId: appIdentity.outputs.clientId",
            "identityClientId: gatewayIdentity.outputs.clientId",
            "identityClientId is not the app identity's",
        ),
        (
            "modules/monitoring.bicep",
            "DisableLocalAuth: !enableApim",
            "DisableLocalAuth: false",
            "(enableApim=false): DisableLocalAuth must be true",
        ),
        (  # API Management's logger would be refused
            "modules/monitoring.bicep",
            "DisableLocalAuth: !enableApim",
            "DisableLocalAuth: true",
            "(enableApim=true): DisableLocalAuth is true while API Management",
        ),
        (  # main.bicep does not tell the monitoring module whether API Management is deployed
            "main.bicep",
            "    enableApim: enableApim\n    appPrincipalId: appIdentity.outputs.principalId\n",
            "    enableApim: false\n    appPrincipalId: appIdentity.outputs.principalId\n",
            "(enableApim=true): DisableLocalAuth is true while API Management",
        ),
        (  # API Management deployed whatever ENABLE_APIM says
            "main.bicep",
            "module apim 'modules/apim.bicep' = if (enableApim) {",
            "module apim 'modules/apim.bicep' = {",
            "(enableApim=false): DisableLocalAuth is true while API Management",
        ),
    ],
)
def test_keyless_telemetry_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_keyless_telemetry(mutate(texts, file, old, new))
    assert any(expected in p for p in problems), problems


def test_the_exporter_sends_telemetry_as_the_apps_identity(model: dict[str, im.Template]) -> None:
    """The app setting's value, with the identity's client id in it, is what the installed Azure
    Monitor exporter turns into ManagedIdentityCredential(client_id=that id)."""
    from azure.monitor.opentelemetry.exporter import _constants
    from azure.monitor.opentelemetry.exporter.export import _base

    name = im.TELEMETRY_AUTHENTICATION_SETTING
    assert name == _constants._APPLICATIONINSIGHTS_AUTHENTICATION_STRING
    client_id = "0b3c2a1d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    value = im.app_settings(model, guaranteed=True)[name]
    assert isinstance(value, str) and "${identityClientId}" in value
    environment = {name: value.replace("${identityClientId}", client_id)}
    with (
        mock.patch.dict(os.environ, environment),
        mock.patch.object(_base, "ManagedIdentityCredential") as credential_class,
    ):
        credential = _base._get_authentication_credential()
    credential_class.assert_called_once_with(client_id=client_id)
    assert credential is credential_class.return_value


@pytest.mark.parametrize(
    "extra",
    [
        "output cosmosKeys string = account.listKeys().primaryMasterKey\n",
        "output primary string = account.listKeys().primaryMasterKey\n",
        "output dbPassword string = account.name\n",
    ],
)
def test_output_check_catches_secrets(extra: str, texts: dict[str, str]) -> None:
    changed = dict(texts)
    changed["modules/cosmos.bicep"] = texts["modules/cosmos.bicep"] + extra
    assert im.check_outputs(im.parse_texts(changed))


def test_app_settings_check_catches_an_unknown_name(texts: dict[str, str]) -> None:
    broken = mutate(
        texts, "modules/appservice.bicep", "name: 'COSMOS_DATABASE'", "name: 'COSMOS_DB_NAME'"
    )
    problems = im.check_app_settings(broken, settings_names())
    assert any("COSMOS_DB_NAME is not read" in p for p in problems), problems
    assert any("COSMOS_DATABASE is missing" in p for p in problems), problems


def test_app_settings_check_catches_a_plain_direct_line_secret(texts: dict[str, str]) -> None:
    broken = mutate(
        texts,
        "modules/appservice.bicep",
        "value: '@Microsoft.KeyVault(SecretUri=",
        "value: 'plain@Microsoft.KeyVault(SecretUri=",
    )
    assert "DIRECT_LINE_SECRET must be a Key Vault reference" in im.check_app_settings(
        broken, settings_names()
    )


SESSION_REFERENCE = (
    "value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}"
    "secrets/${adminSessionSecretName}/)'"
)
PSEUDONYM_SETTING = (
    "  {\n    name: 'ADMIN_PSEUDONYM_KEY'\n"
    "    value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}"
    "secrets/${adminPseudonymKeyName}/)'\n  }\n"
)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (  # a key per process again: instances disagree
            "modules/appservice.bicep",
            PSEUDONYM_SETTING,
            "",
            "ADMIN_PSEUDONYM_KEY is not set in every deployment variant",
        ),
        (  # the same on every instance, but a plain value in the app settings
            "modules/appservice.bicep",
            SESSION_REFERENCE,
            "value: 'a-fixed-admin-session-secret-0123456789abcdef'",
            "ADMIN_SESSION_SECRET must be a versionless Key Vault reference",
        ),
        (
            "modules/appservice.bicep",
            "secrets/${adminSessionSecretName}/)'",
            "secrets/${adminSessionSecretName}/0123456789abcdef0123456789abcdef)'",
            "ADMIN_SESSION_SECRET must be a versionless Key Vault reference",
        ),
        (  # the app reads another secret than the one written
            "modules/appservice.bicep",
            "secrets/${adminSessionSecretName}/",
            "secrets/${adminPseudonymKeyName}/",
            "ADMIN_SESSION_SECRET must reference secrets/${adminSessionSecretName}",
        ),
        (
            "main.bicep",
            "    adminPseudonymKeyName: adminPseudonymKeyName\n    openAiEndpoint:",
            "    adminPseudonymKeyName: directLineSecretName\n    openAiEndpoint:",
            "main.bicep passes adminPseudonymKeyName",
        ),
        (
            "modules/keyvault.bicep",
            "resource adminPseudonymKeyValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {",
            "resource adminPseudonymKeyValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01'"
            " = if (false) {",
            "adminPseudonymKeyValue is not written unconditionally",
        ),
        (
            "modules/keyvault.bicep",
            "    value: adminSessionSecret\n",
            "    value: adminPseudonymKey\n",
            "value is not the parameter adminSessionSecret",
        ),
        (  # azd would prompt for it, or take whatever the environment says, every provision
            "main.bicep",
            "    type: 'generate'\n",
            "    type: 'generateOrManual'\n",
            "adminSessionSecret needs azd metadata type 'generate'",
        ),
        (
            "main.bicep",
            "      length: 64\n",
            "      length: 16\n",
            "azd generates 16 characters",
        ),
        (
            "main.bicep",
            "@minLength(32)\n@description('Key of the user pseudonyms",
            "@description('Key of the user pseudonyms",
            "adminPseudonymKey needs @minLength(32)",
        ),
        (
            "main.bicep",
            "@secure()\n@minLength(32)\n@description('Key that signs",
            "@minLength(32)\n@description('Key that signs",
            "main.bicep parameter adminSessionSecret must be @secure()",
        ),
        (  # the key reaches the deployment outputs
            "modules/keyvault.bicep",
            "output name string = vault.name\n",
            "output name string = vault.name\noutput pk string = adminPseudonymKey\n",
            "output pk exposes the secure parameter adminPseudonymKey",
        ),
    ],
)
def test_shared_admin_keys_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_shared_admin_keys(mutate(texts, file, old, new), im.read_parameters_file())
    assert any(expected in p for p in problems), problems


def test_shared_admin_keys_check_catches_a_key_from_the_parameters_file(
    model: dict[str, im.Template],
) -> None:
    parameters = {
        **im.read_parameters_file(),
        "adminPseudonymKey": {"value": "${ADMIN_PSEUDONYM_KEY}"},
    }
    problems = im.check_shared_admin_keys(model, parameters)
    assert any("main.parameters.json sets adminPseudonymKey" in p for p in problems), problems


def test_earlier_pseudonym_keys_reach_the_app_only_through_key_vault(
    model: dict[str, im.Template],
) -> None:
    """After a rotation the operator keeps the old pseudonym key with the azd variable
    ADMIN_PSEUDONYM_PREVIOUS_KEYS: a secure parameter (never an output) that becomes the Key Vault
    secret admin-pseudonym-previous-keys and the app setting's Key Vault reference, so a provision
    keeps it instead of dropping a hand-made app setting; left empty, neither is written."""
    assert im.check_previous_pseudonym_keys(model, im.read_parameters_file()) == []


def test_without_earlier_pseudonym_keys_the_app_gets_no_setting_and_the_vault_no_secret(
    model: dict[str, im.Template],
) -> None:
    main = model["main.bicep"]
    assert main.parameters["adminPseudonymPreviousKeys"]["default"] == ""
    app = im._module_bindings(main, "appservice.bicep", {"adminPseudonymPreviousKeys": ""})
    vault = im._module_bindings(main, "keyvault.bicep", {"adminPseudonymPreviousKeys": ""})
    site = im.web_apps({"modules/appservice.bicep": model["modules/appservice.bicep"]})[0][1]
    settings = model["modules/appservice.bicep"].evaluate(
        im._get(site.body, "properties/siteConfig/appSettings"), bindings=app
    )
    assert "ADMIN_PSEUDONYM_PREVIOUS_KEYS" not in {s["name"] for s in settings}
    written = im._secrets_named(
        model["modules/keyvault.bicep"], "admin-pseudonym-previous-keys", vault
    )
    assert [w for _, w, _ in written] == [False]
    # The app reads an absent setting (and an empty one) as no earlier keys.
    config = pytest.importorskip("config")
    for environment in ({}, {"ADMIN_PSEUDONYM_PREVIOUS_KEYS": ""}):
        with mock.patch.dict(os.environ, environment, clear=True):
            assert config.Settings(_env_file=None).admin_pseudonym_previous_keys == []


PREVIOUS_KEYS_SETTING = (
    "    value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}"
    "secrets/${adminPseudonymPreviousKeysName}/)'\n"
)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (  # the keys would be in the deployment's parameters in plain text
            "main.bicep",
            "@secure()\n@description('Earlier values of adminPseudonymKey",
            "@description('Earlier values of adminPseudonymKey",
            "main.bicep parameter adminPseudonymPreviousKeys must be @secure()",
        ),
        (  # ... and in the nested deployment's
            "modules/keyvault.bicep",
            "@secure()\n@description('ADMIN_PSEUDONYM_PREVIOUS_KEYS",
            "@description('ADMIN_PSEUDONYM_PREVIOUS_KEYS",
            "modules/keyvault.bicep parameter adminPseudonymPreviousKeys must be @secure()",
        ),
        (  # azd would have to be given it on every provision
            "main.bicep",
            "param adminPseudonymPreviousKeys string = ''",
            "param adminPseudonymPreviousKeys string",
            "main.bicep needs `param adminPseudonymPreviousKeys string = ''`",
        ),
        (  # the app would get the reference's text, which it refuses to start with
            "main.bicep",
            "adminPseudonymPreviousKeysName: empty(adminPseudonymPreviousKeys) ? '' : "
            "adminPseudonymPreviousKeysName\n",
            "adminPseudonymPreviousKeysName: adminPseudonymPreviousKeysName\n",
            "ADMIN_PSEUDONYM_PREVIOUS_KEYS is set without earlier keys",
        ),
        (
            "modules/appservice.bicep",
            "var previousPseudonymKeySettings = empty(adminPseudonymPreviousKeysName) ? [] : [",
            "var previousPseudonymKeySettings = [",
            "ADMIN_PSEUDONYM_PREVIOUS_KEYS is set without earlier keys",
        ),
        (
            "modules/keyvault.bicep",
            "= if (!empty(adminPseudonymPreviousKeys)) {",
            "= {",
            "adminPseudonymPreviousKeysValue is written without earlier keys",
        ),
        (  # given keys never reach the app
            "modules/keyvault.bicep",
            "= if (!empty(adminPseudonymPreviousKeys)) {",
            "= if (empty(adminPseudonymPreviousKeys)) {",
            "adminPseudonymPreviousKeysValue is not written when earlier keys are given",
        ),
        (
            "modules/appservice.bicep",
            "concat(appSettings, previousPseudonymKeySettings, ",
            "concat(appSettings, ",
            "ADMIN_PSEUDONYM_PREVIOUS_KEYS is not set in every deployment variant",
        ),
        (  # a plain app setting, which the portal and the deployment history show
            "modules/appservice.bicep",
            PREVIOUS_KEYS_SETTING,
            "    value: 'earlier-key-one-0123456789abcdef'\n",
            "ADMIN_PSEUDONYM_PREVIOUS_KEYS must be a versionless Key Vault reference",
        ),
        (  # a fixed version: the next rotation's keys would not be read
            "modules/appservice.bicep",
            "secrets/${adminPseudonymPreviousKeysName}/)'",
            "secrets/${adminPseudonymPreviousKeysName}/0123456789abcdef0123456789abcdef)'",
            "ADMIN_PSEUDONYM_PREVIOUS_KEYS must be a versionless Key Vault reference",
        ),
        (  # the app reads the current key's secret
            "main.bicep",
            "? '' : adminPseudonymPreviousKeysName\n",
            "? '' : adminPseudonymKeyName\n",
            "must reference secrets/admin-pseudonym-previous-keys",
        ),
        (
            "modules/keyvault.bicep",
            "    value: adminPseudonymPreviousKeys\n",
            "    value: adminPseudonymKey\n",
            "value is not main.bicep's parameter adminPseudonymPreviousKeys",
        ),
        (  # the keys reach the deployment outputs (azd writes them to .azure/<env>/.env)
            "modules/keyvault.bicep",
            "output name string = vault.name\n",
            "output name string = vault.name\noutput earlier string = adminPseudonymPreviousKeys\n",
            "output earlier exposes adminPseudonymPreviousKeys",
        ),
        (
            "main.bicep",
            "output AZURE_LOCATION string = location\n",
            "output AZURE_LOCATION string = location\n"
            "output EARLIER string = empty(adminPseudonymPreviousKeys) ? '' : "
            "adminPseudonymPreviousKeys\n",
            "output EARLIER exposes adminPseudonymPreviousKeys",
        ),
    ],
)
def test_previous_pseudonym_keys_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_previous_pseudonym_keys(
        mutate(texts, file, old, new), im.read_parameters_file()
    )
    assert any(expected in p for p in problems), problems


def test_previous_pseudonym_keys_check_catches_a_parameter_azd_does_not_fill(
    model: dict[str, im.Template],
) -> None:
    parameters = dict(im.read_parameters_file())
    del parameters["adminPseudonymPreviousKeys"]
    problems = im.check_previous_pseudonym_keys(model, parameters)
    assert any("main.parameters.json sets adminPseudonymPreviousKeys" in p for p in problems)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "modules/appservice.bicep",
            "    name: 'AZURE_OPENAI_MODEL'\n    value: openAiModel\n",
            "    name: 'AZURE_OPENAI_MODEL'\n    value: openAiDeployment\n",
            "AZURE_OPENAI_MODEL is Param(name='openAiDeployment')",
        ),
        (  # the version, not the model
            "main.bicep",
            "    openAiModel: first(modelDeployments).model\n",
            "    openAiModel: first(modelDeployments).version\n",
            "main.bicep passes openAiModel=",
        ),
        (  # another deployment's model than the one the app calls
            "main.bicep",
            "    openAiModel: first(modelDeployments).model\n",
            "    openAiModel: last(modelDeployments).model\n",
            "expected first(modelDeployments).model",
        ),
        (
            "modules/openai.bicep",
            "      name: d.model\n",
            "      name: d.name\n",
            "deploys d.name as the model's name",
        ),
        (  # a name chat/models.yaml does not know: the default encoding would count it
            "main.bicep",
            "    model: 'gpt-4o-mini'\n",
            "    model: 'gpt4o-mini'\n",
            "model 'gpt4o-mini' is no model family of chat/models.yaml",
        ),
    ],
)
def test_model_setting_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_model_setting(mutate(texts, file, old, new), model_family_name)
    assert any(expected in p for p in problems), problems


def test_model_setting_check_catches_a_missing_setting(texts: dict[str, str]) -> None:
    """Without it the app counts with config.py's default model, gpt-4o, whatever is deployed."""
    text = texts["modules/appservice.bicep"]
    start = text.index("  {\n    // The model's name, not the deployment's")
    end = text.index("  }\n", start) + len("  }\n")
    broken = mutate(texts, "modules/appservice.bicep", text[start:end], "")
    problems = im.check_model_setting(broken)
    assert "AZURE_OPENAI_MODEL is not set in every deployment variant" in problems, problems
    assert "app setting AZURE_OPENAI_MODEL is missing" in im.check_app_settings(
        broken, settings_names()
    )


MAIN_ADMIN_MODES = "@allowed([\n  ''\n  'appservice'\n  'local'\n])\nparam adminAuthMode"
APP_ADMIN_MODES = "@allowed([\n  'appservice'\n  'local'\n])\nparam adminAuthMode"


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (  # oidc without ADMIN_OIDC_CLIENT_ID: the app would refuse to start
            "main.bicep",
            MAIN_ADMIN_MODES,
            MAIN_ADMIN_MODES.replace("'local'", "'local'\n  'oidc'"),
            "main.bicep: adminAuthMode allows 'oidc', which config.py refuses with the app "
            "settings the templates write: Value error, ADMIN_AUTH_MODE=oidc needs "
            "ADMIN_OIDC_CLIENT_ID",
        ),
        (
            "modules/appservice.bicep",
            APP_ADMIN_MODES,
            APP_ADMIN_MODES.replace("'local'", "'local'\n  'oidc'"),
            "modules/appservice.bicep: adminAuthMode allows 'oidc'",
        ),
        (
            "main.bicep",
            MAIN_ADMIN_MODES,
            "param adminAuthMode",
            "main.bicep: adminAuthMode takes any value",
        ),
        (
            "main.bicep",
            "  'local'\n])\nparam webchatAuthMode",
            "  'local'\n  'oidc'\n])\nparam webchatAuthMode",
            "main.bicep: webchatAuthMode allows 'oidc'",
        ),
        (  # main.bicep's empty, "choose by authClientId", is no mode of the app's
            "main.bicep",
            "|| empty(authClientId)) ? 'local' : 'appservice'\nvar effectiveWebchat",
            "|| empty(authClientId)) ? 'local' : adminAuthMode\nvar effectiveWebchat",
            "main.bicep passes adminAuthMode that can be ['']",
        ),
        (  # the parameter as given: its empty value would reach the app
            "main.bicep",
            "    adminAuthMode: effectiveAdminAuthMode\n",
            "    adminAuthMode: adminAuthMode\n",
            "main.bicep passes adminAuthMode that can be ['']",
        ),
    ],
)
def test_auth_mode_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    config = pytest.importorskip("config")
    problems = im.check_auth_modes(mutate(texts, file, old, new), config.Settings)
    assert any(expected in p for p in problems), problems


def test_auth_mode_check_accepts_oidc_once_the_templates_write_what_it_needs(
    texts: dict[str, str],
) -> None:
    """The check asks config.py, not a list of refused modes: templates that wrote the client
    and tenant ids could offer oidc."""
    config = pytest.importorskip("config")
    changed = dict(texts)
    for file, anchor in (
        ("main.bicep", MAIN_ADMIN_MODES),
        ("modules/appservice.bicep", APP_ADMIN_MODES),
    ):
        assert anchor in changed[file]
        changed[file] = changed[file].replace(
            anchor, anchor.replace("'local'", "'local'\n  'oidc'")
        )
    mode_setting = "  {\n    name: 'ADMIN_AUTH_MODE'\n"
    oidc_settings = (
        "  {\n    name: 'ADMIN_OIDC_CLIENT_ID'\n    value: adminOidcClientId\n  }\n"
        "  {\n    name: 'ADMIN_OIDC_TENANT_ID'\n    value: tenantId\n  }\n"
    )
    offered = mutate(
        changed, "modules/appservice.bicep", mode_setting, oidc_settings + mode_setting
    )
    assert im.check_auth_modes(offered, config.Settings) == []


@pytest.mark.parametrize(
    "new", ["value: behindAppGateway ? '1' : '2'", "value: '1'", "value: string(2)"]
)
def test_trusted_proxy_hops_check_catches(new: str, texts: dict[str, str]) -> None:
    broken = mutate(texts, "modules/appservice.bicep", "value: behindAppGateway ? '2' : '1'", new)
    assert im.check_trusted_proxy_hops(broken)


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("main.bicep", "    publicHostName: appGatewayHostName\n", ""),
        (  # set for every variant, gateway or not
            "modules/appservice.bicep",
            "    name: 'ADMIN_TRUSTED_PROXY_HOPS'",
            "    name: 'PUBLIC_BASE_URL'\n    value: 'https://${publicHostName}'\n  }\n  {\n"
            "    name: 'ADMIN_TRUSTED_PROXY_HOPS'",
        ),
        ("modules/appservice.bicep", "'https://${publicHostName}'", "'https://example.com'"),
    ],
)
def test_public_url_check_catches(file: str, old: str, new: str, texts: dict[str, str]) -> None:
    assert im.check_public_url_behind_gateway(mutate(texts, file, old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    value: '0.0.0.0'\n", "    value: '127.0.0.1'\n", "HOST is '127.0.0.1'"),
        (
            "    name: 'HOST'\n    value: '0.0.0.0'\n  }\n  {\n",
            "",
            "HOST is not set in every deployment variant",
        ),
        ("var appPort = '8000'", "var appPort = '3978'", "PORT is '3978', expected '8000'"),
        ("    name: 'WEBSITES_PORT'\n", "    name: 'WEBSITES_PORTS'\n", "WEBSITES_PORT is not set"),
    ],
)
def test_listen_address_check_catches(
    old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_listen_address(mutate(texts, "modules/appservice.bicep", old, new))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "modules/appservice.bicep",
            "    value: webchatTrustedOrigins\n",
            "    value: ''\n",
            "WEBCHAT_TRUSTED_ORIGINS is ''",
        ),
        (
            "modules/appservice.bicep",
            "    name: 'APP_WORKERS'\n    value: string(appWorkers)\n  }\n  {\n",
            "",
            "APP_WORKERS is not set in every deployment variant",
        ),
        (
            "main.bicep",
            "    appWorkers: appWorkers\n",
            "",
            "main.bicep passes appWorkers=None",
        ),
        (
            "modules/appservice.bicep",
            "    value: logMessageText ? 'true' : 'false'\n",
            "    value: 'false'\n",
            "LOG_MESSAGE_TEXT is 'false'",
        ),
        (
            "modules/appservice.bicep",
            "    name: 'ALLOWED_TENANT_IDS'\n",
            "    name: 'ALLOWED_TENANTS'\n",
            "ALLOWED_TENANT_IDS is not set in every deployment variant",
        ),
        (
            "modules/appservice.bicep",
            "    value: string(quotaUserTokensPerDay)\n",
            "    value: string(quotaTenantTokensPerDay)\n",
            "QUOTA_USER_TOKENS_PER_DAY is",
        ),
        (
            "main.bicep",
            "    usagePolicyFile: usagePolicyFile\n",
            "    usagePolicyFile: ''\n",
            "main.bicep passes usagePolicyFile=''",
        ),
        (
            "main.bicep",
            "param deploymentsFile string = ''\n",
            "",
            "main.bicep has no parameter deploymentsFile",
        ),
        (
            "modules/appservice.bicep",
            "    value: adminPseudonymize ? 'true' : 'false'\n",
            "    value: 'true'\n",
            "ADMIN_PSEUDONYMIZE is 'true'",
        ),
        (
            "modules/appservice.bicep",
            "    value: string(modelTimeoutSeconds)\n",
            "    value: string(modelDeadlineSeconds)\n",
            "MODEL_TIMEOUT_SECONDS is",
        ),
        (
            "main.bicep",
            "    shutdownGraceSeconds: shutdownGraceSeconds\n",
            "",
            "main.bicep passes shutdownGraceSeconds=None",
        ),
    ],
)
def test_operator_settings_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_operator_settings(mutate(texts, file, old, new), im.read_parameters_file())
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (  # an unset ORGANIZATION_NAME would rename the organization in the system prompt
            "main.bicep",
            "param organizationName string = 'Contoso'",
            "param organizationName string = 'Fabrikam'",
            "organizationName has different defaults",
        ),
        (
            "modules/appservice.bicep",
            "param quotaUserRequestsPerMinute int = 30",
            "param quotaUserRequestsPerMinute int = 0",
            "quotaUserRequestsPerMinute has different defaults",
        ),
        (  # the same wrong default in both files
            "modules/appservice.bicep",
            "param logMessageText bool = false",
            "param logMessageText bool = true",
            "logMessageText has different defaults",
        ),
    ],
)
def test_operator_defaults_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    config = pytest.importorskip("config")
    broken = mutate(texts, file, old, new)
    problems = im.check_operator_defaults(broken, im.read_parameters_file(), config.Settings)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "param maxOutputTokens int = 1024",
            "param maxOutputTokens int = 4096",
            "maxOutputTokens defaults to 4096",
        ),
        (  # a float setting: config.py's 20.0 is Bicep's 20
            "param shutdownGraceSeconds int = 20",
            "param shutdownGraceSeconds int = 30",
            "shutdownGraceSeconds defaults to 30",
        ),
        (
            "param logLevel string = 'INFO'",
            "param logLevel string = 'WARNING'",
            "logLevel defaults to 'WARNING'",
        ),
    ],
)
def test_operator_defaults_check_catches_a_default_unlike_configs(
    old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    config = pytest.importorskip("config")
    changed = dict(texts)
    for file in im.OPERATOR_PARAMETER_FILES:
        assert old in changed[file]
        changed[file] = changed[file].replace(old, new)
    problems = im.check_operator_defaults(
        im.parse_texts(changed), im.read_parameters_file(), config.Settings
    )
    assert any(expected in p for p in problems), problems


def test_operator_defaults_check_catches_a_fractional_default(
    model: dict[str, im.Template],
) -> None:
    """Bicep has no fractional numbers: a default of 2.5 seconds cannot be carried."""
    config = pytest.importorskip("config")
    from pydantic import Field

    class Fractional(config.Settings):
        shutdown_grace_seconds: float = Field(2.5, alias="SHUTDOWN_GRACE_SECONDS", ge=0)

    problems = im.check_operator_defaults(model, im.read_parameters_file(), Fractional)
    assert "config.py's SHUTDOWN_GRACE_SECONDS default 2.5 is no whole number" in problems


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("historyTokenBudget", "${HISTORY_TOKEN_BUDGET=8000}", "from ${HISTORY_TOKEN_BUDGET=6000}"),
        (
            "modelDeadlineSeconds",
            "${MODEL_DEADLINE_SECONDS=90.0}",
            "from ${MODEL_DEADLINE_SECONDS=90}",
        ),
        ("adminPseudonymize", "${ADMIN_PSEUDONYMIZE=}", "from ${ADMIN_PSEUDONYMIZE=true}"),
    ],
)
def test_operator_defaults_check_catches_an_azd_default_unlike_biceps(
    param: str, value: str, expected: str, model: dict[str, im.Template]
) -> None:
    config = pytest.importorskip("config")
    parameters = {**im.read_parameters_file(), param: {"value": value}}
    problems = im.check_operator_defaults(model, parameters, config.Settings)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "main.bicep",
            "@allowed([\n  'safe'\n  'low'\n",
            "@allowed([\n  'low'\n",
            "main.bicep: filterReviewSeverity has",
        ),
        (
            "modules/appservice.bicep",
            "@minValue(1)\nparam maxOutputTokens",
            "param maxOutputTokens",
            "modules/appservice.bicep: maxOutputTokens has",
        ),
        (
            "main.bicep",
            "@minValue(0)\nparam quotaTenantTokensPerDay",
            "@minValue(0)\n@maxValue(1000000000)\nparam quotaTenantTokensPerDay",
            "main.bicep: quotaTenantTokensPerDay has",
        ),
        (
            "modules/appservice.bicep",
            "param logMessageText bool = false",
            "param logMessageText string = 'false'",
            "logMessageText is string, expected bool",
        ),
        (  # MODEL_TIMEOUT_SECONDS > 0 in whole seconds is at least 1
            "main.bicep",
            "@minValue(1)\nparam modelTimeoutSeconds",
            "@minValue(0)\nparam modelTimeoutSeconds",
            "main.bicep: modelTimeoutSeconds has",
        ),
        (
            "modules/appservice.bicep",
            "@minValue(1)\n@maxValue(500)\nparam historyMaxMessages",
            "@minValue(1)\nparam historyMaxMessages",
            "modules/appservice.bicep: historyMaxMessages has",
        ),
        (  # a float setting is an int parameter: Bicep has no other numbers
            "main.bicep",
            "param turnDeadlineSeconds int = 120",
            "param turnDeadlineSeconds string = '120'",
            "turnDeadlineSeconds is string, expected int",
        ),
        (  # a level logging does not know would stop the app at start-up
            "modules/appservice.bicep",
            "  'CRITICAL'\n])\nparam logLevel",
            "  'CRITICAL'\n  'VERBOSE'\n])\nparam logLevel",
            "modules/appservice.bicep: logLevel has",
        ),
    ],
)
def test_operator_bounds_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    config = pytest.importorskip("config")
    problems = im.check_operator_bounds(mutate(texts, file, old, new), config.Settings)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    allowedInboundCidrs: inboundCidrs\n    skuName:",
            "    allowedInboundCidrs: allowedInboundCidrs\n    skuName:",
            "passes allowedInboundCidrs='allowedInboundCidrs' to appservice.bicep",
        ),
        (
            "    allowedInboundCidrs: inboundCidrs\n  }",
            "    allowedInboundCidrs: allowedInboundCidrs\n  }",
            "passes allowedInboundCidrs='allowedInboundCidrs' to network.bicep",
        ),
        (
            "var inboundCidrs = union(allowedInboundCidrs, ",
            "var inboundCidrs = union([], ",
            "inboundCidrs must be the union",
        ),
    ],
)
def test_inbound_ranges_check_catches(
    old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    broken = mutate(texts, "main.bicep", old, new)
    problems = im.check_inbound_ranges_from_environment(broken, im.read_parameters_file())
    assert any(expected in p for p in problems), problems


def test_inbound_ranges_check_catches_a_parameter_azd_does_not_fill(
    model: dict[str, im.Template],
) -> None:
    parameters = dict(im.read_parameters_file())
    del parameters["allowedInboundCidrList"]
    problems = im.check_inbound_ranges_from_environment(model, parameters)
    assert any("main.parameters.json sets allowedInboundCidrList" in p for p in problems)


def test_operator_settings_check_catches_a_parameter_azd_does_not_fill(
    model: dict[str, im.Template],
) -> None:
    parameters = dict(im.read_parameters_file())
    del parameters["webchatTrustedOrigins"]
    problems = im.check_operator_settings(model, parameters)
    assert any("main.parameters.json sets webchatTrustedOrigins" in p for p in problems), problems


def test_gateway_ip_check_catches_a_missing_output(texts: dict[str, str]) -> None:
    broken = mutate(texts, "main.bicep", "output APP_GATEWAY_PUBLIC_IP", "output GATEWAY_IP")
    assert im.check_gateway_ip_output(broken)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("action: 'Allow'", "action: 'Log'", "expected one Allow rule"),
        ("|v3/directline/conversations/[A-Za-z0-9_-]+/activities", "", "chat messages to /v3"),
        ("[A-Za-z0-9_-]+/activities", ".+/activities", "/v3/directline/conversations/a/b"),
        ("'POST'", "'GET'", "not for POST only"),
        ("([?][^/]*)?$'", "'", "/api/messages/../admin/ skips"),
    ],
)
def test_gateway_waf_check_catches(old: str, new: str, problem: str, texts: dict[str, str]) -> None:
    broken = mutate(texts, "modules/appgateway.bicep", old, new)
    problems = im.check_gateway_waf_passes_chat_messages(broken)
    assert any(problem in p for p in problems), problems


def test_web_app_check_catches_ftp_publishing(texts: dict[str, str]) -> None:
    broken = mutate(
        texts,
        "modules/appservice.bicep",
        "  name: 'ftp'\n  properties: {\n    allow: false",
        "  name: 'ftp'\n  properties: {\n    allow: true",
    )
    assert any("basic publishing" in p for p in im.check_web_app_hardening(broken))


def test_cosmos_check_catches_a_wrong_partition_key(texts: dict[str, str]) -> None:
    broken = mutate(texts, "modules/cosmos.bicep", "partitionKey: '/scope'", "partitionKey: '/id'")
    assert any("container usage" in p for p in im.check_cosmos_containers(broken))


def test_cosmos_check_catches_botstate_without_ttl(texts: dict[str, str]) -> None:
    broken = mutate(
        texts,
        "modules/cosmos.bicep",
        "partitionKey: '/id'\n    defaultTtl: -1",
        "partitionKey: '/id'\n    defaultTtl: null",
    )
    assert any("container botstate" in p for p in im.check_cosmos_containers(broken))


def test_cosmos_check_catches_a_missing_composite_index(texts: dict[str, str]) -> None:
    broken = mutate(texts, "modules/cosmos.bicep", "path: '/lastActivityAt'", "path: '/createdAt'")
    assert any("conversations composite" in p for p in im.check_cosmos_containers(broken))


# --- the monitoring queries read what the app (chat.telemetry.EXPORTED) and API Management's
# token metrics really send to Application Insights

# The metrics azure-openai-emit-token-metric sends, with the dimensions the policy names.
APIM_TOKEN_METRICS = ("Prompt Tokens", "Completion Tokens", "Total Tokens")


def exported_to_application_insights() -> dict[str, dict[str, frozenset[str]]]:
    import xml.etree.ElementTree as ElementTree

    from chat.telemetry import EXPORTED

    # The repository's own file, not untrusted input.
    policy = ElementTree.parse(im.INFRA_DIR / "apim" / "openai-policy.xml").getroot()  # noqa: S314
    [emit] = policy.findall(".//azure-openai-emit-token-metric")
    dimensions = frozenset(d.get("name", "") for d in emit.findall("dimension"))
    exported = {table: dict(items) for table, items in EXPORTED.items()}
    exported["customMetrics"].update({name: dimensions for name in APIM_TOKEN_METRICS})
    return exported


def test_monitoring_queries_read_only_names_and_dimensions_that_are_exported() -> None:
    from tests.monitoring_queries import problems, queries

    found = queries()
    assert {
        "content-filter-events.kql",
        "flagged-conversations.kql",
        "requests.kql",
        "throttling-and-spillover.kql",
        "token-usage.kql",
        "token-usage-by-user.kql",
        "turn-by-reference.kql",
        "turn-latency.kql",
    } <= set(found)
    exported = exported_to_application_insights()
    assert [p for name, text in found.items() for p in problems(name, text, exported)] == []


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "content-filter-events.kql",
            'traces\n| where timestamp > ago(window)\n| where message == "content_filter"',
            'customEvents\n| where timestamp > ago(window)\n| where name == "content_filter"',
            "nothing is exported to customEvents as 'content_filter'",
        ),
        (
            "flagged-conversations.kql",
            'message == "conversation_flagged"',
            'message == "conversation_flaged"',
            "nothing is exported to traces as 'conversation_flaged'",
        ),
        (
            "token-usage.kql",
            'kind = tostring(customDimensions["kind"])',
            'user_ref = tostring(customDimensions["user_ref"])',
            "customMetrics 'chat.tokens' has no ['user_ref']",
        ),
        (
            "turn-latency.kql",
            "max_ms = max(valueMax)",
            "p95 = percentile(value, 95)",
            "not one value",
        ),
        (
            "throttling-and-spillover.kql",
            'status_code = tostring(customDimensions["model.status_code"])',
            "status_code = resultCode",
            "resultCode is always '0'",
        ),
        (
            "turn-by-reference.kql",
            'customDimensions["correlation_id"]) == reference\n    | project operation_Id;\nlet '
            "turnErrors",
            'customDimensions["reference"]) == reference\n    | project operation_Id;\nlet '
            "turnErrors",
            "traces '*' has no ['reference']",
        ),
    ],
)
def test_monitoring_query_check_catches_a_query_reading_what_is_not_exported(
    file: str, old: str, new: str, expected: str
) -> None:
    from tests.monitoring_queries import problems, queries

    text = queries()[file]
    assert old in text, old
    found = problems(file, text.replace(old, new, 1), exported_to_application_insights())
    assert any(expected in p for p in found), found


def test_deploy_doc_exists() -> None:
    doc = Path(im.INFRA_DIR.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "azd up" in doc


def test_api_management_relays_streamed_answers_as_they_come() -> None:
    """Server-sent events through API Management need its response buffering off on the
    forward-request (Microsoft's guidance for SSE APIs); buffered, a stream arrives in batches."""
    import xml.etree.ElementTree as ElementTree

    # The repository's own file, not untrusted input.
    policy = ElementTree.parse(im.INFRA_DIR / "apim" / "openai-policy.xml").getroot()  # noqa: S314
    forwards = policy.findall(".//forward-request")
    assert forwards, "the policy forwards the request"
    assert all(f.get("buffer-response") == "false" for f in forwards)


# --- deployments reach the SCM site; private endpoints sit in the VNet's region; sign-in
# redirects go to the gateway's host; azd honours .webappignore


def test_the_scm_site_admits_the_deployer_ranges(model: dict[str, im.Template]) -> None:
    assert im.check_deployer_ranges(model, im.read_parameters_file()) == []


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "modules/appservice.bicep",
            "scmIpSecurityRestrictions: deployerRules",
            "scmIpSecurityRestrictions: []",
            "scmIpSecurityRestrictions must be one Allow rule per deployerCidrs range",
        ),
        (
            "modules/appservice.bicep",
            "scmIpSecurityRestrictions: deployerRules",
            "scmIpSecurityRestrictions: listedRangeRules",
            "scmIpSecurityRestrictions must be one Allow rule per deployerCidrs range",
        ),
        (
            "modules/appservice.bicep",
            "  name: 'allow-deployer-${i}'\n  action: 'Allow'",
            "  name: 'allow-deployer-${i}'\n  action: 'Deny'",
            "scmIpSecurityRestrictions must be one Allow rule per deployerCidrs range",
        ),
        (
            "modules/appservice.bicep",
            "scmIpSecurityRestrictionsUseMain: false",
            "scmIpSecurityRestrictionsUseMain: true",
            "scmIpSecurityRestrictionsUseMain must be false",
        ),
        (
            "main.bicep",
            "    deployerCidrs: deployerRanges\n",
            "",
            "passes deployerCidrs=None to appservice.bicep",
        ),
        (
            "main.bicep",
            "var deployerRanges = union(deployerCidrs, ",
            "var deployerRanges = union([], ",
            "deployerRanges must be the union",
        ),
    ],
)
def test_deployer_ranges_check_catches(
    file: str, old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_deployer_ranges(mutate(texts, file, old, new), im.read_parameters_file())
    assert any(expected in p for p in problems), problems


def test_deployer_ranges_check_catches_a_parameter_azd_does_not_fill(
    model: dict[str, im.Template],
) -> None:
    parameters = dict(im.read_parameters_file())
    del parameters["deployerCidrList"]
    problems = im.check_deployer_ranges(model, parameters)
    assert any("main.parameters.json sets deployerCidrList" in p for p in problems), problems


def test_the_scm_site_still_denies_everything_else(texts: dict[str, str]) -> None:
    broken = mutate(
        texts,
        "modules/appservice.bicep",
        "scmIpSecurityRestrictionsDefaultAction: 'Deny'",
        "scmIpSecurityRestrictionsDefaultAction: 'Allow'",
    )
    assert any(
        "scmIpSecurityRestrictionsDefaultAction" in p for p in im.check_web_app_hardening(broken)
    )


def test_private_endpoints_are_in_the_vnets_region(model: dict[str, im.Template]) -> None:
    assert im.check_private_endpoints_in_vnet_region(model) == []
    # The Azure OpenAI account may be elsewhere (AZURE_OPENAI_LOCATION); its endpoint may not.
    params = im._module(model["main.bicep"], "modules/openai.bicep") or {}
    assert params.get("endpointLocation") == "location"
    assert params.get("location") != "location"


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        (  # the finding: the OpenAI endpoint followed the account into AZURE_OPENAI_LOCATION
            "modules/openai.bicep",
            "    location: endpointLocation\n",
            "    location: location\n",
        ),
        (
            "main.bicep",
            "    endpointLocation: location\n",
            "    endpointLocation: openAiLocation\n",
        ),
        (
            "modules/keyvault.bicep",
            "module vaultEndpoint 'private-endpoint.bicep' = {\n  name: 'pe-keyvault'\n"
            "  params: {\n    location: location\n",
            "module vaultEndpoint 'private-endpoint.bicep' = {\n  name: 'pe-keyvault'\n"
            "  params: {\n    location: 'westeurope'\n",
        ),
    ],
)
def test_private_endpoint_region_check_catches(
    file: str, old: str, new: str, texts: dict[str, str]
) -> None:
    assert im.check_private_endpoints_in_vnet_region(mutate(texts, file, old, new))


def test_sign_in_redirects_go_to_the_gateways_host(model: dict[str, im.Template]) -> None:
    assert im.check_sign_in_behind_gateway(model) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("customHostHeaderName: 'X-Original-Host'", "customHostHeaderName: 'X-Forwarded-Host'"),
        ("forwardProxy: behindAppGateway ? {", "forwardProxy: true ? {"),
        (
            "      } : {\n        convention: 'NoProxy'",
            "      } : {\n        convention: 'Standard'",
        ),
    ],
)
def test_sign_in_behind_gateway_check_catches(old: str, new: str, texts: dict[str, str]) -> None:
    assert im.check_sign_in_behind_gateway(mutate(texts, "modules/appservice.bicep", old, new))


def test_azure_yaml_requires_an_azd_that_honours_webappignore() -> None:
    """azd packages .webappignore's exclusions (.env, .azure/, data/) only since 1.18.0
    (Azure/azure-dev#5383, in the 1.18.0 release notes); azd refuses a project whose
    requiredVersions.azd range its own version is outside of."""
    import re

    import yaml

    root = im.INFRA_DIR.parent
    config = yaml.safe_load((root / "azure.yaml").read_text(encoding="utf-8"))
    required = (config.get("requiredVersions") or {}).get("azd", "")
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", required.strip())
    assert match, f"requiredVersions.azd should be a lower bound, is {required!r}"
    assert tuple(int(g) for g in match.groups()) >= (1, 18, 0)
    doc = (root / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "1.18.0 or newer" in doc


@pytest.mark.parametrize("firewall", ["", "10.50.0.4"], ids=["default outbound", "a firewall"])
def test_egress_firewall_ip_sends_the_apps_outbound_traffic_to_it_and_only_when_set(
    model: dict[str, im.Template], firewall: str
) -> None:
    main, network = model["main.bicep"], model["modules/network.bicep"]
    assert im._module(main, "modules/network.bicep")["egressFirewallIp"] == "egressFirewallIp"
    parameters = json.loads((im.INFRA_DIR / "main.parameters.json").read_text(encoding="utf-8"))
    assert parameters["parameters"]["egressFirewallIp"]["value"] == "${EGRESS_FIREWALL_IP=}"

    [vnet] = [r for r in network.resources if r.symbol == "vnet"]
    bindings = {"egressFirewallIp": firewall, "enableAppGateway": False, "enableApim": False}
    subnets = network.evaluate(vnet.body["properties"]["subnets"], bindings=bindings)
    [app_subnet] = [s for s in subnets if s["name"] == "snet-app"]
    properties = app_subnet["properties"]
    assert properties["function"] == "union"
    egress = properties["args"][1]
    if not firewall:
        assert egress == {}
        return
    route_table = egress["routeTable"]["id"]["args"]
    assert route_table == ["Microsoft.Network/routeTables", "rt-egress-${resourceToken}"]
    [routes] = [r for r in network.resources if r.type == "Microsoft.Network/routeTables"]
    assert routes.conditional and routes.body["name"] == "rt-egress-${resourceToken}"
    [route] = routes.body["properties"]["routes"]
    assert route["properties"] == {
        "addressPrefix": "0.0.0.0/0",
        "nextHopType": "VirtualAppliance",
        "nextHopIpAddress": "egressFirewallIp",
    }


# --- Cosmos DB data roles: per container, an append-only audit log, one role write at a time ---

_AUDIT_ACTIONS_END = (
    "  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed'\n]"
)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            _AUDIT_ACTIONS_END,
            "  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed'\n"
            "  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/delete'\n]",
            "the audit log is not append-only",
        ),
        (
            _AUDIT_ACTIONS_END,
            "  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed'\n"
            "  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/*'\n]",
            "the audit log is not append-only",
        ),
        (
            "  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/create'\n",
            "",
            "the app cannot",
        ),
        ("  'usage'\n]", "  'usage'\n  'audit'\n]", "the audit log is not append-only"),
        ("  'messages'\n  'conversations'", "  'conversations'", "no data role on container"),
        (
            "    scope: '${account.id}/dbs/${databaseName}/colls/${containerName}'",
            "    scope: databaseScope",
            "broader than a container",
        ),
        (
            f"        dataActions: [\n          '{im.COSMOS_READ_METADATA}'\n",
            f"        dataActions: [\n          '{im.COSMOS_READ_METADATA}'\n"
            f"          '{im.COSMOS_CONTAINER_ACTIONS}/items/read'\n",
            "broader than a container",
        ),
        ("@batchSize(1)\n", "", "in parallel (@batchSize(1))"),
        (
            "    sqlContainers\n    cosmosEndpoint\n  ]\n}\n\n// The readiness",
            "    sqlContainers\n  ]\n}\n\n// The readiness",
            "does not wait for the private endpoint",
        ),
        (
            "  dependsOn: [\n    appDataContributor\n  ]\n",
            "",
            "may be written at the same time",
        ),
        ("    type: 'CustomRole'\n", "    type: 'BuiltInRole'\n", "is not a CustomRole"),
    ],
)
def test_cosmos_data_role_check_catches(
    old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_cosmos_data_roles(mutate(texts, "modules/cosmos.bicep", old, new))
    assert any(expected in p for p in problems), problems


def test_cosmos_data_role_check_catches_the_database_wide_contributor(
    texts: dict[str, str],
) -> None:
    """The assignment the templates made before: Built-in Data Contributor on the database."""
    changed = dict(texts)
    changed["modules/cosmos.bicep"] = texts["modules/cosmos.bicep"] + (
        "\nresource wide 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
        "@2024-11-15' = {\n"
        "  parent: account\n"
        "  name: guid(account.id, appPrincipalId, dataContributorRoleId)\n"
        "  properties: {\n"
        "    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributorRoleId}'\n"
        "    principalId: appPrincipalId\n"
        "    scope: '${account.id}/dbs/${databaseName}'\n"
        "  }\n"
        "}\n"
    )
    problems = im.check_cosmos_data_roles(im.parse_texts(changed))
    assert any("wide grants" in p and "broader than a container" in p for p in problems)
    assert any("wide does not wait for the containers" in p for p in problems)


# --- Key Vault: the gateway reads its certificate's secret, not the vault ----------------------


def test_key_vault_grant_check_catches_a_vault_wide_grant(texts: dict[str, str]) -> None:
    broken = mutate(
        texts,
        "modules/keyvault-secret-reader.bicep",
        "  scope: secret\n",
        "  scope: vault\n",
    )
    problems = im.check_key_vault_grants(broken)
    assert any("Key Vault Secrets User on 'vault'" in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            " && (certificateVaultName == 'kv-${resourceToken}')",
            "",
            "kv-corp-certs.vault.azure.net/secrets/agw-cert', the grant is True",
        ),
        (
            "var certificateInAppVault = enableAppGateway && ",
            "var certificateInAppVault = ",
            "with the gateway off",
        ),
        (
            "(length(certificateIdParts) > 4) ? certificateIdParts[4] : ''",
            "(length(certificateIdParts) > 4) ? certificateIdParts[3] : ''",
            "grants the secret",
        ),
        (
            "    keyVault\n    gatewayCertificateReader\n",
            "    keyVault\n",
            "does not wait for its certificate's grant",
        ),
        (
            "    principalId: gatewayIdentity.outputs.principalId\n",
            "    principalId: keyVault.outputs.name\n",
            "does not grant the gateway's identity",
        ),
    ],
)
def test_gateway_certificate_grant_check_catches(
    old: str, new: str, expected: str, texts: dict[str, str]
) -> None:
    problems = im.check_gateway_certificate_grant(mutate(texts, "main.bicep", old, new))
    assert any(expected in p for p in problems), problems


# --- docs/deploy.md says what the templates need, where an operator needs it ------------------


def deploy_doc() -> str:
    return (im.INFRA_DIR.parent / "docs" / "deploy.md").read_text(encoding="utf-8")


def doc_section(title: str) -> str:
    """The text under a heading of docs/deploy.md, up to the next heading of its level."""
    doc = deploy_doc()
    level = "#" * len(title.split(" ", 1)[0])
    start = doc.index(f"\n{title}\n")
    end = doc.find(f"\n{level} ", start + 1)
    return doc[start : end if end != -1 else len(doc)]


def prose(text: str) -> str:
    """text with each run of whitespace (line breaks included) as one space."""
    return " ".join(text.split())


def test_the_first_deploy_sets_the_address_lists_before_azd_up(texts: dict[str, str]) -> None:
    """The SCM site admits DEPLOYER_CIDRS only and the site ALLOWED_INBOUND_CIDRS only (besides
    Bot Service): a first `azd up` without them fails its deploy step with 403, and its pages
    open for nobody. So the first commands of "Deploy" set them, after `azd env new`."""
    deploy = doc_section("## Deploy")
    block = deploy[deploy.index("```bash") : deploy.index("```", deploy.index("```bash") + 3)]
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:]]
    order = [
        next(i for i, c in enumerate(commands) if c.startswith(prefix))
        for prefix in (
            "azd env new",
            "azd env set DEPLOYER_CIDRS",
            "azd env set ALLOWED_INBOUND_CIDRS",
            "azd env set COSMOS_CAPACITY_MODE",
            "azd up",
        )
    ]
    assert order == sorted(order), commands
    parameters = im.read_parameters_file()
    assert parameters["deployerCidrList"]["value"] == "${DEPLOYER_CIDRS=}"
    assert parameters["allowedInboundCidrList"]["value"] == "${ALLOWED_INBOUND_CIDRS=}"
    assert "ipSecurityRestrictionsDefaultAction: 'Deny'" in texts["modules/appservice.bicep"]
    assert "scmIpSecurityRestrictionsDefaultAction: 'Deny'" in texts["modules/appservice.bicep"]


def test_the_deploy_doc_says_the_capacity_mode_is_fixed_at_creation(
    model: dict[str, im.Template],
) -> None:
    """Serverless is an account capability chosen at creation (EnableServerless)."""
    account = next(r for r in model["modules/cosmos.bicep"].resources if r.symbol == "account")
    assert "EnableServerless" in json.dumps(account.body["properties"]["capabilities"])
    row = deploy_doc_variables()["COSMOS_CAPACITY_MODE"]
    assert "**Choose before the first provision**" in row
    assert "cannot be switched" in row


def test_the_deploy_doc_gives_the_federated_credential_the_templates_rely_on(
    model: dict[str, im.Template],
) -> None:
    auth = next(
        r
        for r in model["modules/appservice.bicep"].resources
        if r.type == "Microsoft.Web/sites/config" and r.body.get("name") == "authsettingsV2"
    )
    provider = auth.body["properties"]["identityProviders"]["azureActiveDirectory"]
    assert (
        provider["registration"]["clientSecretSettingName"]
        == "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"
    )
    sign_in = prose(doc_section("### Sign-in: `AUTH_CLIENT_ID` for anything beyond a smoke test"))
    for needed in (
        "`https://login.microsoftonline.com/<tenant-id>/v2.0`",
        "**Object (principal) ID**",
        "`api://AzureADTokenExchange`",
        "`OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID`",
    ):
        assert needed in sign_in, needed
    for audience in provider["validation"]["allowedAudiences"]:
        assert audience.replace("${authClientId}", "<AUTH_CLIENT_ID>") in sign_in, audience


# Soft-deleted resource types -> what the teardown must tell an operator to run.
SOFT_DELETED = {
    "Microsoft.KeyVault/vaults": "az keyvault recover",
    "Microsoft.CognitiveServices/accounts": "azd down --purge",
    "Microsoft.ApiManagement/service": "az apim deletedservice purge",
}


def test_the_teardown_names_every_soft_deleted_resource(model: dict[str, im.Template]) -> None:
    teardown = prose(doc_section("## Tear down"))
    declared = {
        r.type
        for t in model.values()
        for r in t.resources
        if not r.existing and r.type in SOFT_DELETED
    }
    assert declared == set(SOFT_DELETED)
    for rtype in declared:
        assert SOFT_DELETED[rtype] in teardown, rtype
    assert "`apim-<token>`" in teardown
    apim = next(r for r in model["modules/apim.bicep"].resources if r.symbol == "apim")
    assert apim.body["name"] == "apim-${resourceToken}"


def test_the_deploy_doc_says_where_the_gateway_certificate_is_granted() -> None:
    public = prose(doc_section("## What is public, and why"))
    assert "Key Vault Secrets User on that one secret" in public
    assert "the templates grant nothing on it" in public
    assert '--scope "<vault resource id>/secrets/<name>"' in public


def test_the_deploy_doc_says_telemetry_is_keyless_except_with_api_management() -> None:
    deploy = prose(doc_section("## Deploy"))
    assert "**Monitoring Metrics Publisher** on the Application Insights resource only" in deploy
    assert "`APPLICATIONINSIGHTS_AUTHENTICATION_STRING`" in deploy
    assert "`Authorization=AAD;ClientId=<the identity's client id>`" in deploy
    assert "**Except with API Management** (`ENABLE_APIM=true`)" in deploy
    stays_on = "local authentication stays enabled on the resource while API Management is deployed"
    assert stays_on in deploy
    assert "Entra ID only (no instrumentation key) except with API Management" in deploy
