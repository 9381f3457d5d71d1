"""Workers hand each activity to the worker that owns its conversation (bot/peers.py), over
real Unix sockets; an owner that cannot be reached leaves the activity to the sender."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app import _socket_directory
from bot.peers import NOT_ANSWERED_IN_TIME, PeerLinks, WorkerGroup
from tests.support import eventually


class Owner:
    """What a worker's endpoint does with a handed-over activity, recorded."""

    def __init__(self, status: int = 202, delay: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = status
        self.delay = delay

    async def accept(self, raw: dict[str, Any]) -> int:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(raw)
        return self.status


def activity(n: int, conversation: str = "a:conv-1") -> dict[str, Any]:
    return {"type": "message", "id": f"act-{n}", "conversation": {"id": conversation}}


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A private directory short enough for Unix socket paths, as the workers' parent makes."""
    directory = _socket_directory()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def links(sockets: Path) -> AsyncIterator[tuple[PeerLinks, PeerLinks, Owner]]:
    owner = Owner()
    sender = PeerLinks(WorkerGroup(sockets, 0, 2), Owner().accept, timeout_seconds=1.0)
    receiver = PeerLinks(WorkerGroup(sockets, 1, 2), owner.accept, timeout_seconds=1.0)
    await sender.start()
    await receiver.start()
    yield sender, receiver, owner
    await sender.close()
    await receiver.close()


def test_every_process_agrees_on_the_owner_of_a_conversation() -> None:
    group = WorkerGroup(Path("/unused"), 0, 3)
    keys = [f"msteams:19:meeting_{n}@thread.v2;messageid={n}" for n in range(300)]
    here = [group.owner(key) for key in keys]
    # Another interpreter (another hash seed) computes the same owners.
    script = (
        "from pathlib import Path; from bot.peers import WorkerGroup; import sys, json; "
        "g = WorkerGroup(Path('/unused'), 0, 3); "
        "print(json.dumps([g.owner(k) for k in json.loads(sys.stdin.read())]))"
    )
    there = json.loads(
        subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
            [sys.executable, "-c", script],
            input=json.dumps(keys),
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(Path(__file__).parents[2])},
        ).stdout
    )
    assert here == there
    # Conversations are spread over every worker.
    assert min(here.count(n) for n in range(3)) > 60


async def test_handed_over_activities_reach_the_owner_in_the_order_they_were_sent(
    links: tuple[PeerLinks, PeerLinks, Owner],
) -> None:
    sender, receiver, owner = links
    statuses = await asyncio.gather(*(sender.forward(1, activity(n)) for n in range(50)))
    assert statuses == [202] * 50
    assert [raw["id"] for raw in owner.received] == [f"act-{n}" for n in range(50)]
    assert (sender.counts["handed_over"], receiver.counts["taken_over"]) == (50, 50)


async def test_an_activity_with_half_a_surrogate_pair_deep_inside_is_handed_over_as_it_came(
    links: tuple[PeerLinks, PeerLinks, Owner],
) -> None:
    """JSON can escape half a surrogate pair, which UTF-8 cannot carry; the request's check
    replaces them only so deep. Such an activity reaches its owner unchanged (before, the
    hand-over failed: a 500 on every retry)."""
    sender, _, owner = links
    nested: Any = "\ud800 lone"
    for _ in range(40):
        nested = {"inner": nested}
    raw = {**activity(1), "channelData": nested}

    assert await sender.forward(1, raw) == 202
    assert owner.received == [raw]


async def test_the_sender_answers_with_the_owners_status(
    links: tuple[PeerLinks, PeerLinks, Owner],
) -> None:
    sender, _, owner = links
    owner.status = 503  # the owner is draining
    assert await sender.forward(1, activity(1)) == 503


async def test_the_owner_of_a_conversation_is_never_asked_to_hand_it_to_itself(
    links: tuple[PeerLinks, PeerLinks, Owner],
) -> None:
    sender, receiver, _ = links
    keys = [f"msteams:conv-{n}" for n in range(40)]
    for key in keys:
        owner = sender.group.owner(key)
        assert (sender.owner(key), receiver.owner(key)) == ((None, 0) if owner == 0 else (1, None))


async def test_an_owner_that_is_not_listening_leaves_the_activity_to_the_sender(
    sockets: Path,
) -> None:
    sender = PeerLinks(WorkerGroup(sockets, 0, 2), Owner().accept, timeout_seconds=1.0)
    await sender.start()
    try:
        assert await sender.forward(1, activity(1)) is None
        # The owner is back (a replaced worker): the next activity reaches it.
        owner = Owner()
        receiver = PeerLinks(WorkerGroup(sockets, 1, 2), owner.accept)
        await receiver.start()
        assert await sender.forward(1, activity(2)) == 202
        assert [raw["id"] for raw in owner.received] == ["act-2"]

        # It goes away with an activity in hand; a new one takes its place.
        owner.delay = 0.5
        in_hand = asyncio.create_task(sender.forward(1, activity(3)))
        await asyncio.sleep(0.1)
        await receiver.close()
        assert await in_hand is None
        successor = Owner()
        receiver = PeerLinks(WorkerGroup(sockets, 1, 2), successor.accept)
        await receiver.start()
        assert await sender.forward(1, activity(4)) == 202
        assert [raw["id"] for raw in successor.received] == ["act-4"]
        await receiver.close()
    finally:
        await sender.close()


async def test_an_owner_that_does_not_answer_in_time_is_not_second_guessed(
    sockets: Path,
) -> None:
    """It may take the activity yet: run here too, a deletion or a rating would run twice. The
    channel is told to send it again instead, and the owner knows the resend by its id."""
    sender = PeerLinks(WorkerGroup(sockets, 0, 2), Owner().accept, timeout_seconds=0.2)
    slow = Owner(delay=1.0)
    receiver = PeerLinks(WorkerGroup(sockets, 1, 2), slow.accept)
    await receiver.start()
    try:
        assert await sender.forward(1, activity(1)) == NOT_ANSWERED_IN_TIME
        assert sender.counts == {"not_answered": 1}

        async def taken() -> bool:
            return bool(slow.received)

        assert await eventually(taken, within=10)
        assert [raw["id"] for raw in slow.received] == ["act-1"]
    finally:
        await sender.close()
        await receiver.close()


def test_the_sockets_directory_stays_short_under_a_long_tmpdir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    long_tmp = tmp_path / ("x" * 80)
    long_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
    directory = _socket_directory()
    try:
        assert len(str(directory / "worker-999.sock")) <= 107
        assert directory.stat().st_mode & 0o777 == 0o700
        assert list(long_tmp.iterdir()) == []  # the long one was not left behind
    finally:
        shutil.rmtree(directory)


async def test_a_worker_stopping_with_siblings_connected_logs_no_error(
    sockets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sender = PeerLinks(WorkerGroup(sockets, 0, 2), Owner().accept)
    receiver = PeerLinks(WorkerGroup(sockets, 1, 2), Owner().accept)
    await sender.start()
    await receiver.start()
    try:
        assert await sender.forward(1, activity(1)) == 202
        with caplog.at_level(logging.ERROR):
            await receiver.close()  # the sender's connection is still open
            await asyncio.sleep(0.05)  # the serving task's done callbacks run
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        await sender.close()


def test_the_channel_is_told_to_send_again_what_the_owner_did_not_answer_in_time() -> None:
    from bot.routes import _answer_of_sibling

    response = _answer_of_sibling(NOT_ANSWERED_IN_TIME)
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert json.loads(response.text or "")["error"]["code"] == "busy"
