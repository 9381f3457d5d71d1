"""A daily token limit that could never admit a message (every message reserves MAX_OUTPUT_TOKENS
and its prompt) stops the start with one line naming the setting, in the settings and in the
tenant policy file alike, instead of refusing every message of its users with a notice that
makes no sense."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from config import Settings
from controls.policy import PolicyFileError, load_tenant_policies
from tests.integration.test_configuration_errors import assert_configuration_error, run_app

TENANT_A = "aaaa1111-0000-0000-0000-000000000001"
TENANT_C = "cccc3333-0000-0000-0000-000000000003"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"QUOTA_USER_TOKENS_PER_DAY": 300}, "QUOTA_USER_TOKENS_PER_DAY (300)"),
        # As much as the answer alone: the prompt takes at least a token more.
        ({"QUOTA_USER_TOKENS_PER_DAY": 1024}, "QUOTA_USER_TOKENS_PER_DAY (1,024)"),
        ({"QUOTA_TENANT_TOKENS_PER_DAY": 500}, "QUOTA_TENANT_TOKENS_PER_DAY (500)"),
        (
            {"QUOTA_USER_TOKENS_PER_DAY": 5000, "MAX_OUTPUT_TOKENS": 8000},
            "QUOTA_USER_TOKENS_PER_DAY (5,000)",
        ),
    ],
)
def test_a_daily_token_limit_below_the_smallest_message_is_refused_naming_the_setting(
    make_settings: Callable[..., Settings], settings: dict[str, int], named: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(**settings)

    [error] = refused.value.errors()
    assert error["msg"].startswith(f"Value error, {named} must be 0 (no limit) or more than ")
    assert (
        "MAX_OUTPUT_TOKENS" in error["msg"] and "no message could ever be answered" in error["msg"]
    )
    # One token more than the answer alone admits a message; 0 is no limit.
    largest = settings.get("MAX_OUTPUT_TOKENS", 1024)
    admitted = {
        name: largest + 1 if name.startswith("QUOTA") else v for name, v in settings.items()
    }
    assert make_settings(**admitted).max_output_tokens == largest
    assert make_settings(**{name: 0 for name in settings if name.startswith("QUOTA")})


@pytest.mark.parametrize("field", ["user_tokens_per_day", "tokens_per_day"])
def test_a_tenant_policy_limit_below_the_smallest_message_is_refused_naming_the_entry(
    tmp_path: Path, field: str
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(f'tenants:\n  "{TENANT_A}":\n    {field}: 300\n', encoding="utf-8")

    with pytest.raises(PolicyFileError) as refused:
        load_tenant_policies(path, max_output_tokens=1024)

    assert str(refused.value) == (
        f"TENANT_POLICY_FILE: {path}: tenants.{TENANT_A}.{field} (300) must be 0 (no limit) or "
        "more than MAX_OUTPUT_TOKENS (1,024): every message reserves MAX_OUTPUT_TOKENS tokens "
        "and its prompt, so no message could ever be answered"
    )
    # 0 is no limit; more than the smallest message is a limit.
    path.write_text(
        f'tenants:\n  "{TENANT_A}":\n    {field}: 0\n  "{TENANT_C}":\n    {field}: 1025\n',
        encoding="utf-8",
    )
    assert len(load_tenant_policies(path, max_output_tokens=1024).tenants) == 2


def test_the_app_does_not_start_with_a_limit_that_admits_no_message(tmp_path: Path) -> None:
    code, output = run_app(tmp_path, QUOTA_USER_TOKENS_PER_DAY="300")
    assert_configuration_error(code, output, "QUOTA_USER_TOKENS_PER_DAY (300)", "MAX_OUTPUT_TOKENS")

    policy = tmp_path / "tenants.yaml"
    policy.write_text(
        f'tenants:\n  "{TENANT_A}":\n    user_tokens_per_day: 300\n', encoding="utf-8"
    )
    code, output = run_app(tmp_path, TENANT_POLICY_FILE=str(policy))
    assert_configuration_error(code, output, f"tenants.{TENANT_A}.user_tokens_per_day (300)")
