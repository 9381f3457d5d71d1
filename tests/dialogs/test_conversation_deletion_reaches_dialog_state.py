"""The dialog state the consent dialog writes in a conversation (the message waiting for consent)
carries that conversation, so deleting the conversation deletes it, on both stores; the user's
dialog state in another conversation and their consent record stay. The conversation's id is
as long as a Teams one-to-one chat's: too long for botbuilder's state key to name it whole."""

from __future__ import annotations

from pathlib import Path

from tests.controls.support import Chat, ControlledApp, conversation
from tests.dialogs.test_consent_over_http import policy_file
from tests.stores import export_user
from tests.support import RecordingConnector

# A Teams one-to-one chat's id is about 130 characters.
LONG_ID = "a:1" + "Qx7TzW0pLmN4vB8sK2dY6fH1jR5cE9gA3uI0oP" * 3


async def test_deleting_a_conversation_deletes_the_message_waiting_there_for_consent_only(
    controlled_app: ControlledApp, connector: RecordingConnector, tmp_path: Path
) -> None:
    client = await controlled_app(USAGE_POLICY_FILE=str(policy_file(tmp_path, "1")))
    pasted = Chat(client, connector, conversation_id=LONG_ID)
    other = Chat(client, connector, conversation_id="conv-other")
    assert "usage policy" in (await pasted.send("the customer's IBAN is DE89 3704"))["text"]
    assert "usage policy" in (await other.send("Hello"))["text"]
    before = (await export_user(pasted.store, "user-1"))["states"]
    assert len([d for d in before if "DE89 3704" in str(d)]) == 1

    counts = await pasted.store.delete_conversation(conversation(pasted))

    assert counts == {"conversations": 0, "messages": 0, "states": 1}
    after = (await export_user(pasted.store, "user-1"))["states"]
    assert "DE89 3704" not in str(after)
    # The user's own state and their question waiting in the other conversation stay.
    assert len(after) == len(before) - 1
    assert "Hello" in str(after)
    _, answer = await other.send_expecting("I accept", 2)
    assert "Hello" in answer["text"]
