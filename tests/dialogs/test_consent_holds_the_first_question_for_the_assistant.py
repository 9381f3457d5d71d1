"""What waits for the answer to the usage policy is the user's first question for the
assistant: a first message that is itself an answer ("yes") or one the chat would refuse (a
blank message) holds nothing, and the next question does wait, to be answered once the user
accepts."""

from __future__ import annotations

from pathlib import Path

from tests.controls.support import Chat, ControlledApp, model_calls
from tests.dialogs.test_consent_over_http import policy_v1  # noqa: F401 - a fixture
from tests.support import RecordingConnector


async def test_a_question_sent_after_a_first_answer_waits_and_is_answered_on_acceptance(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,  # noqa: F811
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(client, connector)
    calls = await model_calls(simulator_url)

    question = await chat.send("yes")
    assert "usage policy of Contoso (version 1)" in question["text"]
    reminder = await chat.send("What is the capital of France?")
    assert "I accept" in reminder["text"]
    thanks, answer = await chat.send_expecting("I accept", 2)

    assert "Here is the answer to the message you sent before" in thanks["text"]
    assert "capital of France" in answer["text"]
    assert await model_calls(simulator_url) == calls + 1


async def test_a_blank_first_message_waits_for_nothing(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,  # noqa: F811
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(client, connector)
    calls = await model_calls(simulator_url)

    question = await chat.send("\u200b ")
    assert "usage policy of Contoso (version 1)" in question["text"]
    [thanks] = await chat.send_expecting("I accept", 1)

    assert "Thank you" in thanks["text"]
    assert "message you sent before" not in thanks["text"]
    assert await model_calls(simulator_url) == calls


async def test_an_early_answer_redelivered_after_a_later_question_waits_is_not_consent(
    controlled_app: ControlledApp,
    connector: RecordingConnector,
    simulator_url: str,
    policy_v1: Path,  # noqa: F811
) -> None:
    """The first "I accept", sent before the policy was shown, stays the message that asked the
    question when a later one takes the waiting place: sent again, it is still no consent."""
    first = await controlled_app(USAGE_POLICY_FILE=str(policy_v1))
    chat = Chat(first, connector)
    [question] = await chat.replies_to("I accept", activity_id="early-1")
    assert "usage policy of Contoso" in question["text"]
    [reminder] = await chat.replies_to("What is the capital of France?", activity_id="ask-2")
    assert "I accept" in reminder["text"]
    await first.close()
    calls = await model_calls(simulator_url)

    restarted = Chat(await controlled_app(USAGE_POLICY_FILE=str(policy_v1)), connector)
    assert await restarted.replies_to("I accept", activity_id="early-1") == []
    assert await model_calls(simulator_url) == calls

    thanks, answer = await restarted.send_expecting("I accept", 2)
    assert "message you sent before" in thanks["text"]
    assert "capital of France" in answer["text"]
