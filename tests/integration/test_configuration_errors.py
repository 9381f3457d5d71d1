"""`python app.py` with a setting the operator must fix: one line per problem on stderr naming the
setting (or the file and the entry), exit code 2, no traceback, and no value of any setting: a
bad value may be a secret, and a cross-setting check used to quote the tail of all of them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from config import PROJECT_ROOT, Settings

# The app would serve on if it accepted the settings: long enough to reach the store and the port.
RUN_TIMEOUT_SECONDS = 30
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault(SecretUri=https://kv-contoso.vault.azure.net/secrets/k/)"


def run_app(tmp_path: Path, **env: str) -> tuple[int, str]:
    """Exit code and everything the app wrote, started as the operator starts it."""
    ours = {(field.alias or name).upper() for name, field in Settings.model_fields.items()}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    environment.update({"PORT": "0", "DATA_DIR": str(tmp_path / "data"), **env})
    try:
        done = subprocess.run(
            [sys.executable, "app.py"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"") + (exc.stderr or b"")
        pytest.fail(f"the app accepted the settings and served: {output.decode()[-2000:]}")
    return done.returncode, (done.stdout + done.stderr).decode()


def assert_configuration_error(code: int, output: str, *names: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    assert "configuration error: " in output, output
    for name in names:
        assert name in output, output


def assert_nothing_of(secret: str, output: str) -> None:
    slices = {secret[i : i + 6] for i in range(len(secret) - 5)}
    shown = sorted(piece for piece in slices if piece in output)
    assert not shown, f"{shown} of a secret in: {output}"


def test_a_short_token_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    code, output = run_app(tmp_path, WEBCHAT_TOKEN_SECRET="ShortSecretXYZ123")
    assert_configuration_error(code, output, "WEBCHAT_TOKEN_SECRET", "32 characters")
    assert_nothing_of("ShortSecretXYZ123", output)
    assert "input_value" not in output


def test_a_failed_cross_setting_check_shows_no_secret(tmp_path: Path) -> None:
    secrets = {
        "MicrosoftAppPassword": "Qx7~bot-PASSWORD-kq8Zr2Lw9Yt4",
        "AZURE_OPENAI_API_KEY": "f3a9c0d1e2b74c6a8f5e0d1c2b3a4958",
        "ADMIN_SESSION_SECRET": "AdminSessionKEY4vN8mQ2xR6tY0pL3jH7gF1dS5aZ9",
        "ADMIN_PSEUDONYM_KEY": "PseudoKEY2kL9mN4bV7cX1zQ8wE5rT3yU6iO0pA",
        "DIRECT_LINE_SECRET": "DLsite.Azure-abcdefghijklmnop-QRSTUVWXYZ0123456789",
    }
    code, output = run_app(
        tmp_path,
        HOST="0.0.0.0",  # noqa: S104 (as on Azure)
        MicrosoftAppId="00000000-0000-0000-0000-000000000001",
        MODEL_DEADLINE_SECONDS="150",
        **secrets,
    )
    assert_configuration_error(code, output, "MODEL_DEADLINE_SECONDS", "TURN_DEADLINE_SECONDS")
    for secret in secrets.values():
        assert_nothing_of(secret, output)


def test_a_key_written_in_the_deployments_file_is_refused_without_showing_it(
    tmp_path: Path,
) -> None:
    key = "sk-FileKeyZZZ9876543210abcdef"
    deployments = tmp_path / "deployments.yaml"
    deployments.write_text(
        "deployments:\n  - name: east\n    endpoint: https://east.openai.azure.com\n"
        f"    deployment: gpt-4o\n    api_key: {key}\n",
        encoding="utf-8",
    )
    code, output = run_app(tmp_path, DEPLOYMENTS_FILE=str(deployments))
    assert_configuration_error(code, output, "DEPLOYMENTS_FILE", "east", "api_key_env")
    assert_nothing_of(key, output)


def _a_file(tmp_path: Path) -> str:
    """A path whose folder is a file: no folder can be made there, whoever runs the tests."""
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    return str(tmp_path / "a-file" / "sub")


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        ({"APP_WORKERS": "2"}, "APP_WORKERS"),
        ({"ADMIN_SESSION_SECRET": KEY_VAULT_REFERENCE}, "ADMIN_SESSION_SECRET"),
        ({"SYSTEM_PROMPT_FILE": "/nonexistent/system.md.j2"}, "SYSTEM_PROMPT_FILE"),
        ({"SQLITE_PATH": "{a_file}/chat.db"}, "SQLITE_PATH"),
        ({"DATA_DIR": "{a_file}"}, "DATA_DIR"),
        ({"COSMOS_ENDPOINT": "https://127.0.0.1:1", "COSMOS_KEY": "abc"}, "COSMOS_KEY"),
        ({"TENANT_POLICY_FILE": "/nonexistent/tenants.yaml"}, "TENANT_POLICY_FILE"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_not_a_traceback(
    tmp_path: Path, settings: dict[str, str], name: str
) -> None:
    a_file = _a_file(tmp_path)
    env = {key: value.format(a_file=a_file) for key, value in settings.items()}
    code, output = run_app(tmp_path, **env)
    assert_configuration_error(code, output, name)


def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = run_app(tmp_path, HOST="127.0.0.1", PORT=str(port))
    assert_configuration_error(code, output, "PORT", "already in use")


def test_an_unresolved_key_vault_reference_for_application_insights_is_refused(
    tmp_path: Path,
) -> None:
    code, output = run_app(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=KEY_VAULT_REFERENCE)
    assert_configuration_error(
        code, output, "APPLICATIONINSIGHTS_CONNECTION_STRING", "unresolved Key Vault reference"
    )


def test_an_unresolved_key_vault_reference_as_a_deployments_key_is_refused(
    tmp_path: Path,
) -> None:
    deployments = tmp_path / "deployments.yaml"
    deployments.write_text(
        "deployments:\n  - name: east\n    endpoint: https://east.openai.azure.com\n"
        "    deployment: gpt-4o\n    api_key_env: EAST_OPENAI_KEY\n",
        encoding="utf-8",
    )
    code, output = run_app(
        tmp_path, DEPLOYMENTS_FILE=str(deployments), EAST_OPENAI_KEY=KEY_VAULT_REFERENCE
    )
    assert_configuration_error(
        code, output, "DEPLOYMENTS_FILE", "EAST_OPENAI_KEY", "unresolved Key Vault reference"
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"MODEL_TIMEOUT_SECONDS": "inf"},
        {"ADMIN_SESSION_SECRET": "a"},
        {"ADMIN_PSEUDONYM_KEY": "b"},
    ],
)
def test_an_unusable_value_is_refused_at_start_up(tmp_path: Path, settings: dict[str, str]) -> None:
    code, output = run_app(tmp_path, **settings)
    assert_configuration_error(code, output, *settings)


def test_a_prompt_template_that_is_not_valid_jinja_names_its_file_and_line(tmp_path: Path) -> None:
    template = tmp_path / "prompt.j2"
    template.write_text("You are {{ assistant_name }}.\nToday is {{ today }\n", encoding="utf-8")
    code, output = run_app(tmp_path, SYSTEM_PROMPT_FILE=str(template))
    assert_configuration_error(code, output, str(template), "line 2")


def test_an_application_insights_connection_string_that_is_not_one_is_refused_unquoted(
    tmp_path: Path,
) -> None:
    malformed = "InstrumentationKey=;IngestionEndpoint=https://nowhere.example/Secret42Value"
    code, output = run_app(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=malformed)
    assert_configuration_error(code, output, "APPLICATIONINSIGHTS_CONNECTION_STRING")
    assert_nothing_of("Secret42Value", output)


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"COSMOS_ENDPOINT": "https://127.0.0.1:1", "COSMOS_KEY": "abc"}, "COSMOS_KEY"),
        ({"SQLITE_PATH": "{a_file}/chat.db"}, "SQLITE_PATH"),
    ],
)
def test_with_several_workers_a_setting_only_a_worker_meets_stops_the_app_once(
    tmp_path: Path, settings: dict[str, str], name: str
) -> None:
    """Such a setting is first used inside each worker: the parent says it once, as one process
    does, instead of a traceback per worker and restarts that meet it again."""
    a_file = _a_file(tmp_path)
    env = {key: value.format(a_file=a_file) for key, value in settings.items()}
    code, output = run_app(
        tmp_path,
        APP_WORKERS="2",
        DIRECT_LINE_SECRET="DLsite.Azure-abcdefghijklmnop-QRSTUVWXYZ0123456789",
        ADMIN_AUTH_MODE="appservice",
        ADMIN_SESSION_SECRET="AdminSessionKEY4vN8mQ2xR6tY0pL3jH7gF1dS5aZ9",
        ADMIN_PSEUDONYM_KEY="PseudoKEY2kL9mN4bV7cX1zQ8wE5rT3yU6iO0pA",
        **env,
    )
    assert_configuration_error(code, output, name)
    problems = [line for line in output.splitlines() if line.startswith("configuration error: ")]
    assert len(problems) == 1, output
    assert "starting a new one" not in output, output


@pytest.mark.parametrize(
    ("host", "port", "problem"),
    [
        ("256.1.1.1", "0", "no address is known by that name"),
        ("no-such-host.invalid", "free", "no address is known by that name"),
        ("192.0.2.10", "free", "not an address of this machine"),  # TEST-NET-1: nobody's
    ],
)
def test_a_host_the_app_cannot_listen_on_is_one_line_naming_it(
    tmp_path: Path, host: str, port: str, problem: str
) -> None:
    # PORT=0 is chosen before the app is built, a set port when it binds: both paths.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = str(probe.getsockname()[1])
    code, output = run_app(tmp_path, HOST=host, PORT=free if port == "free" else port)
    assert_configuration_error(code, output, "HOST", problem)


def test_a_cosmos_endpoint_that_is_not_a_url_is_refused_unquoted(tmp_path: Path) -> None:
    code, output = run_app(tmp_path, COSMOS_ENDPOINT="not-a-url-Secret42Value", COSMOS_KEY="abc")
    assert_configuration_error(code, output, "COSMOS_ENDPOINT", "https://")
    assert_nothing_of("Secret42Value", output)


def test_a_system_prompt_with_a_variable_the_app_does_not_pass_is_refused_at_start_up(
    tmp_path: Path,
) -> None:
    template = tmp_path / "prompt.j2"
    template.write_text(
        "You are {{ assistant_name }}.\nAsk {{ undefined_var }} for help.\n", encoding="utf-8"
    )
    code, output = run_app(tmp_path, SYSTEM_PROMPT_FILE=str(template))
    assert_configuration_error(code, output, str(template), "line 2", "undefined_var")


def test_a_tenant_prompt_with_a_variable_the_app_does_not_pass_is_refused_at_start_up(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    # Only Japanese speakers would reach this branch: it is checked all the same.
    (prompts / "fabrikam.md.j2").write_text(
        "You are {{ assistant_name }}.\n"
        "{% if language_name == 'Japanese' %}{{ department }}{% endif %}\n",
        encoding="utf-8",
    )
    policy = tmp_path / "tenants.yaml"
    policy.write_text(
        'tenants:\n  "72f988bf-86f1-41af-91ab-2d7cd011db47":\n'
        "    system_prompt_file: prompts/fabrikam.md.j2\n",
        encoding="utf-8",
    )
    code, output = run_app(tmp_path, TENANT_POLICY_FILE=str(policy))
    assert_configuration_error(code, output, "fabrikam.md.j2", "line 2", "department")


def test_a_history_budget_that_leaves_no_room_beside_a_tenants_prompt_stops_the_start(
    tmp_path: Path,
) -> None:
    """Every question would be refused as too long, every turn: said once, at start-up, with
    the budget that works. A tenant's larger template counts."""
    template = tmp_path / "long.md.j2"
    template.write_text("You are {{ assistant_name }}. " + "Be careful. " * 300, encoding="utf-8")
    policy = tmp_path / "tenants.yaml"
    policy.write_text(
        'tenants:\n  "72f988bf-86f1-41af-91ab-2d7cd011db47":\n'
        f"    system_prompt_file: {template}\n",
        encoding="utf-8",
    )

    code, output = run_app(tmp_path, TENANT_POLICY_FILE=str(policy), HISTORY_TOKEN_BUDGET="1200")

    assert_configuration_error(code, output, "HISTORY_TOKEN_BUDGET", "set it to at least")
    # The tenant's prompt (about 900 tokens) and a paragraph's room, not the default prompt's.
    needed = int(output.rsplit("at least ", 1)[1].split()[0])
    assert needed > 1200


def test_a_daily_token_limit_that_admits_no_message_stops_the_start(tmp_path: Path) -> None:
    """More than MAX_OUTPUT_TOKENS (1,000 by default), but every message also reserves its
    system prompt: with 1,100 even "hi" would be refused, for good."""
    code, output = run_app(tmp_path, QUOTA_USER_TOKENS_PER_DAY="1100")

    assert_configuration_error(code, output, "QUOTA_USER_TOKENS_PER_DAY", "admit no message")
    needed = int(output.rsplit("at least ", 1)[1].split()[0].replace(",", ""))
    assert needed > 1100


def test_a_tenants_daily_token_limit_is_checked_against_its_own_template(tmp_path: Path) -> None:
    template = tmp_path / "long.md.j2"
    template.write_text("You are {{ assistant_name }}. " + "Be careful. " * 300, encoding="utf-8")
    policy = tmp_path / "tenants.yaml"
    policy.write_text(
        'tenants:\n  "72f988bf-86f1-41af-91ab-2d7cd011db47":\n'
        f"    system_prompt_file: {template}\n"
        "    user_tokens_per_day: 1500\n",
        encoding="utf-8",
    )

    code, output = run_app(tmp_path, TENANT_POLICY_FILE=str(policy))

    # 1,500 would admit a message under the default prompt, not under this tenant's.
    assert_configuration_error(
        code,
        output,
        "TENANT_POLICY_FILE: tenants.72f988bf-86f1-41af-91ab-2d7cd011db47.user_tokens_per_day",
    )


def test_a_trusted_origin_that_is_not_an_origin_is_refused_unquoted(tmp_path: Path) -> None:
    code, output = run_app(
        tmp_path,
        WEBCHAT_TRUSTED_ORIGINS="https://intranet.contoso.com,https://portal.contoso.com/Secret42Value",
    )
    assert_configuration_error(code, output, "WEBCHAT_TRUSTED_ORIGINS", "entry 2")
    assert_nothing_of("Secret42Value", output)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"ALLOWED_CHANNELS": "teams"}, "ALLOWED_CHANNELS: entry 1 (teams)"),
        ({"ALLOWED_TENANT_IDS": "tenant-a;tenant-b"}, "separate tenant ids with commas"),
        ({"PUBLIC_BASE_URL": "assistant.contoso.com/"}, "PUBLIC_BASE_URL: must be"),
    ],
    ids=["channel", "tenants", "public-url"],
)
def test_an_access_or_url_typo_stops_the_start_in_one_line_naming_the_setting(
    tmp_path: Path, settings: dict[str, str], says: str
) -> None:
    # Each used to start cleanly, then refuse every user (or break the web chat's URLs).
    code, output = run_app(tmp_path, **settings)
    assert_configuration_error(code, output, *settings, says)
    problems = [line for line in output.splitlines() if line.startswith("configuration error: ")]
    assert len(problems) == 1, output
    assert "starting on" not in output, output


@pytest.mark.parametrize(
    "settings",
    [
        {"AZURE_OPENAI_ENDPOINT": "https://u:Secret42Value@contoso.openai.azure.com"},
        {
            "DIRECT_LINE_ENDPOINT": "https://svc:Secret42Value@directline.example/v3/directline",
            "DIRECT_LINE_SECRET": "x",
        },
        {"COSMOS_ENDPOINT": "https://acct:Secret42Value@127.0.0.1:1", "COSMOS_KEY": "abc"},
    ],
    ids=["model", "direct-line", "cosmos"],
)
def test_an_endpoint_with_a_password_stops_the_start_without_showing_it(
    tmp_path: Path, settings: dict[str, str]
) -> None:
    # Accepted, the model endpoint was logged whole at start-up ("model: ...") and the Direct
    # Line one sent to every browser in the chat page's Content-Security-Policy.
    code, output = run_app(tmp_path, **settings)
    [name] = [key for key in settings if key.endswith("_ENDPOINT")]
    assert_configuration_error(code, output, name, "user name or password")
    assert_nothing_of("Secret42Value", output)
