"""Microsoft Teams specifics: conversation kinds, @mention removal, install keys and the welcome.

botbuilder's schema drops most entity fields (`mentioned` included) and `TurnContext`'s
`remove_recipient_mention` uses the bot's display name as a regex, so mentions are read from the
raw activity JSON and removed as literal text.
Facts: shared/reference/bot-framework-teams-directline.md.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from botbuilder.schema import Activity, ChannelAccount

from bot.entities import Mention
from chat.texts import time_zone
from chat.written import JAPANESE_LETTERS

TEAMS_CHANNEL = "msteams"
PERSONAL = "personal"

# Spaces and tabs (and Teams' &nbsp;, and the full-width space a Japanese keyboard types) next
# to a removed mention; newlines are kept.
_BLANK_CHARS = " \t\u00a0\u3000"
_BLANKS = f"[{_BLANK_CHARS}]*"
# Punctuation that belongs to the word before a removed mention ("hi <at>Bot</at>, please" is
# "hi, please"). ASCII marks only when a blank, another mark or the end follows: ".NET" starts
# a word.
_ATTACHED_ASCII = frozenset(",.;:!?)]}")
_ATTACHED_CJK = frozenset("、。，．：；！？）］｝」』")
# Scripts written without spaces between words: a mention removed between two of their
# characters leaves no space ("これを<at>Bot</at>要約して" is "これを要約して"). Hangul is
# written with spaces, so it is not here.
_UNSPACED_SCRIPT = re.compile(f"[{JAPANESE_LETTERS}]")
# What may follow a name used to address someone at the start of a message.
_ADDRESS_SEPARATORS = frozenset(",:、，：")
_AT_TAG = re.compile(r"<at[^>]*>(.*?)</at>", re.IGNORECASE | re.DOTALL)
_LEADING_BLANK_LINES = re.compile(rf"\A(?:{_BLANKS}\n)+")
# A Japanese honorific that addresses the bot ("<at>Bot</at>さん、同意します"). Only before a
# separator, a blank or the end: "さんかく", "ちゃんと" and "様子" start words of their own.
_HONORIFIC = re.compile(r"\A(?:さん|さま|様|殿|くん|君|ちゃん)(?=[,:、，： \t\u00a0\u3000\n]|\Z)")


@dataclass(frozen=True)
class BotProfile:
    """How the assistant introduces itself (the welcome message)."""

    assistant_name: str
    organization_name: str


def is_teams(activity: Activity) -> bool:
    return bool(activity.channel_id == TEAMS_CHANNEL)


def conversation_type(activity: Activity) -> str:
    conversation = activity.conversation
    kind = getattr(conversation, "conversation_type", None) if conversation else None
    if kind:
        return str(kind)
    # Older payloads only say `isGroup`.
    return "groupChat" if conversation is not None and conversation.is_group else PERSONAL


def is_teams_personal(activity: Activity) -> bool:
    return is_teams(activity) and conversation_type(activity) == PERSONAL


def is_teams_shared(activity: Activity) -> bool:
    """A group chat or a channel thread: the bot answers only when @mentioned."""
    return is_teams(activity) and conversation_type(activity) != PERSONAL


def address_to_sender(outgoing: Activity, incoming: Activity) -> None:
    """In a Teams group chat everyone sees every message, in no thread: a notice the bot sends
    in answer to someone (the usage-policy question, a limit, an error) starts by @mentioning
    them, so that they know it is theirs and the others that it is not. Answers (labelled as
    AI-generated) follow the question they answer and are left as they are; channels thread
    the bot's replies under the message they answer."""
    sender = incoming.from_property
    if (
        not is_teams(incoming)
        or conversation_type(incoming) != "groupChat"
        or incoming.type != "message"
        or outgoing.type != "message"
        or not outgoing.text
        # A plain-text notice quotes the user's words: no markup of ours goes in front.
        or outgoing.text_format == "plain"
        or sender is None
        or not sender.id
        # Without a name the mention would show the sender's raw channel id to everyone.
        or not (sender.name or "").strip()
        or any(
            getattr(entity, "type", None) in ("mention", "https://schema.org/Message")
            for entity in outgoing.entities or []
        )
    ):
        return
    name = str(sender.name).strip()
    tag = f"<at>{html.escape(name, quote=False)}</at>"
    outgoing.text = f"{tag} {outgoing.text}"
    outgoing.entities = [*(outgoing.entities or []), Mention(tag, sender.id, name)]


def _mention_entities(raw: dict[str, Any]) -> list[dict[str, Any]]:
    entities = raw.get("entities")
    if not isinstance(entities, list):
        return []
    return [
        e
        for e in entities
        if isinstance(e, dict) and e.get("type") == "mention" and isinstance(e.get("text"), str)
    ]


def _mentioned_id(entity: dict[str, Any]) -> str:
    mentioned = entity.get("mentioned")
    if isinstance(mentioned, dict) and isinstance(mentioned.get("id"), str):
        return str(mentioned["id"])
    return ""


def _bot_ids(raw: dict[str, Any]) -> set[str]:
    recipient = raw.get("recipient")
    bot_id = recipient.get("id") if isinstance(recipient, dict) else None
    if not isinstance(bot_id, str) or not bot_id:
        return set()
    # Teams uses `28:<app id>`; some clients mention the bare app id.
    return {bot_id, bot_id.removeprefix("28:")}


def _joiner(match: re.Match[str]) -> str:
    """What replaces a removed mention: one space, or nothing before punctuation that attaches
    to the word before it or between two characters of a script written without spaces."""
    rest = match.string[match.end() : match.end() + 2]
    if rest[:1] in _ATTACHED_CJK:
        return ""
    before = match.string[match.start() - 1 : match.start()]
    if _UNSPACED_SCRIPT.match(before) and _UNSPACED_SCRIPT.match(rest[:1]):
        return ""
    if rest[:1] in _ATTACHED_ASCII and (
        len(rest) == 1 or rest[1].isspace() or rest[1] in _ATTACHED_ASCII
    ):
        return ""
    return " "


def _remove(text: str, mention: str) -> tuple[str, int, bool]:
    """Remove every occurrence of `mention` (literal text, never a pattern), joining the text on
    either side with one space (none before punctuation). Falls back to the `<at>` tags with the
    same inner name when the entity's text is not found verbatim (clients differ in spacing, case
    and HTML escapes). Also says whether a removed mention started the text."""
    inner = _AT_TAG.fullmatch(mention.strip())
    if inner is None:
        # An entity whose text has no tags ("Bot", as some clients send it) still names the
        # tagged mention in the message: removed whole, or its tags would stay ("<at> </at>").
        result, count, starts = _remove_tags_named(text, {_name(mention)})
        if count:
            return result, count, starts
    result, count, starts = _remove_literal(text, mention)
    if count == 0 and inner is not None:
        result, count, starts = _remove_tags_named(text, {_name(inner.group(1))})
    return result, count, starts


def _remove_tags_named(text: str, names: set[str]) -> tuple[str, int, bool]:
    """Remove the `<at>` tags whose inner text is one of `names` (as `_name` gives them)."""
    count, starts = 0, False
    tags = [m.group(0) for m in _AT_TAG.finditer(text) if _name(m.group(1)) in names]
    for tag in dict.fromkeys(tags):
        text, removed, at_start = _remove_literal(text, tag)
        count, starts = count + removed, starts or at_start
    return text, count, starts


def _remove_literal(text: str, mention: str) -> tuple[str, int, bool]:
    pattern = re.compile(_BLANKS + re.escape(mention) + _BLANKS)
    first = pattern.search(text)
    result, count = pattern.subn(_joiner, text)
    return result, count, first is not None and first.start() == 0


def _untag_named(text: str, name: str) -> str:
    """`text` with the `<at>` tags whose inner text is `name` (as `_name` gives it) unwrapped."""
    return _AT_TAG.sub(
        lambda tag: tag.group(1) if _name(tag.group(1)) == name else tag.group(0), text
    )


def _name(text: str) -> str:
    """A mentioned name as compared: the entity's text and the message text may escape HTML
    differently ("R&amp;D" and "R&D"), and clients differ in case and spacing."""
    return " ".join(html.unescape(text).split()).casefold()


def _bot_names(entity: dict[str, Any], raw: dict[str, Any]) -> set[str]:
    names = set()
    for holder in (entity.get("mentioned"), raw.get("recipient")):
        name = holder.get("name") if isinstance(holder, dict) else None
        if isinstance(name, str) and name.strip():
            names.add(_name(name))
    return names


def remove_bot_mentions(text: str, raw: dict[str, Any]) -> tuple[str, bool]:
    """The message text without the bot's @mentions, and whether the bot was mentioned.

    Mentions of other people stay in the text as their plain names ("ask <at>Bob</at>" becomes
    "ask Bob"), so the model reads the sentence as the user wrote it. Line breaks come back as
    line feeds, whichever the client sent (CRLF, CR).
    """
    # Teams often wraps group chat and channel text in CRLF ("\r\n<at>Bot</at>, I accept\r\n"):
    # a "\r" would be neither blank nor a line break below, and would hide the separator.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    bot_ids = _bot_ids(raw)
    mentioned = False
    # Whether the text starts with the bot's mention: only then may an honorific follow it.
    addressed = False
    # Line by line: only a line the bot's mention was removed from loses its outer blanks, so
    # pasted code keeps its indentation.
    lines = text.split("\n")
    for entity in _mention_entities(raw):
        mention = str(entity["text"])
        if not mention:
            continue
        if _mentioned_id(entity) in bot_ids:
            mentioned = True
            removals = [_remove(line, mention) for line in lines]
            if not any(count for _, count, _ in removals):
                # The entity's text matches no tag (a client escaped or spelled it apart): the
                # bot's name in a tag is still the bot's mention, and must not reach the model.
                names = _bot_names(entity, raw)
                removals = [_remove_tags_named(line, names) for line in lines]
            for index, (without, count, at_start) in enumerate(removals):
                if count:
                    addressed = addressed or (at_start and not "".join(lines[:index]).strip())
                    lines[index] = without.strip(_BLANK_CHARS)
        else:
            inner = _AT_TAG.fullmatch(mention.strip())
            if inner is not None:
                lines = [line.replace(mention, inner.group(1)) for line in lines]
            else:
                # Untagged entity text: the tags of that name in the message give way to it.
                lines = [_untag_named(line, _name(mention)) for line in lines]
    text = _LEADING_BLANK_LINES.sub("", "\n".join(line.rstrip(_BLANK_CHARS) for line in lines))
    text = text.rstrip()
    honorific = _HONORIFIC.match(text) if addressed else None
    if honorific is not None:
        # "<at>Bot</at>さん、同意します": the honorific belonged to the bot's name, which is gone.
        text = _LEADING_BLANK_LINES.sub("", text[honorific.end() :].lstrip(_BLANK_CHARS))
    if mentioned and _addressed_with(text):
        # "<at>Bot</at>, I accept": the comma addressed the bot, which is gone; the answer is
        # what follows. (Only the bot's mention leaves a separator first: others keep a name.)
        text = text[1:].lstrip(_BLANK_CHARS)
    return text, mentioned


def _addressed_with(text: str) -> bool:
    """Whether `text` starts with the separator that addressed a mention: a Japanese 、 or a
    full-width one whatever follows, an ASCII comma or colon only before a blank or the end
    (`::1 is localhost?` and `:) thanks` are the user's own text)."""
    first, after = text[:1], text[1:2]
    if first not in _ADDRESS_SEPARATORS:
        return False
    return not first.isascii() or not after or after.isspace()


def install_key(activity: Activity, raw: dict[str, Any]) -> str:
    """One key per installation: the team for a team install, else the conversation (a personal
    chat's id is stable for one user and the bot; a group chat's for that chat)."""
    channel_data = raw.get("channelData")
    if isinstance(channel_data, dict):
        team = channel_data.get("team")
        if isinstance(team, dict) and isinstance(team.get("id"), str):
            return f"{activity.channel_id}:team:{team['id']}"
    conversation_id = activity.conversation.id if activity.conversation else ""
    return f"{activity.channel_id}:{conversation_id}"


def bot_was_added(activity: Activity) -> bool:
    return _bot_among(activity, activity.members_added)


def bot_was_removed(activity: Activity) -> bool:
    return _bot_among(activity, activity.members_removed)


def _bot_among(activity: Activity, members: list[ChannelAccount | None] | None) -> bool:
    # A member list may hold nulls (the wire reads them as None): they are no one.
    bot_id = activity.recipient.id if activity.recipient else None
    return bool(bot_id) and any(
        isinstance(m, ChannelAccount) and m.id == bot_id for m in members or []
    )


def activity_locale(activity: Activity, raw: dict[str, Any]) -> str:
    """The activity's locale; Teams' conversation updates often carry it only in clientInfo."""
    if activity.locale:
        return str(activity.locale)
    entities = raw.get("entities")
    for entity in entities if isinstance(entities, list) else []:
        if (
            isinstance(entity, dict)
            and entity.get("type") == "clientInfo"
            and isinstance(entity.get("locale"), str)
        ):
            return str(entity["locale"])
    return "en-US"


def activity_time_zone(raw: dict[str, Any]) -> str:
    """The sender's IANA time zone when the activity gives a known one, else "": Web Chat
    sends `localTimezone`, Teams the clientInfo entity's `timezone` (and sometimes both)."""
    given = [raw.get("localTimezone")]
    entities = raw.get("entities")
    given += [
        entity.get("timezone")
        for entity in (entities if isinstance(entities, list) else [])
        if isinstance(entity, dict) and entity.get("type") == "clientInfo"
    ]
    return next((name for name in given if isinstance(name, str) and time_zone(name)), "")
