"""A user's "I accept" that arrived before their erasure, on another instance whose turn stores the
consent record only after the erasure's first pass, does not survive the second pass: the record
is dated by the arrival of the turn that wrote it (`turn_arrived`, storage/late.py). Two app
instances over one store, on both stores; the erasing instance's shutdown runs its second pass
early (at once, rather than minutes later)."""

from __future__ import annotations

from pathlib import Path

from storage.ids import safe_id
from tests.admin.helpers import appservice_header
from tests.controls.support import Chat
from tests.dialogs.test_consent_over_http import policy_file
from tests.dialogs.test_consent_race_between_instances import (  # noqa: F401  (fixture)
    Instance,
    _held_turn,
    _release,
    instance,
)
from tests.stores import export_user
from tests.support import RecordingConnector

ADMIN = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"], oid="oid-dpo", name="Dana")}
ADMIN_SETTINGS = {
    "ADMIN_AUTH_MODE": "appservice",
    "ADMIN_PSEUDONYM_KEY": "k" * 40,
    "ADMIN_SESSION_SECRET": "s" * 40,
}


async def test_a_consent_given_before_the_users_erasure_and_stored_after_it_goes_in_the_second_pass(
    instance: Instance,  # noqa: F811
    connector: RecordingConnector,
    tmp_path: Path,
) -> None:
    settings = {"USAGE_POLICY_FILE": str(policy_file(tmp_path, "1")), **ADMIN_SETTINGS}
    (answering, answering_store), (erasing, _) = (
        await instance(**settings),
        await instance(**settings),
    )
    chat = Chat(answering, connector)
    assert "policy 1" in (await chat.send("OLDQ1 my old question"))["text"]

    # "I accept" has read the open question; before its turn writes, the other instance erases
    # the user.
    await _held_turn(chat, answering_store, "I accept")
    csrf = (await (await erasing.get("/admin/api/me", headers=ADMIN)).json())["csrfToken"]
    response = await erasing.post(
        "/admin/api/users/delete",
        json={"user": chat.user_id, "confirm": chat.user_id, "reason": "erasure request 9"},
        headers={**ADMIN, "X-CSRF-Token": csrf},
    )
    assert response.status == 200, await response.text()
    await _release(chat, answering_store)
    store = answering_store.inner
    # botbuilder's key of the user's state, where their consent is recorded.
    consent_key = safe_id(f"test/users/{chat.user_id}")
    [(late, _)] = (await store.read_state([consent_key])).values()
    assert "usage_policy" in late, "the late write happened"

    await erasing.close()  # its shutdown runs the pending second pass now

    assert await store.read_state([consent_key]) == {}
    exported = await export_user(store, chat.user_id)
    assert exported["states"] == [], "neither the consent nor the dialog state stays"
    assert exported["messages"] == [] and exported["conversations"] == []
    assert await store.conversation_messages(safe_id(f"test:{chat.conversation_id}")) == []
