"""Policy files fail loudly at start-up with a message that names the setting, file and field;
quota arithmetic on the real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app import create_app
from config import Settings
from controls.audit import RefusalLog
from controls.policy import (
    AccessPolicy,
    PolicyFileError,
    load_tenant_policies,
    load_usage_policy,
)
from controls.quotas import (
    LimitKind,
    QuotaExceeded,
    QuotaLimits,
    Quotas,
    TokenReservation,
    user_scope,
)
from controls.windows import day_window, minute_window
from storage.sqlite import SqliteStore
from tests.controls.support import FakeClock

T1 = "0f0f0000-aaaa-bbbb-cccc-000000000001"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants: [a, b", r"is not valid YAML at line 1"),
        (
            f"tenants:\n  {T1}:\n    tokens_per_dya: 5\n",
            rf"tenants\.{T1}\.tokens_per_dya: Extra inputs",
        ),
        (
            f"tenants:\n  {T1}:\n    tokens_per_day: -1\n",
            rf"tenants\.{T1}\.tokens_per_day: Input should",
        ),
        (f"tenants:\n  {T1.upper()}: {{}}\n  {T1}: {{}}\n", f"lists tenant {T1} twice"),
        (f"tenants:\n  {T1}:\n    system_prompt_file: nope.j2\n", r"nope\.j2 does not exist"),
        (
            "tenants:\n  contoso.onmicrosoft.com: {}\n",
            r"contoso\.onmicrosoft\.com is not an Entra tenant id .*a domain name is not one",
        ),
        (
            "tenants:\n  0f0f0000-aaaa-bbbb-cccc-00000000000: {}\n",
            r"0f0f0000-aaaa-bbbb-cccc-00000000000 is not an Entra tenant id",
        ),
        ("other: 1\n", r"other: Extra inputs"),
    ],
)
def test_bad_tenant_policy_file_is_refused_with_a_clear_message(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "tenants.yaml", text)
    with pytest.raises(PolicyFileError, match=f"TENANT_POLICY_FILE: .*{message}"):
        load_tenant_policies(path)


def test_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="USAGE_POLICY_FILE: cannot read"):
        load_usage_policy(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ntext:\n  en: Be nice.\n", r"text\.ja: Field required"),
        ("text:\n  en: a\n  ja: い\n", r"version: Field required"),
        ("version: 2\ntext:\n  en: ''\n  ja: い\n", r"text\.en: String should have at least"),
    ],
)
def test_bad_usage_policy_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message):
        load_usage_policy(write(tmp_path, "policy.yaml", text))


def test_usage_policy_version_may_be_a_number_or_a_string(tmp_path: Path) -> None:
    policy = load_usage_policy(write(tmp_path, "p.yaml", "version: 3\ntext: {en: a, ja: い}\n"))
    assert policy is not None and policy.version == "3" and policy.text_for("ja") == "い"
    assert load_usage_policy(None) is None


def test_app_does_not_start_with_a_broken_policy_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tenants.yaml", f"tenants:\n  {T1}:\n    user_tokens_per_day: lots\n")
    settings = Settings(_env_file=None, TENANT_POLICY_FILE=str(path))  # type: ignore[call-arg]
    with pytest.raises(PolicyFileError, match="user_tokens_per_day"):
        create_app(settings)


def test_tenant_template_paths_are_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    template = write(tmp_path / "prompts", "t.md.j2", "Hi {{ organization_name }}")
    path = write(
        tmp_path,
        "tenants.yaml",
        f"tenants:\n  {T1.upper()}:\n    system_prompt_file: prompts/t.md.j2\n",
    )
    policies = load_tenant_policies(path)
    assert policies.prompt_templates() == {T1: template.resolve()}
    assert policies.for_tenant(T1.upper()) is not None and policies.for_tenant("") is None


def test_allow_lists() -> None:
    everyone = AccessPolicy.of([], [])
    assert everyone.refusal("", "anything") is None
    policy = AccessPolicy.of([" T1 ", ""], ["MSTeams"])
    assert policy.refusal("t1", "msteams") is None
    assert policy.refusal("t2", "msteams") == "tenant_refused"
    assert policy.refusal("t1", "webchat") == "channel_refused"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "chat.db")
    await store.open()
    yield store
    await store.close()


async def test_reservation_is_settled_to_the_real_usage_in_its_own_day(
    store: SqliteStore,
) -> None:
    clock = FakeClock(datetime(2026, 11, 21, 23, 59, 50, tzinfo=UTC))
    quotas = Quotas(
        store, RefusalLog(store, clock), QuotaLimits(user_tokens_per_day=1000), None, clock
    )
    reservation = await quotas.reserve_tokens("u", "", 900)
    assert isinstance(reservation, TokenReservation)
    clock.advance(seconds=20)  # the answer arrives after midnight
    await quotas.settle(reservation, 120)
    await quotas.close()  # writes the deferred settlement
    assert (await store.read_usage(user_scope("u"), "d:2026-11-21")).tokens == 120
    assert (await store.read_usage(user_scope("u"), "d:2026-11-22")).tokens == 0


async def test_estimate_over_the_remaining_allowance_is_refused_with_the_reset_time(
    store: SqliteStore,
) -> None:
    clock = FakeClock(datetime(2026, 11, 21, 22, 30, tzinfo=UTC))
    quotas = Quotas(
        store, RefusalLog(store, clock), QuotaLimits(user_tokens_per_day=1000), None, clock
    )
    assert isinstance(await quotas.reserve_tokens("u", "", 600), TokenReservation)
    refused = await quotas.reserve_tokens("u", "", 600)
    assert isinstance(refused, QuotaExceeded)
    assert refused.kind is LimitKind.USER_TOKENS_PER_DAY
    assert refused.resets_at == datetime(2026, 11, 22, tzinfo=UTC)
    assert refused.seconds_left == 90 * 60
    assert refused.used == 600  # nothing was added by the refusal


def test_windows_are_utc_minutes_and_days() -> None:
    now = datetime(2026, 11, 21, 10, 5, 42, tzinfo=UTC)
    assert minute_window(now).key == "m:2026-11-21T10:05"
    assert minute_window(now).seconds_left(now) == 18
    assert day_window(now).key == "d:2026-11-21"


@pytest.mark.parametrize("version", ["1.10", "2.0", "2026-11-01", "yes", "[1, 2]", "null"])
def test_a_usage_policy_version_yaml_reads_as_no_string_or_integer_must_be_quoted(
    tmp_path: Path, version: str
) -> None:
    """Unquoted, `1.10` is the number 1.1: users would be shown 1.1, and moving from 1.1 to 1.10
    would not ask anyone again."""
    path = write(tmp_path, "p.yaml", f"version: {version}\ntext: {{en: a, ja: い}}\n")
    with pytest.raises(PolicyFileError) as raised:
        load_usage_policy(path)
    message = str(raised.value)
    assert message.startswith(f"USAGE_POLICY_FILE: {path} is invalid: version: "), message
    assert 'quote it, e.g. version: "1.10"' in message and "Value error" not in message


@pytest.mark.parametrize("version", ['"1.10"', "'2026-11-01'", "2", "010", "0x1A", "1_000"])
def test_a_quoted_or_whole_number_usage_policy_version_is_taken_as_written(
    tmp_path: Path, version: str
) -> None:
    path = write(tmp_path, "p.yaml", f"version: {version}\ntext: {{en: a, ja: い}}\n")
    policy = load_usage_policy(path)
    assert policy is not None and policy.version == version.strip("\"'")


@pytest.mark.parametrize(
    ("text", "field", "language"),
    [
        ('version: "1"\ntext: {en: a, ja: "   "}\n', "text.ja", "Japanese"),
        ('version: "1"\ntext: {en: a, ja: "\u3000\u3000"}\n', "text.ja", "Japanese"),
        ('version: "1"\ntext: {en: " \\t\\n", ja: い}\n', "text.en", "English"),
        ('version: "  "\ntext: {en: a, ja: い}\n', "version", ""),
        ('version: "1"\ntext: {en: a, ja: "\u200b"}\n', "text.ja", "Japanese"),
        ('version: "\u200b\u3000"\ntext: {en: a, ja: い}\n', "version", ""),
    ],
)
def test_a_blank_usage_policy_text_or_version_is_refused_naming_it(
    tmp_path: Path, text: str, field: str, language: str
) -> None:
    # Users would be asked to accept a policy that says nothing.
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(PolicyFileError) as raised:
        load_usage_policy(path)
    message = str(raised.value)
    assert message.startswith(f"USAGE_POLICY_FILE: {path} is invalid: {field}: "), message
    assert "blank" in message and language in message, message


def test_a_usage_policy_version_with_a_line_break_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", 'version: "2026-11\\nsecond line"\ntext: {en: a, ja: い}\n')
    with pytest.raises(PolicyFileError, match="version: the version holds a line break"):
        load_usage_policy(path)


def test_a_tenant_limit_of_true_is_refused_not_taken_as_one(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", f"tenants:\n  {T1}:\n    user_requests_per_minute: true\n")
    with pytest.raises(PolicyFileError, match="user_requests_per_minute"):
        load_tenant_policies(path)
