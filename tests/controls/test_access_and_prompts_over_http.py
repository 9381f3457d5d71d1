"""Tenant and channel allow-lists, and per-tenant system prompts, end to end."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pytest

from chat.prompts import PromptBuilder
from chat.tokens import TokenCounter
from config import PROJECT_ROOT
from storage.models import Message, Role
from tests.controls.support import Chat, ControlledApp, conversation, model_calls
from tests.support import RecordingConnector

ALLOWED = "11111111-2222-3333-4444-555555555555"
OTHER_ALLOWED = "22222222-3333-4444-5555-666666666666"


def in_tenant(tenant_id: str) -> dict[str, object]:
    return {"channelData": {"tenant": {"id": tenant_id}}}


async def test_message_from_a_tenant_outside_the_allow_list_is_refused_and_audited(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await controlled_app(ALLOWED_TENANT_IDS=f"{ALLOWED}, {OTHER_ALLOWED}")
    outsider = Chat(client, connector, conversation_id="x", **in_tenant("99999999-0000"))
    calls = await model_calls(simulator_url)

    with caplog.at_level(logging.WARNING, logger="controls"):
        refused = await outsider.send("Secret question")

    assert "your organization is not one of them" in refused["text"]
    assert await model_calls(simulator_url) == calls
    assert await outsider.store.conversation_messages(conversation(outsider)) == []
    [event] = [r for r in caplog.records if getattr(r, "event", None) == "tenant_refused"]
    assert "Secret" not in str(vars(event))
    records, _ = await outsider.store.list_audit(10)
    [audit] = [r for r in records if r.action == "tenant_refused"]
    assert audit.actor == "system" and audit.target == "tenant:99999999-0000"

    # The allowed tenant (any letter case) is answered; no tenant at all is refused too.
    member = Chat(client, connector, conversation_id="m", **in_tenant(ALLOWED.upper()))
    assert "Allowed question" in (await member.send("Allowed question"))["text"]
    anonymous = Chat(client, connector, conversation_id="a")
    assert "not one of them" in (await anonymous.send("Hi"))["text"]


async def test_japanese_user_of_another_tenant_is_refused_in_japanese(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    client = await controlled_app(ALLOWED_TENANT_IDS=ALLOWED)
    chat = Chat(client, connector, locale="ja-JP", **in_tenant("other"))
    assert "ご所属の組織は対象外です" in (await chat.send("こんにちは"))["text"]


async def test_message_from_a_channel_outside_the_allow_list_is_refused(
    controlled_app: ControlledApp, connector: RecordingConnector, simulator_url: str
) -> None:
    client = await controlled_app(ALLOWED_CHANNELS="msteams,webchat")
    chat = Chat(client, connector)  # channel "test"
    calls = await model_calls(simulator_url)

    refused = await chat.send("Hello")

    assert "not available in this app" in refused["text"]
    assert await model_calls(simulator_url) == calls
    records, _ = await chat.store.list_audit(10)
    assert [r.target for r in records if r.action == "channel_refused"] == ["channel:test"]
    # Commands are refused too: nothing of the bot is available there.
    assert "not available in this app" in (await chat.send("/usage"))["text"]


async def test_empty_allow_lists_allow_every_tenant_and_channel(
    controlled_app: ControlledApp, connector: RecordingConnector
) -> None:
    client = await controlled_app(ALLOWED_TENANT_IDS="", ALLOWED_CHANNELS="")
    chat = Chat(client, connector, **in_tenant("any-tenant"))
    assert "Hello" in (await chat.send("Hello"))["text"]


async def test_tenant_with_its_own_template_gets_its_own_system_prompt(
    controlled_app: ControlledApp, connector: RecordingConnector, tmp_path: Path
) -> None:
    template = tmp_path / "fabrikam.md.j2"
    template.write_text(
        "You are the Fabrikam legal assistant for {{ organization_name }}. Today is {{ today }}."
        " Answer in {{ language_name }} ({{ locale }}). Cite the internal policy handbook"
        " section for every answer and never give personal legal advice.",
        encoding="utf-8",
    )
    policy = tmp_path / "tenants.yaml"
    policy.write_text(
        f"tenants:\n  {ALLOWED}:\n    system_prompt_file: fabrikam.md.j2\n", encoding="utf-8"
    )
    client = await controlled_app(TENANT_POLICY_FILE=str(policy))
    fabrikam = Chat(client, connector, conversation_id="f", **in_tenant(ALLOWED))
    contoso = Chat(client, connector, conversation_id="c", **in_tenant("contoso"))

    await fabrikam.send("Same question")
    await contoso.send("Same question")

    def prompt_tokens(messages: list[Message]) -> int:
        [answer] = [m for m in messages if m.role is Role.ASSISTANT]
        assert answer.usage is not None
        return answer.usage.prompt

    fabrikam_prompt = prompt_tokens(
        await fabrikam.store.conversation_messages(conversation(fabrikam))
    )
    contoso_prompt = prompt_tokens(await contoso.store.conversation_messages(conversation(contoso)))
    # The model saw each tenant's own system prompt: the difference is exactly theirs.
    counter = TokenCounter("gpt-4o")
    builder = PromptBuilder(
        PROJECT_ROOT / "chat" / "prompts" / "system.md.j2",
        "Contoso",
        "Contoso Assistant",
        {ALLOWED: template},
    )
    today = date.today()
    expected = counter.count_text(builder.system_prompt("en-US", today, ALLOWED)) - (
        counter.count_text(builder.system_prompt("en-US", today, "contoso"))
    )
    assert expected != 0
    assert fabrikam_prompt - contoso_prompt == expected
