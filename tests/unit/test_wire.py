"""bot/wire.py gives exactly what msrest gives: the same Activity (attribute by attribute), the
same wire dict (key order included) and the same exception, for every shape channels send and
for hostile ones; and the shapes real traffic has take the fast path, not msrest's."""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
from botbuilder.core import MessageFactory, TurnContext
from botbuilder.schema import (
    Activity,
    ActivityImportance,
    ActivityTypes,
    Attachment,
    AttachmentLayoutTypes,
    CardAction,
    CardImage,
    ChannelAccount,
    ConversationAccount,
    ConversationReference,
    DeliveryModes,
    Entity,
    HeroCard,
    InputHints,
    Mention,
    MessageReaction,
    ResourceResponse,
    SemanticAction,
    SuggestedActions,
    TextFormatTypes,
    TextHighlight,
)
from botbuilder.schema.teams import (
    MessagingExtensionResponse,
    MessagingExtensionResult,
    TaskModuleContinueResponse,
    TaskModuleResponse,
    TaskModuleTaskInfo,
    TeamsChannelAccount,
    TeamsChannelData,
    TenantInfo,
)
from isodate.tzinfo import FixedOffset
from msrest.serialization import Model

from bot import wire
from bot.entities import AIGeneratedLabel, StreamInfo
from bot.replies import reply_activity
from bot.streaming import StreamingReplyChannel
from bot.webchat_shapes import feedback_actions
from chat.service import Reply
from tests.support import message_activity
from tests.teams import activities as teams
from tests.unit.adapters import RecordingAdapter

SERVICE_URL = "https://smba.trafficmanager.net/amer/"
# shared/ sits beside the repository (here and in CI's fresh clone).
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
JST = datetime.timezone(datetime.timedelta(hours=9))
CET = datetime.timezone(datetime.timedelta(hours=1))


# --- comparison -------------------------------------------------------------------------------


def assert_same(ours: Any, theirs: Any, path: str = "activity") -> None:
    """Attribute-level equality: same types, same instance dicts (in the same order), datetimes
    with the same fields and the same kind of tzinfo."""
    assert type(ours) is type(theirs), f"{path}: {type(ours)} != {type(theirs)}"
    if isinstance(theirs, Model):
        assert list(vars(ours)) == list(vars(theirs)), path
        for name in vars(theirs):
            assert_same(vars(ours)[name], vars(theirs)[name], f"{path}.{name}")
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs), path
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}[{key!r}]")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, datetime.datetime):
        assert ours.replace(tzinfo=None) == theirs.replace(tzinfo=None), path
        assert type(ours.tzinfo) is type(theirs.tzinfo), path
        if theirs.tzinfo is not None:
            assert ours.utcoffset() == theirs.utcoffset(), path
            assert ours.tzname() == theirs.tzname(), path
    elif isinstance(theirs, float) and math.isnan(theirs):
        assert math.isnan(ours), path
    else:
        assert ours == theirs, path


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:  # the exception type is part of the contract
        return "error", type(exc)


def assert_inbound_like_msrest(raw: Any) -> Activity | None:
    """activity_from_wire(raw) is msrest's Activity().deserialize(raw), and writing it back is
    msrest's serialize() of msrest's activity."""
    before = copy.deepcopy(raw)
    theirs = outcome(lambda: Activity().deserialize(copy.deepcopy(raw)))
    ours = outcome(lambda: wire.activity_from_wire(raw))
    assert raw == before or raw != raw, "the raw activity is not changed"  # nan != nan
    assert ours[0] == theirs[0], (ours, theirs)
    if theirs[0] == "error":
        assert ours[1] is theirs[1]
        return None
    assert_same(ours[1], theirs[1])
    if theirs[1] is None:
        return None
    expected = outcome(lambda: theirs[1].serialize())
    written = outcome(lambda: wire.activity_to_wire(ours[1]))
    assert written[0] == expected[0]
    if expected[0] == "ok":
        assert json.dumps(written[1]) == json.dumps(expected[1])  # same keys in the same order
    else:
        assert written[1] is expected[1]
    result: Activity = ours[1]
    return result


def assert_outbound_like_msrest(model: Any) -> None:
    theirs = outcome(lambda: model.serialize())
    ours = outcome(lambda: wire.model_to_wire(model))
    assert ours[0] == theirs[0], (ours, theirs)
    if theirs[0] == "ok":
        assert json.dumps(ours[1], default=repr) == json.dumps(theirs[1], default=repr)
        assert_same(ours[1], theirs[1], "wire")
    else:
        assert ours[1] is theirs[1]


# --- samples ----------------------------------------------------------------------------------


def reference_json() -> list[Any]:
    """The JSON shapes quoted in shared/reference/*.md (inline code; `key: value` is read as an
    object, `"a"|"b"` alternatives take the first, placeholders such as `n` and `...` become a
    number and a string)."""
    found: list[Any] = []
    for path in sorted(REFERENCE.glob("*.md")):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        for match in re.finditer(r"`([^`]+)`", text):
            snippet = re.sub(r'("[^"]*")(\|"[^"]*")+', r"\1", match.group(1))
            snippet = re.sub(r":\s*n\b", ": 1", snippet)
            snippet = re.sub(r":\s*\.\.\.", ': "..."', snippet)
            labelled = re.fullmatch(r"\s*(\w+):\s*(.+)", snippet, re.DOTALL)
            if labelled:
                snippet = '{"%s": %s}' % labelled.groups()  # noqa: UP031
            try:
                value = json.loads(snippet)
            except ValueError:
                continue
            if isinstance(value, dict | list):
                found.append(value)
    return found


def reference_samples() -> list[dict[str, Any]]:
    """Each quoted shape where the activity can carry it: as an entity, channelData, value,
    attachment content, account properties, and merged into the activity itself."""
    samples = []
    for shape in reference_json():
        base = teams.personal_message(SERVICE_URL, "hello")
        if isinstance(shape, dict) and "type" in shape:
            base["entities"] = [*base["entities"], shape]
        base["channelData"] = shape
        base["value"] = shape
        base["attachments"] = [{"contentType": "application/json", "content": shape}]
        base["from"]["properties"] = shape
        samples.append(base)
        if isinstance(shape, dict):
            samples.append({**teams.personal_message(SERVICE_URL, "hi"), **shape})
    return samples


def channel_samples() -> list[dict[str, Any]]:
    """Activities as the channels send them (the shapes the other suites drive the bot with)."""
    return [
        message_activity(SERVICE_URL, "hello"),
        message_activity(SERVICE_URL, "こんにちは", channel_id="emulator", locale="ja-JP"),
        message_activity(SERVICE_URL, "x", attachments=[{"contentType": "image/png"}]),
        teams.personal_message(SERVICE_URL, "What is our travel policy?"),
        teams.personal_message(SERVICE_URL, "日本語で", locale="ja-JP"),
        teams.channel_message(SERVICE_URL, "<at>Contoso Assistant</at> summarize"),
        teams.group_message(SERVICE_URL, "<at>Contoso Assistant</at> hi", [teams.mention()]),
        teams.bot_installed_personal(SERVICE_URL),
        teams.team_update(SERVICE_URL, added=[teams.BOT_ID]),
        teams.team_update(SERVICE_URL, removed=[teams.BOT_ID]),
        teams.feedback_invoke(SERVICE_URL, "1763719200001", "like", "useful"),
        teams.feedback_invoke(SERVICE_URL, "1763719200001", "dislike"),
        {
            "type": "message",
            "id": "dl-1",
            "channelId": "directline",
            "serviceUrl": "https://directline.botframework.com/",
            "timestamp": "2026-11-21T10:00:00.1234567Z",  # Direct Line sends seven digits
            "localTimestamp": "2026-11-21T19:00:00.123+09:00",
            "conversation": {"id": "Hx9|abc"},
            "from": {"id": "dl_user", "name": "", "role": "user"},
            "recipient": {"id": "bot@x", "role": "bot"},
            "text": "hi",
            "textFormat": "plain",
            "channelData": {"clientActivityID": "1763719200000abc", "clientTimestamp": "x"},
            "entities": [{"type": "ClientCapabilities", "requiresBotState": True}],
        },
        {
            "type": "event",
            "id": "e-1",
            "channelId": "webchat",
            "serviceUrl": "http://127.0.0.1:3978/_directline",
            "timestamp": "2026-11-21T10:00:00.000Z",
            "conversation": {"id": "c-1", "tenantId": teams.TENANT},
            "from": {"id": "u-1", "name": "A", "role": "user", "aadObjectId": teams.USER_AAD},
            "recipient": {"id": "bot", "name": "Assistant"},
            "name": "webchat:activity-status/feedback",
            "entities": feedback_actions("act-7"),
            "channelData": {"tenant": {"id": teams.TENANT}},
            "_identityFromServer": True,
        },
    ]


def _hostile_base() -> dict[str, Any]:
    return teams.channel_message(SERVICE_URL, "<at>Contoso Assistant</at> hi")


def _with(**fields: Any) -> dict[str, Any]:
    raw = _hostile_base()
    raw.update(fields)
    return raw


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"level": i, "next": value} if i % 2 else [value, None]
    return value


UNKNOWN_EVERYWHERE: dict[str, Any] = {
    "type": "message",
    "id": "odd-1",
    "channelId": "msteams",
    "serviceUrl": SERVICE_URL,
    "brandNewField": {"nested": [1, 2, {"x": None}]},
    "additional_properties": {"sneaky": True},
    "from_property": "python name, not a wire key",
    "from": {"id": "29:u", "extra": 1, "properties": {"p": [1]}, "role": None},
    "recipient": {"id": "28:b", "name": None, "whatever": "x"},
    "conversation": {"id": "a:1", "tenantId": "t", "tenantID": "T", "isGroup": False, "z": []},
    "membersAdded": [{"id": "1", "k": "v"}, None],
    "membersRemoved": [],
    "reactionsAdded": [{"type": "like", "when": "now"}],
    "reactionsRemoved": [{"type": "heart"}],
    "suggestedActions": {
        "to": ["29:u", None],
        "actions": [
            {"type": "imBack", "title": "Yes", "value": {"any": ["json"]}, "extra": True},
            {"type": "openUrl", "value": "https://example.com", "channelData": [1, "two"]},
        ],
        "unknown": 5,
    },
    "attachments": [
        {"contentType": "text/html", "content": "<b>x</b>", "extra": {"a": 1}},
        {"contentType": "application/vnd.microsoft.card.adaptive", "content": {"body": []}},
        {"contentType": "x", "content": 7},
        {"contentType": "x", "content": 7.5},
        {"contentType": "x", "content": False},
        {"contentType": "x", "content": None},
        {"contentType": "x", "content": [None, [], {}, "", 0]},
        None,
    ],
    "entities": [
        teams.mention(),
        teams.client_info("ja-JP"),
        {"type": "streaminfo", "streamId": "s", "streamType": "final", "streamSequence": 3},
        {
            "type": "https://schema.org/Message",
            "@type": "Message",
            "@context": "https://schema.org",
            "@id": "",
            "additionalType": ["AIGeneratedContent"],
            "citation": [{"@type": "Claim", "position": 1, "appearance": {"name": "doc"}}],
        },
        {"no": "type at all"},
        None,
    ],
    "relatesTo": {
        "activityId": "r",
        "user": {"id": "u", "x": 1},
        "bot": {"id": "b"},
        "conversation": {"id": "c", "y": 2},
        "channelId": "msteams",
        "serviceUrl": SERVICE_URL,
        "more": None,
    },
    "textHighlights": [{"text": "hi", "occurrence": 2, "extra": "e"}, None],
    "semanticAction": {
        "id": "sa",
        "state": "start",
        "entities": {"e1": {"type": "t", "k": 1}, "e2": None},
        "other": 1,
    },
    "listenFor": ["yes", "no"],
    "historyDisclosed": True,
    "expiration": "2026-12-01T00:00:00Z",
    "importance": "high",
    "deliveryMode": "expectReplies",
    "callerId": "urn:botframework:azure",
}

HOSTILE: dict[str, Any] = {
    "unknown keys at every level": UNKNOWN_EVERYWHERE,
    "every field null": {key: None for key in UNKNOWN_EVERYWHERE},
    "empty object": {},
    "top level is a list": [1, 2],
    "top level is a string of JSON": json.dumps(teams.personal_message(SERVICE_URL, "hi")),
    "top level is a number": 5,
    "top level is null": None,
    "text is a number": _with(text=5),
    "text is an object": _with(text={"a": 1}),
    "text is a list": _with(text=["a"]),
    "id is a bool": _with(id=True),
    "type is a float": _with(type=1.5),
    "historyDisclosed as 'true'": _with(historyDisclosed="true"),
    "historyDisclosed as '0'": _with(historyDisclosed="0"),
    "historyDisclosed as 1": _with(historyDisclosed=1),
    "historyDisclosed as 'yes'": _with(historyDisclosed="yes"),
    "historyDisclosed as 2": _with(historyDisclosed=2),
    "occurrence as a string": _with(textHighlights=[{"text": "a", "occurrence": "3"}]),
    "occurrence as a float": _with(textHighlights=[{"text": "a", "occurrence": 3.7}]),
    "occurrence as a bool": _with(textHighlights=[{"text": "a", "occurrence": True}]),
    "occurrence as junk": _with(textHighlights=[{"text": "a", "occurrence": "x"}]),
    "occurrence is NaN": _with(textHighlights=[{"text": "a", "occurrence": float("nan")}]),
    "occurrence is huge": _with(textHighlights=[{"text": "a", "occurrence": 10**40}]),
    "isGroup as a string": _with(conversation={"id": "c", "isGroup": "True"}),
    "from is a string": _with(**{"from": "29:user"}),
    "from is a list": _with(**{"from": [{"id": "x"}]}),
    "from is a number": _with(**{"from": 3}),
    "conversation is empty": _with(conversation={}),
    "entities is an object": _with(entities={"type": "mention"}),
    "entities are strings": _with(entities=["mention"]),
    "attachments is an object": _with(attachments={"contentType": "x"}),
    "membersAdded holds numbers": _with(membersAdded=[1, 2]),
    "listenFor is a string": _with(listenFor="yes"),
    "listenFor holds numbers": _with(listenFor=[1, None, "x"]),
    "suggestedActions is a list": _with(suggestedActions=[{"type": "imBack"}]),
    "semanticAction entities as key/value pairs": _with(
        semanticAction={"entities": [{"key": "a", "value": {"type": "t"}}]}
    ),
    "semanticAction entities is a string": _with(semanticAction={"entities": "x"}),
    "channelData is a list": _with(channelData=[1, {"a": None}]),
    "channelData is a string": _with(channelData="tenant"),
    "channelData is a number": _with(channelData=12.5),
    "channelData is a bool": _with(channelData=True),
    "value of every JSON type": _with(
        value={"s": "x", "i": -1, "f": 1e308, "b": False, "n": None, "l": [[[]]], "d": {"": {}}}
    ),
    "value nested past the depth the fast path takes": _with(value=_nested(150)),
    "attachment content nested deep": _with(
        attachments=[{"contentType": "x", "content": _nested(60)}]
    ),
    "huge lists": _with(
        entities=[{"type": f"e{i}", "n": i} for i in range(3000)],
        channelData={"items": list(range(20000))},
        membersAdded=[{"id": str(i)} for i in range(2000)],
    ),
    "unicode everywhere": _with(
        text="😀 مرحبا שלום 日本語 \u0000 \u200f \ufffd \U0010ffff",
        locale="ja-JP",
        channelData={"ключ": "値", "😀": ["𝔘𝔫𝔦"]},
        **{"from": {"id": "29:ü", "name": "Zoë 🙂"}},
    ),
    "a lone surrogate": _with(text="\ud800 half a pair"),
    "key that is not an identifier": _with(**{"": 1, "a.b": 2, "@type": 3}),
    "timestamp naive": _with(timestamp="2026-11-21T10:00:00.5"),
    "timestamp with offset": _with(timestamp="2026-11-21T10:00:00.123456-05:30"),
    "timestamp lower case": _with(timestamp="2026-11-21t10:00:00z"),
    "timestamp basic offset": _with(timestamp="2026-11-21T10:00:00+0900"),
    "timestamp hour offset": _with(timestamp="2026-11-21T10:00:00+09"),
    "timestamp comma fraction": _with(timestamp="2026-11-21T10:00:00,25Z"),
    "timestamp nine digits": _with(timestamp="2026-11-21T10:00:00.123456789Z"),
    "timestamp without seconds": _with(timestamp="2026-11-21T10:00Z"),
    "timestamp date only": _with(timestamp="2026-11-21"),
    "timestamp not a date": _with(timestamp="yesterday"),
    "timestamp month 13": _with(timestamp="2026-13-01T00:00:00Z"),
    "timestamp leap second": _with(timestamp="2016-12-31T23:59:60Z"),
    "timestamp hour 24": _with(timestamp="2026-11-21T24:00:00Z"),
    "timestamp year 1 east of UTC": _with(timestamp="0001-01-01T00:00:00+01:00"),
    "timestamp year 9999 west of UTC": _with(timestamp="9999-12-31T23:59:59-01:00"),
    "timestamp year 0": _with(timestamp="0000-01-01T00:00:00Z"),
    "timestamp offset 24 hours": _with(timestamp="2026-11-21T10:00:00+24:00"),
    "timestamp minus zero": _with(timestamp="2026-11-21T10:00:00-00:00"),
    "timestamp with trailing text": _with(timestamp="2026-11-21T10:00:00Z and more"),
    "timestamp as a number": _with(timestamp=1763719200),
    "timestamp as an object": _with(timestamp={"at": "now"}),
    "expiration far away": _with(expiration="9998-01-01T00:00:00.000001+14:00"),
    "arabic-indic digits": _with(timestamp="٢٠٢٦-11-21T10:00:00Z"),
}


# --- inbound ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", channel_samples(), ids=lambda r: f"{r['channelId']}-{r['type']}")
def test_channel_activities_read_exactly_as_msrest_reads_them(raw: dict[str, Any]) -> None:
    assert assert_inbound_like_msrest(raw) is not None


@pytest.mark.parametrize("raw", channel_samples(), ids=lambda r: f"{r['channelId']}-{r['type']}")
def test_channel_activities_take_the_fast_path(raw: dict[str, Any]) -> None:
    activity = wire.fast_model_from_wire(Activity, raw)
    assert activity == Activity().deserialize(raw)


def test_reference_shapes_are_found_in_the_shared_reference() -> None:
    shapes = [json.dumps(s) for s in reference_json()]
    assert any('"AIGeneratedContent"' in s for s in shapes)
    assert any('"streaminfo"' in s for s in shapes)
    assert any('"actionName": "feedback"' in s for s in shapes)


@pytest.mark.parametrize("raw", reference_samples())
def test_reference_shapes_read_exactly_as_msrest_reads_them(raw: dict[str, Any]) -> None:
    assert assert_inbound_like_msrest(raw) is not None


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_activities_read_and_fail_exactly_as_msrest(raw: Any) -> None:
    assert_inbound_like_msrest(raw)


def test_unknown_keys_land_in_additional_properties_at_every_level() -> None:
    activity = assert_inbound_like_msrest(UNKNOWN_EVERYWHERE)
    assert activity is not None
    assert activity.additional_properties["brandNewField"] is UNKNOWN_EVERYWHERE["brandNewField"]
    assert activity.from_property.additional_properties == {"extra": 1}
    assert activity.conversation.additional_properties == {"tenantId": "t", "z": []}
    assert activity.conversation.tenant_id == "T"
    assert activity.entities[0].additional_properties["mentioned"]["id"] == teams.BOT_ID
    assert activity.semantic_action.entities["e1"].additional_properties == {"k": 1}
    assert activity.relates_to.user.additional_properties == {"x": 1}
    assert "brandNewField" not in wire.activity_to_wire(activity)


def test_object_fields_are_copies_and_unknown_values_are_the_raw_ones() -> None:
    raw = teams.channel_message(SERVICE_URL, "hi")
    raw["extra"] = {"shared": True}
    activity = wire.activity_from_wire(raw)
    activity.channel_data["tenant"]["id"] = "changed"
    assert raw["channelData"]["tenant"]["id"] == teams.TENANT
    assert activity.additional_properties["extra"] is raw["extra"]


def test_each_object_gets_its_own_additional_properties() -> None:
    first = wire.activity_from_wire(message_activity(SERVICE_URL, "a"))
    second = wire.activity_from_wire(message_activity(SERVICE_URL, "b"))
    first.additional_properties["x"] = 1
    first.from_property.additional_properties["y"] = 2
    assert second.additional_properties == {}
    assert second.from_property.additional_properties == {}


def test_teams_timestamps_keep_their_offset_as_isodate_does() -> None:
    activity = wire.activity_from_wire(teams.personal_message(SERVICE_URL, "hi"))
    assert activity.timestamp == datetime.datetime(
        2026, 11, 21, 10, 0, 0, 123000, tzinfo=datetime.UTC
    )
    assert isinstance(activity.local_timestamp.tzinfo, FixedOffset)
    assert activity.local_timestamp.utcoffset() == datetime.timedelta(hours=9)
    assert activity.local_timestamp.tzname() == "+09:00"


def _random_timestamp(rng: random.Random) -> str:
    """Half well-formed (random instants, fractions and offsets), half with odd parts."""
    if rng.random() < 0.5:
        when = datetime.datetime(2000, 1, 1) + datetime.timedelta(
            seconds=rng.randint(0, 40 * 365 * 86400)
        )
        digits = rng.choice([0, 1, 2, 3, 6, 7, 9])
        fraction = "." + "".join(rng.choice("0123456789") for _ in range(digits)) if digits else ""
        hours, minutes = rng.randint(0, 23), rng.choice([0, 30, 45, 59])
        zone = rng.choice(["Z", "", f"{rng.choice('+-')}{hours:02}:{minutes:02}"])
        return when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone

    def pick(*choices: str) -> str:
        return rng.choice(choices)

    year = pick("2026", "0001", "9999", "1970", "0000", "2024")
    date = f"{year}-{pick('01', '02', '12', '13', '00')}-{pick('01', '28', '29', '31', '32')}"
    time = f"{pick('00', '09', '23', '24')}:{pick('00', '59', '60')}:{pick('00', '30', '59', '60')}"
    fraction = pick(
        "", ".", ".0", ".5", ".123", ".000001", ".1234567", ".9999999", ".00000009", ",5", ".999999"
    )
    zone = pick("", "Z", "z", "+00:00", "-00:00", "+09:00", "-05:30", "+23:59", "+24:00", "+0900")
    return date + "T" + time + fraction + zone


def test_timestamps_of_every_form_parse_as_msrest_parses_them() -> None:
    rng = random.Random(20261121)  # fixed: the same strings every run
    raw = message_activity(SERVICE_URL, "t")
    for _ in range(1500):
        raw["timestamp"] = _random_timestamp(rng)
        raw["localTimestamp"] = _random_timestamp(rng)
        assert_inbound_like_msrest(raw)


# --- outbound ---------------------------------------------------------------------------------


def _inbound(raw: dict[str, Any]) -> Activity:
    return Activity().deserialize(raw)


def addressed(activity: Activity, inbound: dict[str, Any]) -> Activity:
    """As TurnContext.send_activity addresses a reply (to the inbound activity's conversation)."""
    reference = TurnContext.get_conversation_reference(_inbound(inbound))
    return TurnContext.apply_conversation_reference(activity, reference)


async def _streamed(inbound: dict[str, Any]) -> list[Activity]:
    adapter = RecordingAdapter()
    channel = StreamingReplyChannel(TurnContext(adapter, _inbound(inbound)), min_interval=0.0)
    await channel.informative("Thinking...")
    await channel.update("Partial")
    await channel.update("Partial answer")
    await channel.final(Reply("The whole answer.", ai_generated=True))
    return adapter.sent


def outbound_samples() -> dict[str, Any]:
    teams_raw = teams.personal_message(SERVICE_URL, "hi")
    hero = HeroCard(
        title="Card",
        images=[CardImage(url="https://example.com/a.png", alt="a")],
        buttons=[CardAction(type="openUrl", title="Open", value="https://example.com")],
    )
    return {
        "reply": addressed(reply_activity(Reply("**Answer**")), teams_raw),
        "AI reply": addressed(reply_activity(Reply("Answer", ai_generated=True)), teams_raw),
        "notice": addressed(reply_activity(Reply("Filtered.", is_notice=True)), teams_raw),
        "reply, not addressed": reply_activity(Reply("Answer", ai_generated=True)),
        "typing": addressed(Activity(type=ActivityTypes.typing), teams_raw),
        "welcome": addressed(
            Activity(type=ActivityTypes.message, text="Welcome", text_format="markdown"),
            teams.bot_installed_personal(SERVICE_URL),
        ),
        "dialog text": addressed(MessageFactory.text("/help: commands"), teams_raw),
        "consent buttons": addressed(
            MessageFactory.suggested_actions(
                [
                    CardAction(type="imBack", title="Accept", value="Accept"),
                    CardAction(type="imBack", title="同意しない", value="同意しない"),
                ],
                text="Terms of use",
            ),
            teams_raw,
        ),
        "AI label with citations and thumbs": Activity(
            type="message",
            entities=[
                _label_with_everything(),
                StreamInfo("final", stream_id="s-1"),
                Mention(mentioned=ChannelAccount(id="29:u", name="A"), text="<at>A</at>"),
                Entity(type="clientInfo"),
            ],
            channel_data={"feedbackLoopEnabled": True, "streamType": "final"},
        ),
        "enums in str fields": Activity(
            type=ActivityTypes.message,
            text_format=TextFormatTypes.markdown,
            attachment_layout=AttachmentLayoutTypes.carousel,
            input_hint=InputHints.accepting_input,
            delivery_mode=DeliveryModes.normal,
            importance=ActivityImportance.high,
            from_property=ChannelAccount(id="b", role="bot"),
        ),
        "every model field": Activity(
            type="message",
            members_added=[ChannelAccount(id="1"), None],
            reactions_added=[MessageReaction(type="like")],
            suggested_actions=SuggestedActions(to=["u", None], actions=[CardAction(type="x")]),
            attachments=[
                Attachment(content_type="application/vnd.microsoft.card.hero", content=hero),
                Attachment(content_type="text/plain", content="x", name="n"),
                Attachment(content_type="x", content=[hero, None, {"k": hero}]),
            ],
            relates_to=ConversationReference(
                activity_id="a",
                user=ChannelAccount(id="u"),
                conversation=ConversationAccount(id="c"),
            ),
            text_highlights=[TextHighlight(text="t", occurrence=1)],
            semantic_action=SemanticAction(id="s", entities={"e": Entity(type="t"), "n": None}),
            listen_for=("yes", "no"),
            history_disclosed=False,
            value={"nested": [1, 2.5, True, None, {"deep": "x"}]},
        ),
        "aware timestamps": Activity(
            type="message",
            timestamp=datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC),
            local_timestamp=datetime.datetime(2026, 11, 21, 19, 0, 0, 120000, tzinfo=JST),
            expiration=datetime.datetime(2026, 12, 1, 0, 0, 0, 100, tzinfo=FixedOffset(-5, -30)),
        ),
        "naive timestamp": Activity(type="message", timestamp=datetime.datetime(2026, 1, 1)),
        "timestamp as a string": Activity(type="message", timestamp="2026-11-21T10:00:00+09:00"),
        "timestamp out of range in UTC": Activity(
            type="message",
            timestamp=datetime.datetime(1, 1, 1, tzinfo=CET),
        ),
        "timestamp that is not a date": Activity(type="message", timestamp=12),
        "standard types in value": Activity(
            type="message",
            value={
                "when": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
                "day": datetime.date(2026, 1, 2),
                "clock": datetime.time(10, 20, 30, 40),
                "span": datetime.timedelta(hours=1, seconds=3),
                "price": decimal.Decimal("1.25"),
                1: "an int key",
                ActivityTypes.message: "an enum key",
            },
        ),
        "types msrest turns into text": Activity(
            type="message", value={"t": (1, 2), "s": {3}, "o": object.__new__(_Opaque)}
        ),
        "an enum inside channelData": Activity(
            type="message", channel_data={"kind": ActivityTypes.message, "mine": _Colour.RED}
        ),
        "str field holding a number": Activity(type="message", text=42, id=3.5),
        "int field holding a string": Activity(
            type="message", text_highlights=[TextHighlight(text="t", occurrence="7")]
        ),
        "int field holding junk": Activity(
            type="message", text_highlights=[TextHighlight(text="t", occurrence="seven")]
        ),
        "bool field holding a string": Activity(type="message", history_disclosed="no"),
        "plain dict as an entity": Activity(type="message", entities=[{"type": "mention"}]),
        "plain dict as an account": Activity(type="message", from_property={"id": "x"}),
        "string as an account": Activity(type="message", from_property="29:user"),
        "string as a list": Activity(type="message", listen_for="yes"),
        "set as a list": Activity(type="message", listen_for={"a"}),
        "additional properties are not sent": _with_additional_properties(),
        "a missing attribute": _without_text(),
        "an activity in value": Activity(type="message", value=Activity(type="typing", id="x")),
        "a model deeper than the fast path goes": Activity(type="message", value=_nested(150)),
        "teams channel data": Activity(
            type="message",
            channel_data=TeamsChannelData(tenant=TenantInfo(id=teams.TENANT), event_type="x"),
            from_property=TeamsChannelAccount(id="29:u", user_principal_name="a@b.c"),
        ),
    }


class _Opaque:
    def __str__(self) -> str:
        return "opaque"


class _Colour(enum.Enum):
    RED = "red"


def _label_with_everything() -> AIGeneratedLabel:
    label = AIGeneratedLabel(citation=[{"@type": "Claim", "position": 1}])
    label.potential_action = feedback_actions("s-1")
    return label


def _with_additional_properties() -> Activity:
    activity = Activity(type="message", text="x", from_property=ChannelAccount(id="u"))
    activity.additional_properties = {"secret": "not sent"}
    activity.from_property.additional_properties = {"aadObjectId": "dropped as msrest does"}
    return activity


def _without_text() -> Activity:
    activity = Activity(type="message")
    del activity.text
    return activity


OUTBOUND = outbound_samples()


@pytest.mark.parametrize("activity", OUTBOUND.values(), ids=OUTBOUND.keys())
def test_outbound_activities_serialize_and_fail_exactly_as_msrest(activity: Activity) -> None:
    assert_outbound_like_msrest(activity)


@pytest.mark.parametrize(
    "name",
    [
        "reply",
        "AI reply",
        "notice",
        "typing",
        "welcome",
        "dialog text",
        "consent buttons",
        "AI label with citations and thumbs",
        "enums in str fields",
        "every model field",
        "aware timestamps",
        "standard types in value",
        "teams channel data",
    ],
)
def test_what_the_bot_sends_takes_the_fast_path(name: str) -> None:
    activity = OUTBOUND[name]
    assert wire.fast_model_to_wire(activity) == activity.serialize()


@pytest.mark.parametrize("channel_id", ["msteams", "directline", "webchat"])
async def test_streamed_replies_serialize_exactly_as_msrest(channel_id: str) -> None:
    inbound = teams.personal_message(SERVICE_URL, "stream please")
    inbound["channelId"] = channel_id
    sent = await _streamed(inbound)
    assert [a.type for a in sent] == ["typing", "typing", "typing", "message"]
    for activity in sent:
        assert_outbound_like_msrest(activity)
        assert wire.fast_model_to_wire(activity) == activity.serialize()
    final = wire.activity_to_wire(sent[-1])
    assert final["entities"][0] == {
        "type": "streaminfo",
        "streamId": "sent-1",
        "streamType": "final",
    }


def test_outbound_timestamps_are_written_in_utc_as_msrest_writes_them() -> None:
    rng = random.Random(7)
    zones = [
        datetime.UTC,
        FixedOffset(9, 0, "+09:00"),
        FixedOffset(-5, -30, "-05:30"),
        datetime.timezone(datetime.timedelta(hours=-23, minutes=-59)),
        datetime.timezone(datetime.timedelta(seconds=3601)),
    ]
    for _ in range(500):
        when = datetime.datetime(
            rng.randint(1, 9999),
            rng.randint(1, 12),
            rng.randint(1, 28),
            rng.randint(0, 23),
            rng.randint(0, 59),
            rng.randint(0, 59),
            rng.choice([0, 1, 10, 100, 120000, 123456, 999999, rng.randint(0, 999999)]),
            tzinfo=rng.choice(zones),
        )
        assert_outbound_like_msrest(Activity(type="message", timestamp=when))


def test_invoke_response_models_serialize_exactly_as_msrest() -> None:
    bodies = [
        TaskModuleResponse(
            task=TaskModuleContinueResponse(
                value=TaskModuleTaskInfo(title="t", height=200, width="medium", url="https://x")
            )
        ),
        MessagingExtensionResponse(
            compose_extension=MessagingExtensionResult(attachment_layout="list", type="result")
        ),
        ResourceResponse(id="r"),
    ]
    for body in bodies:
        assert_outbound_like_msrest(body)


def test_models_msrest_builds_from_other_modules_read_exactly_as_msrest() -> None:
    raw = {
        "id": "29:u",
        "name": "A",
        "userPrincipalName": "a@b.c",
        "tenantId": teams.TENANT,
        "extra": [1],
    }
    ours = wire.model_from_wire(TeamsChannelAccount, raw)
    assert_same(ours, TeamsChannelAccount.deserialize(raw))
    data = {"tenant": {"id": "t"}, "eventType": "teamMemberAdded", "team": {"id": "x", "y": 1}}
    assert_same(wire.model_from_wire(TeamsChannelData, data), TeamsChannelData.deserialize(data))
